"""`make bench`: every benchmark in turn; each prints its figures and writes bench/results/.

    python bench/run.py              # all
    python bench/run.py decode api   # some: decode, engine, api, subscriptions
    ARGS="--quick" make bench        # smaller data sets (a smoke run, not the stated figures)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES = {
    "decode": (["bench_decode.py"], ["bench_decode.py"]),
    "engine": (["bench_engine.py"], ["bench_engine.py", "--events", "100000",
                                     "--naive-sample", "3000"]),
    "api": (["bench_api.py", "--fill", "250000"], ["bench_api.py", "--fill", "20000",
                                                  "--duration", "3"]),
    "subscriptions": (["bench_subscriptions.py"], ["bench_subscriptions.py", "--quick"]),
}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        full, small = BENCHES[name]
        args = small if quick else full
        script = HERE / args[0]
        if not script.exists():
            print(f"== {name}: {script.name} not present, skipped", flush=True)
            continue
        print(f"== {name}: python bench/{' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, str(script), *args[1:]], check=False)
        if done.returncode != 0:
            failed.append(name)
    print(f"\nresults in {HERE / 'results'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
