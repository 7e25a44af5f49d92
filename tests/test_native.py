"""projector.native: a compiled module older than its source is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from projector import native


def test_a_compiled_module_older_than_its_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "pkg" / "fold.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    lib = source.with_name("fold.cpython-311-x86_64-linux-gnu.so")
    lib.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(lib, (2_000, 2_000))
    native.check(source.parent)  # compiled after the source was saved
    os.utime(source, (3_000, 3_000))
    with pytest.raises(ImportError, match=r"pkg/fold\.cpython.*older than pkg/fold\.py.*make native"):
        native.check(source.parent)
    native.clean(source.parent)
    assert not lib.exists() and source.exists()
    native.check(source.parent)  # nothing compiled: nothing to refuse

