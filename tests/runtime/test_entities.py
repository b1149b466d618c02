"""Token labels grouped into entities as transformers' token-classification pipeline groups them ("simple")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from ortserve.dtypes import BY_V2
from ortserve.errors import ConfigError
from ortserve.repository.config import TextPreprocessing
from ortserve.runtime.entities import entities
from ortserve.runtime.signature import DYNAMIC, Signature, TensorSpec
from ortserve.runtime.text import ENTITIES, bind_text_model

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "DATE"]


def _entities(text: str, words: list[str], labels: list[str], scores: list[float]) -> list[dict[str, object]]:
    """One token a word, in the order they appear in `text`."""
    offsets, start = [], 0
    for word in words:
        start = text.index(word, start)
        offsets.append((start, start + len(word)))
        start += len(word)
    best = np.array([LABELS.index(label) for label in labels])
    return entities(text, offsets, np.arange(len(words)), best, np.array(scores, np.float32), LABELS.__getitem__)


def test_b_starts_i_continues_and_o_is_dropped() -> None:
    text = "Ada Lovelace met Charles Babbage in London"
    found = _entities(text, text.split(), ["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC"],
                      [0.9, 0.7, 0.99, 0.8, 0.6, 0.9, 0.5])
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in found] == [
        ("PER", "Ada Lovelace", 0, 12), ("PER", "Charles Babbage", 17, 32), ("LOC", "London", 36, 42)]
    assert [e["score"] for e in found] == pytest.approx([0.8, 0.7, 0.5])


def test_a_b_next_to_its_own_type_starts_another_entity_and_an_i_after_another_type_starts_one() -> None:
    text = "Ada Bob Paris"
    found = _entities(text, text.split(), ["B-PER", "B-PER", "I-LOC"], [0.5, 0.5, 0.5])
    assert [(e["entity_group"], e["word"]) for e in found] == [("PER", "Ada"), ("PER", "Bob"), ("LOC", "Paris")]


def test_a_label_without_prefix_is_its_own_type_and_continues_itself() -> None:
    text = "on 3 May 2026 ok"
    found = _entities(text, text.split(), ["O", "DATE", "DATE", "DATE", "O"], [1, 0.4, 0.6, 0.8, 1])
    assert [(e["entity_group"], e["word"]) for e in found] == [("DATE", "3 May 2026")]
    assert found[0]["score"] == pytest.approx(0.6)


def test_only_the_texts_own_tokens_count_and_the_word_is_the_text_it_spans() -> None:
    """Sub-word pieces continue their word; positions left out (special tokens, padding) break nothing."""
    text = "Johns Hopkins"
    offsets = [(0, 0), (0, 4), (4, 5), (6, 13), (0, 0)]  # [CLS] john ##s hopkins [SEP]
    best = np.array([1, 1, 2, 3, 1])
    found = entities(text, offsets, np.array([1, 2, 3]), best, np.full(5, 0.5, np.float32), LABELS.__getitem__)
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in found] == [
        ("PER", "Johns", 0, 5), ("LOC", "Hopkins", 6, 13)]


@pytest.mark.parametrize("output_shape", [(DYNAMIC, 5), (DYNAMIC, DYNAMIC, 5)], ids=["per-text", "per-token"])
def test_a_tag_model_needs_labels_per_token(tmp_path: Path, output_shape: tuple[int, ...]) -> None:
    tokenizer = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "ada": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS[:5]) + "\n")
    ids = TensorSpec("input_ids", BY_V2["INT64"], (DYNAMIC, DYNAMIC))
    signature = Signature((ids,), (TensorSpec("logits", BY_V2["FP32"], output_shape),))
    config = TextPreprocessing(task="tag", labels_file="labels.txt")
    if len(output_shape) == 2:
        with pytest.raises(ConfigError, match=r"not a \[batch, sequence, labels\] tensor, as text.task 'tag'"):
            bind_text_model("ner", tmp_path, config, signature)
        return
    bound = bind_text_model("ner", tmp_path, config, signature)
    assert [(spec.name, spec.type.v2) for spec in bound.signature.outputs] == [(ENTITIES, "BYTES")]
    assert bound.labels == LABELS[:5]
