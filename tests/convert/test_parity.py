from __future__ import annotations

import numpy as np

from ortserve.convert.parity import compare


def test_errors_and_top1_agreement() -> None:
    want = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    got = want.copy()
    got[1] = [1.0, 2.0, 3.5]  # the second row's argmax changes
    (output,) = compare(["scores"], [want], [got], atol=1e-3, rtol=1e-3, samples=2).outputs
    assert output.max_abs_error == 2.5
    assert output.max_rel_error == 2.5
    assert output.top1_agreement == 0.5
    assert not output.passed


def test_exact_outputs_and_shape_mismatch() -> None:
    report = compare(["label", "scores"], [np.array([1, 2]), np.zeros((2, 3))],
                     [np.array([1, 2]), np.zeros((3, 3))], atol=1e-3, rtol=1e-3, samples=2)
    label, scores = report.outputs
    assert label.passed and label.max_abs_error == 0
    assert not scores.passed
    assert not report.passed
    assert "scores: shape [3, 3], where the source answers [2, 3] -> FAILED" in report.text()
