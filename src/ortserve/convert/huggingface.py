"""Hugging Face `transformers` model directories (`save_pretrained`: config.json and weights, with the tokenizer
or image processor files beside them) as a source: the task from the config's `architectures`, the inputs from
the model type, meaningful output names, and the preprocessing files carried into the version. A checkpoint
saved without a tokenizer.json (a `vocab.txt`, `vocab.json` and `merges.txt`, or a SentencePiece model, as older
tokenizers wrote them) gets the one transformers builds from those files, the tokenizer transformers itself
runs, so the server can take text (runtime.text).

The model runs through a wrapper that takes its inputs by position and returns the task's outputs as a tuple, so
that PyTorch's exporters (convert.pytorch) see a plain module.
"""

from __future__ import annotations

import inspect
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.convert.hf_images import image_settings
from ortserve.convert.spec import DEFAULT_DYNAMIC_SIZE, InputSpec
from ortserve.errors import InvalidInput

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# the files of tokenizers saved without a tokenizer.json, from which transformers builds one
VOCABULARY_FILES = ("vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
# what the version directory keeps of the source directory, for the clients' and the server's preprocessing
PREPROCESSING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                       "merges.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                       "preprocessor_config.json")
SAMPLE_SEQUENCE = 16
SAMPLE_CHOICES = 3
AUDIO_SAMPLES = DEFAULT_DYNAMIC_SIZE["samples"]
# the task's outputs by the architecture's suffix; a bare encoder (BertModel) gives its hidden states
TASKS = (("ForSequenceClassification", "sequence-classification", ["logits"]),
         ("ForTokenClassification", "token-classification", ["logits"]),
         ("ForImageClassification", "image-classification", ["logits"]),
         ("ForCausalLM", "causal-lm", ["logits"]),
         ("LMHeadModel", "causal-lm", ["logits"]),
         ("ForMaskedLM", "masked-lm", ["logits"]),
         ("ForCTC", "ctc", ["logits"]),
         ("ForAudioClassification", "audio-classification", ["logits"]),
         ("ForQuestionAnswering", "question-answering", ["start_logits", "end_logits"]),
         ("ForSemanticSegmentation", "semantic-segmentation", ["logits"]),
         ("ForMultipleChoice", "multiple-choice", ["logits"]))


def is_source(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


@dataclass
class HfModel:
    module: Any  # the wrapper: positional tensors in, a tuple of the task's outputs
    task: str
    architecture: str
    inputs: list[InputSpec]
    outputs: list[str]
    sample: Callable[[int, np.random.Generator], list[np.ndarray]]  # parity samples of valid ids and masks
    files: dict[str, Path]  # preprocessing files and labels to carry into the version directory
    settings: dict[str, Any]  # config.yaml sections: `text:` (a text model with a tokenizer.json), `warmup:` (audio)


def _task(architecture: str) -> tuple[str, list[str]]:
    for suffix, task, outputs in TASKS:
        if architecture.endswith(suffix):
            return task, outputs
    if architecture.endswith("Model"):
        return "feature-extraction", ["last_hidden_state"]
    raise InvalidInput(f"architecture {architecture!r} has no task ortserve knows (sequence, token, image or audio "
                       "classification, extractive question answering, multiple choice, semantic segmentation, causal "
                       "or masked LM, CTC, or a bare encoder)")


def load(path: Path) -> HfModel:
    import torch
    import transformers

    config = json.loads((path / CONFIG_FILE).read_text())
    architectures = config.get("architectures") or []
    if not architectures:
        raise InvalidInput(f"{str(path)!r}: config.json names no `architectures`; save the model with "
                           "save_pretrained from its task class (e.g. BertForSequenceClassification)")
    architecture = architectures[0]
    task, outputs = _task(architecture)
    transformers.utils.logging.disable_progress_bar()  # its bars go to stderr, past hushed()
    model_class = getattr(transformers, architecture, None)
    if model_class is None:
        raise InvalidInput(f"transformers {transformers.__version__} has no class {architecture!r}")
    try:
        model = model_class.from_pretrained(str(path)).eval()
    # RuntimeError: tensors that disagree with config.json (after transformers' report of them), a torn checkpoint
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidInput(f"{str(path)!r} cannot be loaded as {architecture}: {str(exc).splitlines()[0]}") from None
    names = _input_names(model)
    inputs, sample = _inputs(names, model.config, choices=task == "multiple-choice")
    module = _positional(torch, len(inputs))(model, [spec.name for spec in inputs], outputs).eval()
    files = {name: path / name for name in PREPROCESSING_FILES if (path / name).is_file()}
    if "tokenizer.json" not in files and any(name in files for name in VOCABULARY_FILES):
        built = _built_tokenizer(transformers, path)
        if built is not None:
            files["tokenizer.json"] = built
    settings: dict[str, Any] = {}
    text = text_settings(path, task, model.config, names) if "tokenizer.json" in files else None
    if text:
        settings["text"] = text
    if task == "image-classification" and [spec.name for spec in inputs] == ["pixel_values"]:
        image = image_settings(transformers, path, bool(labels(path)))
        if image:
            settings["image"] = image
    if [spec.name for spec in inputs] == ["input_values"]:  # warm up on a second of audio, not on one sample
        settings["warmup"] = {"shapes": {"input_values": [AUDIO_SAMPLES]}}
    return HfModel(module, task, architecture, inputs, outputs, sample, files, settings)


def _built_tokenizer(transformers: Any, path: Path) -> Path | None:
    """The tokenizer.json transformers builds from the checkpoint's vocabulary files; None (logged) when it
    builds none: the model then takes token ids only."""
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    # ImportError: a SentencePiece vocabulary without the sentencepiece package; ValueError/OSError: files it
    # does not take
    except (ImportError, ValueError, OSError) as exc:
        log.warning("%s has no tokenizer.json, and transformers builds none from its vocabulary (%s): the model "
                    "will take token ids, not text", path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        log.warning("%s has no tokenizer.json, and transformers' %s is not a `tokenizers` one: the model will take "
                    "token ids, not text", path, type(tokenizer).__name__)
        return None
    written = Path(tempfile.mkdtemp(prefix="ortserve-tokenizer-")) / "tokenizer.json"
    backend.save(str(written))
    log.info("%s has no tokenizer.json: wrote the one transformers %s builds from its vocabulary", path,
             transformers.__version__)
    return written


def _positional(torch: Any, count: int) -> Any:
    """A module class that takes `count` tensors as positional parameters (torch.export needs a fixed arity to
    give each its dynamic axes) and answers the model's named outputs as a tuple."""

    class Positional(torch.nn.Module):
        def __init__(self, model: Any, names: list[str], outputs: list[str]) -> None:
            super().__init__()
            self.model, self.names, self.outputs = model, names, outputs

        def answer(self, *tensors: Any) -> tuple[Any, ...]:
            result = self.model(**dict(zip(self.names, tensors, strict=True)), return_dict=True)
            return tuple(result[name] for name in self.outputs)

    class One(Positional):
        def forward(self, first: Any) -> tuple[Any, ...]:
            return self.answer(first)

    class Two(Positional):
        def forward(self, first: Any, second: Any) -> tuple[Any, ...]:
            return self.answer(first, second)

    class Three(Positional):
        def forward(self, first: Any, second: Any, third: Any) -> tuple[Any, ...]:
            return self.answer(first, second, third)

    return {1: One, 2: Two, 3: Three}[count]


def text_settings(path: Path, task: str, config: Any, names: list[str]) -> dict[str, Any] | None:
    """The server's text preprocessing for a sequence or token classifier, an extractive question answerer or an
    encoder: the tokenizer's length limit, and for a sentence-transformers directory (modules.json) its pooling
    and normalization."""
    text_tasks = {"sequence-classification": "classify", "token-classification": "tag",
                  "question-answering": "answer", "feature-extraction": "embed"}
    if task not in text_tasks or "input_ids" not in names:
        return None
    settings: dict[str, Any] = {"task": text_tasks[task], "max_length": _max_length(path, config)}
    if task.endswith("classification") and labels(path):
        settings["labels_file"] = "labels.txt"
    if task == "sequence-classification" and _scores(config) != "logits":
        settings["scores"] = _scores(config)
    if task != "feature-extraction":
        return settings
    modules = _read_json(path / "modules.json")
    if isinstance(modules, list):  # sentence-transformers: Transformer, Pooling, Normalize
        kinds = {str(module.get("type", "")).rsplit(".", 1)[-1]: module
                 for module in modules if isinstance(module, dict)}
        pooling = _read_json(path / str(kinds.get("Pooling", {}).get("path", "")) / "config.json")
        if isinstance(pooling, dict) and pooling.get("pooling_mode_cls_token"):
            settings["pooling"] = "cls"
        settings["normalize"] = "Normalize" in kinds
    return settings


def _scores(config: Any) -> str:
    """What a sequence classifier's logits become, as transformers' text classification pipeline has it: a
    regression's stay as they are, a multi-label model's (or one logit) get a sigmoid each, others a softmax."""
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return "probabilities"
    if problem == "multi_label_classification" or int(getattr(config, "num_labels", 2)) == 1:
        return "multi_label_logits"
    return "logits"


def _max_length(path: Path, config: Any) -> int:
    """sentence-transformers' max_seq_length, else the tokenizer's model_max_length, within the model's positions."""
    positions = int(getattr(config, "max_position_embeddings", 0) or 512)
    for file, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        value = (_read_json(path / file) or {}).get(key)
        if isinstance(value, int) and 0 < value <= positions:
            return value
    return positions


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def labels(path: Path) -> list[str] | None:
    """The class names of a classifier (`id2label`), in class order."""
    id2label = json.loads((path / CONFIG_FILE).read_text()).get("id2label") or {}
    if not id2label:
        return None
    return [str(id2label.get(str(index), index)) for index in range(len(id2label))]


def _inputs(names: list[str], config: Any, choices: bool = False
            ) -> tuple[list[InputSpec], Callable[[int, np.random.Generator], list[np.ndarray]]]:
    """The model's inputs (ids, mask and token types of dynamic batch and sequence, and of choices between them
    for a multiple-choice head; or pixel values; or raw audio) and a maker of valid samples for them."""
    if names == ["input_values"]:  # raw audio: one float per sample, any length
        audio = InputSpec("input_values", np.dtype(np.float32), ("batch", "samples"))
        return [audio], lambda count, rng: [rng.standard_normal((count, AUDIO_SAMPLES)).astype(np.float32)]
    if names == ["pixel_values"]:
        channels = int(getattr(config, "num_channels", 3))
        size = getattr(config, "image_size", None) or 224
        height, width = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        pixels = InputSpec("pixel_values", np.dtype(np.float32), ("batch", channels, height, width))
        return [pixels], lambda count, rng: [rng.standard_normal((count, channels, height, width)).astype(np.float32)]
    vocabulary = int(config.vocab_size)

    middle = (SAMPLE_CHOICES,) if choices else ()

    def sample(count: int, rng: np.random.Generator) -> list[np.ndarray]:
        ids = rng.integers(0, vocabulary, (count, *middle, SAMPLE_SEQUENCE), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[count // 2:, ..., SAMPLE_SEQUENCE // 2:] = 0  # half the rows padded, as a batch of unequal texts is
        by_name = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return [by_name[name] for name in names]

    dims = ("batch", "choices", "sequence") if choices else ("batch", "sequence")
    return [InputSpec(name, np.dtype(np.int64), dims) for name in names], sample


def _input_names(model: Any) -> list[str]:
    """What the model's forward() takes: token ids (with their mask, and token types where the model has them),
    else raw audio samples, else pixels."""
    config = model.config
    accepted = inspect.signature(model.forward).parameters
    if "input_ids" not in accepted:
        if "input_values" in accepted and not hasattr(config, "num_mel_bins"):
            return ["input_values"]
        if "pixel_values" in accepted:
            return ["pixel_values"]
        raise InvalidInput(f"{type(model).__name__} takes {', '.join(list(accepted)[:3])}, ...: ortserve converts "
                           "models of token ids, pixel values or raw audio samples (not spectrogram frames)")
    names = ["input_ids"] + (["attention_mask"] if "attention_mask" in accepted else [])
    if "token_type_ids" in accepted and getattr(config, "type_vocab_size", 0) \
            and config.model_type not in _NO_TOKEN_TYPES:
        names.append("token_type_ids")
    return names


_NO_TOKEN_TYPES = frozenset({"roberta", "distilbert", "gpt2", "xlm-roberta", "camembert"})
