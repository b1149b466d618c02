"""The arithmetic of shadow agreement, the split's proportions and stickiness, and the cache's budget."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ortserve.routing.agreement import OutputAgreement
from ortserve.routing.cache import ResponseCache, request_key
from ortserve.routing.split import Split


def test_agreement_of_class_scores() -> None:
    served = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.0, 1.0]], dtype=np.float32)
    shadow = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.0, 0.0, 2.0]], dtype=np.float32)
    agreement = OutputAgreement()
    agreement.add(served, shadow)
    summary = agreement.summary()
    assert summary["rows"] == 3 and summary["top1_agreement"] == pytest.approx(2 / 3)
    expected = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(served, shadow,
                                                                                               strict=True)]
    assert summary["mean_cosine"] == pytest.approx(np.mean(expected))
    assert summary["max_abs_error"] == pytest.approx(1.0)


def test_agreement_of_other_outputs() -> None:
    agreement = OutputAgreement()
    agreement.add(np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.float32))  # not class scores: no top-1
    agreement.add(np.arange(3, dtype=np.int64), np.array([0, 1, 5]))  # integers: rows of one element
    agreement.add(np.zeros((2, 3)), np.zeros((3, 3)))  # shapes differ: not comparable
    summary = agreement.summary()
    assert summary["top1_agreement"] is None and summary["mismatched"] == 1
    assert summary["rows"] == 5 and summary["max_abs_error"] == 3.0
    # zero rows against zero rows agree; the integer rows 0 vs 0 agree, 1 vs 1 too, 2 vs 5 point the same way
    assert summary["mean_cosine"] == pytest.approx(1.0)


def test_split_proportions_and_keys() -> None:
    split = Split({1: 90.0, 2: 10.0})
    counts = Counter(split.choose(None)[0] for _ in range(20_000))
    assert abs(counts[2] / 20_000 - 0.1) < 0.01
    keyed = {f"k{i}": split.choose(f"k{i}")[0] for i in range(2_000)}
    assert all(split.choose(key)[0] == version for key, version in keyed.items())
    assert abs(sum(v == 2 for v in keyed.values()) / 2_000 - 0.1) < 0.03
    assert split.choose("k1")[1:] == [v for v in (1, 2) if v != keyed["k1"]]  # then the rest, by weight


def test_cache_keys_and_budget() -> None:
    a = {"x": np.arange(4, dtype=np.float32)}
    assert request_key(a, None) == request_key({"x": np.arange(4, dtype=np.float32)}, None)
    assert request_key(a, None) != request_key({"x": np.arange(4, dtype=np.float64)}, None)
    assert request_key(a, None) != request_key({"x": np.arange(4, dtype=np.float32).reshape(2, 2)}, None)
    assert request_key(a, None) != request_key(a, ["y"])
    texts = request_key({"s": np.array([b"ab", b"c"], dtype=object)}, None)
    assert texts != request_key({"s": np.array([b"a", b"bc"], dtype=object)}, None)

    cache = ResponseCache(max_bytes=64)
    answer = {"y": np.ones(8, np.float32)}  # 32 bytes
    cache.put(b"1", answer)
    answer["y"][:] = 7  # the caller's array changes; the cached copy does not
    cached = cache.get(b"1")
    assert cached is not None and cached["y"].tolist() == [1.0] * 8 and not cached["y"].flags.writeable
    cache.put(b"2", {"y": np.zeros(8, np.float32)})
    cache.get(b"1")
    cache.put(b"3", {"y": np.zeros(8, np.float32)})  # over budget: the least recently used ("2") goes
    assert cache.get(b"2") is None and cache.get(b"1") is not None
    cache.put(b"big", {"y": np.zeros(100, np.float32)})  # larger than the budget: not kept
    assert cache.get(b"big") is None
    assert (cache.counts.entries, cache.counts.bytes, cache.counts.evictions) == (2, 64, 1)


def test_a_shadow_lane_merges_copies_and_accounts_for_each(tmp_path) -> None:
    import time

    import onnxruntime as ort

    from ortserve.examples.models import mlp, save
    from ortserve.routing.shadow import ShadowLane

    path = save(mlp(seed=1), tmp_path, "m")
    session = ort.InferenceSession(str(path))
    lane = ShadowLane("m", 2, session, 1.0, batched=True, max_share=0.5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = rng.standard_normal((int(rng.integers(1, 4)), 784)).astype(np.float32)
        (served,) = session.run(None, {"input": rows})
        lane.offer({"input": rows}, {"logits": served})
    deadline = time.monotonic() + 10
    while lane.stats.compared + lane.stats.dropped < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    lane.close()
    lane.join()
    stats = lane.stats
    assert stats.answered == stats.offered == 200 and stats.failed == 0
    assert stats.compared + stats.dropped == 200 and stats.compared >= 4
    logits = stats.outputs["logits"].summary()
    assert logits["top1_agreement"] == 1.0 and logits["max_abs_error"] == pytest.approx(0.0, abs=1e-5)
    assert logits["rows"] >= stats.compared  # each copy has one row or more
