"""A batch of text requests as the batcher assembles it (runtime.text): one request refused for an over-long text
leaves the others in the batch; the kept texts run sorted by length, in runs of little padding, and each gets the
answer it gets alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ortserve.repository.config import load_config
from ortserve.runtime.signature import read_signature
from ortserve.runtime.text import _runs, bind_text_model
from tests.text.conftest import CLASSIFIER_MAX_LENGTH

pytestmark = pytest.mark.slow


def _texts(*texts: str) -> dict[str, np.ndarray]:
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return {"text": array}


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([output.name for output in session.get_outputs()], session.run(None, feeds), strict=True))


def test_a_refused_request_leaves_the_others_in_the_batch(text_repository: Path) -> None:
    version = text_repository / "strict" / "1"
    session = ort.InferenceSession(str(version / "model.onnx"))
    config = load_config(version.parent).text
    assert config is not None and config.max_padding == 0.2
    text = bind_text_model("strict", version, config, read_signature(session))
    requests = [_texts("good", "the movie was bad"), _texts(" ".join(["good movie"] * 20)), _texts("bad film")]
    assembled = text.assemble(requests)
    assert assembled.errors[0] is None and assembled.errors[2] is None
    assert str(assembled.errors[1]).startswith(f"text 0 has more than {CLASSIFIER_MAX_LENGTH} tokens")
    # [CLS] good [SEP] and [CLS] bad film [SEP] share a run (1 of 8 tokens padding); the 6-token text would make
    # 5 of 18 padding, over a fifth: it runs alone
    assert [run["input_ids"].shape for run in assembled.feeds] == [(2, 4), (1, 6)]
    assert [run["attention_mask"].sum(axis=1).tolist() for run in assembled.feeds] == [[3, 4], [6]]
    first, third = assembled.answers([_run(session, feeds) for feeds in assembled.feeds])
    assert first["scores"].shape == (2, 3) and third["scores"].shape == (1, 3)
    for request, answer in ((requests[0], first), (requests[2], third)):
        for index in range(len(request["text"])):
            alone = text.assemble([_texts(request["text"][index])])
            (expected,) = alone.answers([_run(session, feeds) for feeds in alone.feeds])
            np.testing.assert_allclose(answer["scores"][index], expected["scores"][0], atol=1e-6)
            assert answer["labels"][index] == expected["labels"][0]


@pytest.mark.parametrize("max_padding", [0.0, 0.2, 0.5, 1.0])
def test_runs_cover_the_kept_texts_within_the_padding_allowed(max_padding: float) -> None:
    lengths = np.random.default_rng(4).integers(3, 90, 64)
    kept = np.flatnonzero(np.random.default_rng(5).random(64) < 0.9)
    runs = _runs(kept, lengths, max_padding)
    assert sorted(np.concatenate(runs).tolist()) == kept.tolist()
    for run in runs:
        padded = len(run) * lengths[run].max()
        assert lengths[run].sum() >= (1 - max_padding) * padded or len(run) == 1
    if max_padding == 1.0:
        assert len(runs) == 1
