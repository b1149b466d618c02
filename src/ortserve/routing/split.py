"""Traffic split: weights over versions for requests that name none; a routing key always lands on the same one."""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from itertools import accumulate


class Split:
    def __init__(self, weights: dict[int, float]) -> None:
        self.versions = sorted(weights)
        total = sum(weights.values())
        self._bounds = list(accumulate(weights[v] / total for v in self.versions))
        by_weight = sorted(self.versions, key=lambda v: -weights[v])
        # per first choice, the order to try: it, then the others by weight (built once, not per request)
        self._orders = [[first, *(v for v in by_weight if v != first)] for first in self.versions]

    def choose(self, key: str | None) -> list[int]:
        """The versions in the order to try: the one the weights (or the key) pick, then the others by weight.
        A key maps to a fixed point in [0, 1), so it lands on the same version while the weights hold."""
        point = _point(key) if key is not None else random.random()
        return self._orders[min(bisect_right(self._bounds, point), len(self.versions) - 1)]


def _point(key: str) -> float:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
