"""The in-process ceiling: the best rows per second a bare onnxruntime session reaches on this machine."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ortserve.runtime.signature import read_signature


@dataclass(frozen=True)
class Ceiling:
    rows_per_s: float
    batch_size: int
    by_batch_size: dict[int, float]


def measure_ceiling(session: ort.InferenceSession, batch_sizes: list[int], seconds: float = 3.0,
                    seed: int = 0) -> Ceiling:
    """Rows per second at each batch size, running session.run back to back on random inputs."""
    signature = read_signature(session)
    rng = np.random.default_rng(seed)
    rates = {}
    for batch in batch_sizes:
        feeds = {spec.name: rng.standard_normal([batch, *spec.shape[1:]]).astype(spec.type.numpy)
                 for spec in signature.inputs}
        session.run(None, feeds)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feeds)
            runs += 1
        rates[batch] = runs * batch / (time.perf_counter() - start)
    best = max(rates, key=rates.__getitem__)
    return Ceiling(rates[best], best, rates)
