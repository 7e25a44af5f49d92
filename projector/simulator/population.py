"""Who buys what: customers and a priced SKU catalogue, drawn Zipf-like. Pure."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

T = TypeVar("T")


class Weighted(Generic[T]):
    """Draws one of ``choices`` ((value, weight) pairs) with probability proportional to weight.

    Cumulative weights are computed once; ``random.choices`` recomputes them
    on every call, which dominated the simulator's profile.
    """

    def __init__(self, choices: Iterable[tuple[T, float]]) -> None:
        pairs = list(choices)
        self._values = [v for v, _ in pairs]
        self._cumulative = list(itertools.accumulate(w for _, w in pairs))
        self._total = self._cumulative[-1]
        if not pairs or self._total <= 0:
            raise ValueError("Weighted needs at least one positive weight")

    def draw(self, rng: random.Random) -> T:
        i = bisect.bisect_right(self._cumulative, rng.random() * self._total)
        return self._values[min(i, len(self._values) - 1)]


class Zipf:
    """Draws indexes 0..n-1 with P(k) proportional to 1 / (k + 1) ** exponent.

    Precomputes the cumulative weights once (O(n) memory), then each draw is
    one bisection.
    """

    def __init__(self, n: int, exponent: float) -> None:
        if n < 1:
            raise ValueError("Zipf needs at least one item")
        self._cumulative = list(itertools.accumulate(1.0 / (k + 1) ** exponent for k in range(n)))
        self._total = self._cumulative[-1]
        self._last = n - 1

    def draw(self, rng: random.Random) -> int:
        # min(): rng.random() * total can round up onto the last boundary.
        return min(bisect.bisect_right(self._cumulative, rng.random() * self._total), self._last)


@dataclass(frozen=True, slots=True)
class Population:
    customer_ids: Sequence[str]  # index = popularity rank
    skus: Sequence[str]
    prices: Sequence[Decimal]  # per SKU
    customer_rank: Zipf
    sku_rank: Zipf

    def customer(self, rng: random.Random) -> str:
        return self.customer_ids[self.customer_rank.draw(rng)]

    def sku(self, rng: random.Random) -> int:
        return self.sku_rank.draw(rng)


def build_population(customers: int, skus: int, seed: int) -> Population:
    """Customers ``cust-00001``...; SKUs ``SKU-0001``... with prices 1.00..499.99.

    Popularity ranks are shuffled so that the busiest customer is not always
    ``cust-00001``. Deterministic for a given seed.
    """
    rng = random.Random(f"{seed}:population")
    width = max(5, len(str(customers)))
    customer_ids = [f"cust-{i:0{width}d}" for i in range(1, customers + 1)]
    rng.shuffle(customer_ids)
    sku_width = max(4, len(str(skus)))
    sku_ids = [f"SKU-{i:0{sku_width}d}" for i in range(1, skus + 1)]
    rng.shuffle(sku_ids)
    prices = [_price(rng) for _ in range(skus)]
    return Population(
        customer_ids=customer_ids,
        skus=sku_ids,
        prices=prices,
        customer_rank=Zipf(customers, 1.07),
        sku_rank=Zipf(skus, 0.95),
    )


def _price(rng: random.Random) -> Decimal:
    # Log-uniform between ~2 and ~500, most ending in .99 / .49 / .00 like shop prices.
    whole = int(math.exp(rng.uniform(math.log(2), math.log(500))))
    cents = rng.choice(("0.99", "0.99", "0.99", "0.49", "0.00", "0.95"))
    return Decimal(max(whole, 2) - 1) + Decimal(cents)
