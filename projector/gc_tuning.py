"""Cyclic garbage collector tuning for the projector's hot loop (process-wide)."""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 200_000


def tune_gc() -> None:
    """Fewer cyclic-GC passes, and none over what start-up made.

    Every batch allocates hundreds of thousands of short-lived containers
    (records, events, rows), while the row cache and the aligner keep tens of
    thousands alive. With Python's default thresholds (700, 10, 10) the
    collector ran ~2,800 times per 200,000 events, 18 of them full passes over
    every live object: a third of the engine's time in the benchmark. Cycles
    are rare here (reference counting frees nearly everything), so collecting
    them a few times a minute is enough; bench/engine_worker.py measures it.
    A young-generation pass walks everything allocated since the last one that
    is still alive (the aligner's records): at 50,000 each pass took ~40 ms, 15
    per 200,000 events; at 200,000, one pass.
    """
    gc.freeze()  # modules, settings, compiled decoders: never garbage
    gc.set_threshold(GEN0_THRESHOLD, 20, 100)
