"""A batch of text requests as the batcher assembles it (runtime.text): one request refused for an over-long text
leaves the others in the batch, padded only to their own longest text, with the answers they get alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ortserve.repository.config import load_config
from ortserve.runtime.signature import read_signature
from ortserve.runtime.text import bind_text_model
from tests.text.conftest import CLASSIFIER_MAX_LENGTH

pytestmark = pytest.mark.slow


def _texts(*texts: str) -> dict[str, np.ndarray]:
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return {"text": array}


def test_a_refused_request_leaves_the_others_in_the_batch(text_repository: Path) -> None:
    version = text_repository / "strict" / "1"
    session = ort.InferenceSession(str(version / "model.onnx"))
    text = bind_text_model("strict", version, load_config(version.parent).text, read_signature(session))
    requests = [_texts("good", "the movie was bad"), _texts(" ".join(["good movie"] * 20)), _texts("bad film")]
    assembled = text.assemble(requests)
    assert assembled.errors[0] is None and assembled.errors[2] is None
    assert str(assembled.errors[1]).startswith(f"text 0 has more than {CLASSIFIER_MAX_LENGTH} tokens")
    assert assembled.feeds is not None
    assert assembled.feeds["input_ids"].shape == (3, 6)  # [CLS] the movie was bad [SEP]: the longest kept text
    assert assembled.feeds["attention_mask"].sum(axis=1).tolist() == [3, 6, 4]
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, assembled.feeds), strict=True))
    first, third = assembled.answers(outputs)
    for request, answer in ((requests[0], first), (requests[2], third)):
        alone = text.assemble([request])
        assert alone.feeds is not None
        single = dict(zip([o.name for o in session.get_outputs()], session.run(None, alone.feeds), strict=True))
        (expected,) = alone.answers(single)
        np.testing.assert_allclose(answer["scores"], expected["scores"], atol=1e-6)
        assert answer["labels"].tolist() == expected["labels"].tolist()
