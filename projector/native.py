"""The hot pure modules, compiled with mypyc when a C compiler is at hand.

The projector's Python work is spread thin (decoding, folding, encoding rows):
no single function to rewrite. mypyc compiles the typed modules that fold and
encode a batch to C extensions, which the import system prefers to the
``.py`` beside them: the same code, ~1.5x faster in the folds (``make bench``
states the figures). ``make`` builds them before ``dev``, ``test`` and
``bench`` (``python projector/native.py``, a script: a stale module cannot stop
its own rebuild); without a compiler the modules simply run as Python, with the
same results.

A compiled module older than its source would run old code, so importing
``projector`` refuses it (:func:`check`).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = (
    "projector/align.py",
    "projector/batch.py",
    "projector/contracts/checks.py",
    "projector/contracts/decoder.py",
    "projector/contracts/finishing.py",
    "projector/projections/_rows.py",
    "projector/projections/customer_summary.py",
    "projector/projections/daily_sales.py",
    "projector/projections/order_store.py",
    "projector/projections/order_summary.py",
    "projector/projections/orders_plan.py",
    "projector/projections/product_sales.py",
    "projector/projections/row_cache.py",
)
# The shared library of the group, inside the package (an editable install finds
# only what is under projector/).
GROUP = "projector.native"
LOG = ROOT / "build" / "native.log"


def check(package: Path = ROOT / "projector") -> None:
    """Raise ImportError if a compiled module under ``package`` is older than its source."""
    for lib in package.rglob("*.cpython-*.so"):
        source = lib.with_name(lib.name.split(".", 1)[0] + ".py")
        if source.exists() and lib.stat().st_mtime < source.stat().st_mtime:
            raise ImportError(
                f"{lib.relative_to(package.parent)} is older than {source.relative_to(package.parent)}: "
                "it would run the old code. Run `make native` to compile it again, or "
                "`make clean-native` to run the modules as Python."
            )


def clean(package: Path = ROOT / "projector") -> None:
    """Remove every compiled module under ``package`` (a module dropped from the list too)."""
    for lib in package.rglob("*.cpython-*.so"):
        lib.unlink()


def build() -> bool:
    """Compile :data:`MODULES` in place; False (and nothing compiled) if it failed."""
    clean()
    LOG.parent.mkdir(exist_ok=True)
    out = io.StringIO()
    try:
        from mypyc.build import mypycify  # the dev extra brings mypy, mypyc with it
        from setuptools import setup  # type: ignore[import-untyped]

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            cwd = os.getcwd()
            os.chdir(ROOT)
            try:
                setup(name="projector-native", ext_modules=mypycify(list(MODULES), group_name=GROUP),
                      script_args=["build_ext", "--inplace", "--build-temp", "build/native"])
            finally:
                os.chdir(cwd)
    except (Exception, SystemExit) as exc:  # a missing compiler, a type error: run as Python
        LOG.write_text(f"{out.getvalue()}\n{exc!r}\n")
        clean()
        return False
    LOG.write_text(out.getvalue())
    # setuptools copies a module's shim from build/ with its old time when only the
    # group's library changed: dated now, so that check() compares with this build.
    for lib in (ROOT / "projector").rglob("*.cpython-*.so"):
        os.utime(lib)
    return True


def main() -> None:
    if sys.argv[1:] == ["--clean"]:
        clean()
        print("compiled modules removed: they run as Python")
        return
    if build():
        print(f"compiled {len(MODULES)} modules with mypyc (projector.native)")
    else:
        print(f"note: could not compile the hot modules (no C compiler?); they run as Python, "
              f"correct but slower. Details: {LOG.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
