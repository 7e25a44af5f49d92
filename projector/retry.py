"""Capped exponential backoff with jitter, for transient failures."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    """Delays: random in [0, min(cap, base * 2**attempt)]. ``reset`` after a success."""

    base_s: float = 0.1
    cap_s: float = 10.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
