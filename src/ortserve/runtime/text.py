"""Text models served from raw strings: a batch of texts becomes the model's token inputs (tokenized together,
sorted by length into runs of little padding, the mask set), and its output becomes embeddings, class scores,
entities (`tag`: a label per token, grouped by runtime.entities), answers (`answer`: a question and its context
in, the context's span that answers it out, chosen by runtime.answers), or stays as the model answers
(`predict`).
A model whose token ids input has a fixed length (a Keras TextVectorization's `output_sequence_length`) gets
every text cut or padded to it, in one run.

Tokenization happens when a batch is assembled, on the thread that runs it (runtime.batcher's Assembly): one
`encode_batch` call for every text of every request in the batch, off the event loop. Requests of different
lengths share a batch: its texts are sorted by length and cut into session runs whose padding stays under
`text.max_padding` of their tokens, each run padded to its longest text with the mask set. A transformer's cost
follows the tokens it runs, padding included: on this project's 2-core CPU, MiniLM on batches of 8 documentation
sentences ran 166 rows/s padded to each batch's longest, 187 one by one, 233 sorted into runs of at most a fifth
padding (docs/benchmarks.md). The mask keeps the padding out of attention and out of mean pooling, so a text's
answer does not depend on its neighbours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson
from tokenizers import Encoding, Tokenizer

from ortserve.dtypes import BY_V2
from ortserve.errors import ConfigError, InvalidInput
from ortserve.repository.config import TextPreprocessing
from ortserve.runtime.answers import best_span
from ortserve.runtime.batcher import Assembled, Tensors, split_rows
from ortserve.runtime.entities import entities
from ortserve.runtime.scores import probabilities
from ortserve.runtime.signature import DYNAMIC, Signature, TensorSpec

EMBEDDINGS, SCORES, LABELS, ENTITIES = "embeddings", "scores", "labels", "entities"
ANSWER, SCORE, START, END = "answer", "score", "start", "end"
_PAD_TOKENS = ("[PAD]", "<pad>", "<|endoftext|>", "</s>")
_USUAL_NAMES = {"ids": "input_ids", "mask": "attention_mask", "type_ids": "token_type_ids"}


@dataclass(eq=False)  # the batch key of its requests: compared by identity
class TextModel:
    model: str
    config: TextPreprocessing
    tokenizer: Tokenizer
    ids: TensorSpec
    mask: TensorSpec | None
    type_ids: TensorSpec | None
    output: TensorSpec
    labels: list[str] | None
    signature: Signature  # what clients see: strings in, embeddings or scores out
    end_output: TensorSpec | None = None  # answer: the end logits (`output` holds the start logits)

    @property
    def input_name(self) -> str:
        return self.config.input_name

    @property
    def string_inputs(self) -> tuple[str, ...]:
        return string_inputs(self.config)

    @property
    def sequence_length(self) -> int | None:
        """The fixed length of the token ids input, if it has one."""
        return None if self.ids.shape[1] == DYNAMIC else int(self.ids.shape[1])

    def takes(self, inputs: Tensors) -> bool:
        """Whether a request sends strings (else it sends the model's own token tensors)."""
        return not set(inputs).isdisjoint(self.string_inputs)

    def strings(self, inputs: Tensors, max_batch_size: int) -> Tensors:
        """A request's strings, each input a one-dimensional array of str, once it is found to send strings."""
        missing = [name for name in self.string_inputs if name not in inputs]
        other = sorted(set(inputs) - set(self.string_inputs))
        if missing or other:
            wanted = " and ".join(repr(name) for name in self.string_inputs)
            raise InvalidInput(f"the model takes strings in {wanted}; the request "
                               + (f"has no {missing[0]!r}" if missing else f"also sends {other[0]!r}"))
        found = {name: self._texts(name, inputs[name], max_batch_size) for name in self.string_inputs}
        counts = {name: len(texts) for name, texts in found.items()}
        if len(set(counts.values())) > 1:
            raise InvalidInput(f"the inputs hold {counts} texts; send as many contexts as questions")
        return found

    def _texts(self, name: str, array: np.ndarray, max_batch_size: int) -> np.ndarray:
        if array.dtype.kind not in "OSU":
            raise InvalidInput(f"input {name!r} must hold strings (BYTES), got {array.dtype}")
        if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
            raise InvalidInput(f"input {name!r} has shape {list(array.shape)}; send one text per row: [n] or [n, 1]")
        count = array.shape[0]
        if count < 1:
            raise InvalidInput(f"input {name!r} holds no text")
        if max_batch_size and count > max_batch_size:
            raise InvalidInput(f"{count} texts exceed the model's max_batch_size {max_batch_size}")
        texts = np.empty(count, dtype=object)
        texts[:] = [_as_text(index, item) for index, item in enumerate(array.reshape(-1))]
        return texts

    def assemble(self, requests: list[Tensors]) -> Assembled:
        """Tokenize every text of the requests in one call; a request with a text over the limit (truncation off)
        is refused; the others' texts are sorted by length into runs of little padding (_runs)."""
        texts: list[str] = []
        contexts: list[str] = []
        first_input = self.string_inputs[0]
        for inputs in requests:
            texts.extend(inputs[first_input])  # str already (strings())
            if self.config.task == "answer":
                contexts.extend(inputs[self.config.context_input])
        refused: dict[int, InvalidInput] = {}  # by request: a question that leaves its context no room
        pieces: list[str] | list[tuple[str, str]] = texts
        if self.config.task == "answer":
            pieces, refused = self._pairs(requests, texts, contexts)
        encodings = self.tokenizer.encode_batch(pieces, add_special_tokens=True)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        lengths = mask.sum(axis=1)  # encodings are padded to the longest: the mask tells each text's length
        fixed = self.sequence_length
        limit = self.config.max_length  # truncation on: no text is longer; off: a longer one is refused
        if fixed is not None and not self.config.truncation:
            limit = min(limit, fixed)
        errors: list[Exception | None] = []
        keep = np.ones(len(texts), bool)
        start = 0
        for number, inputs in enumerate(requests):
            stop = start + inputs[first_input].shape[0]
            if number in refused:
                errors.append(refused[number])
                keep[start:stop] = False
            elif lengths[start:stop].max() > limit:
                index = int(np.argmax(lengths[start:stop]))
                errors.append(InvalidInput(f"text {index} has more than {limit} tokens, the model's limit "
                                           "(text.max_length), and text.truncation is off"))
                keep[start:stop] = False
            else:
                errors.append(None)
            start = stop
        kept = np.flatnonzero(keep)
        if not kept.size:
            return Assembled([], errors, lambda outputs: [])
        ids = np.array([encoding.ids for encoding in encodings], dtype=self.ids.type.numpy)
        type_ids = None if self.type_ids is None else \
            np.array([encoding.type_ids for encoding in encodings], dtype=self.type_ids.type.numpy)
        if fixed is not None:  # every text cut or padded to the input's length, in one run
            ids, mask = _to_width(ids, fixed, _pad_id(self.tokenizer)), _to_width(mask, fixed, 0)
            type_ids = None if type_ids is None else _to_width(type_ids, fixed, 0)
        runs = [kept] if fixed is not None else _runs(kept, lengths, self.config.max_padding)
        feeds: list[Tensors] = []
        masks: list[np.ndarray] = []
        for rows in runs:
            # sorted by length: the last is the longest
            width = fixed if fixed is not None else int(lengths[rows[-1]])
            run = {self.ids.name: ids[rows, :width]}  # fancy indexing copies: contiguous
            if self.mask is not None:
                run[self.mask.name] = mask[rows, :width].astype(self.mask.type.numpy, copy=False)
            if self.type_ids is not None and type_ids is not None:
                run[self.type_ids.name] = type_ids[rows, :width]
            feeds.append(run)
            masks.append(mask[rows, :width].astype(np.float32))
        # where each run's rows go among the kept texts, in the requests' order
        places = np.searchsorted(kept, np.concatenate(runs))
        counts = [inputs[first_input].shape[0] for inputs, error in zip(requests, errors, strict=True)
                  if error is None]

        def answers(outputs: list[Tensors]) -> list[Tensors]:
            if self.config.task == "tag":
                parts = [self._tag(found[self.output.name], run_mask, rows, texts, encodings)
                         for found, run_mask, rows in zip(outputs, masks, runs, strict=True)]
            elif self.config.task == "answer":
                parts = [self._answers(found, rows, contexts, encodings)
                         for found, rows in zip(outputs, runs, strict=True)]
            else:
                parts = [self._answer(found, run_mask) for found, run_mask in zip(outputs, masks, strict=True)]
            ordered = {}
            for name in parts[0]:
                merged = np.concatenate([part[name] for part in parts])
                ordered[name] = np.empty_like(merged)
                ordered[name][places] = merged
            return split_rows(ordered, counts)

        return Assembled(feeds, errors, answers)

    def _answer(self, outputs: Tensors, mask: np.ndarray) -> Tensors:
        if self.config.task == "predict":
            return {spec.name: outputs[spec.name] for spec in self.signature.outputs}
        values = outputs[self.output.name]
        if self.config.task == "embed":
            return {EMBEDDINGS: self._embed(values, mask)}
        scores = probabilities(values.reshape(values.shape[0], -1).astype(np.float32, copy=False),
                               self.config.scores)
        best = scores.argmax(axis=1)
        names = np.empty(len(best), dtype=object)
        names[:] = [self.label(int(index)) for index in best]
        return {SCORES: scores, LABELS: names}

    @cached_property
    def _measuring(self) -> Tokenizer:
        """The tokenizer without truncation or padding: questions alone are measured, not cut (its only_second
        truncation fails on a single text that is too long)."""
        tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def _pairs(self, requests: list[Tensors], questions: list[str], contexts: list[str]
               ) -> tuple[list[tuple[str, str]], dict[int, InvalidInput]]:
        """The (question, context) pairs to tokenize, and the requests refused for a question that leaves no token
        of its context within text.max_length (only contexts are cut; the tokenizer would fail the whole batch).
        A refused request's questions are tokenized empty, and not run."""
        asked = self._measuring.encode_batch(questions, add_special_tokens=False)
        processor = self.tokenizer.post_processor
        room = self.config.max_length - (0 if processor is None else processor.num_special_tokens_to_add(True)) - 1
        pairs, refused, start = [], {}, 0
        for number, inputs in enumerate(requests):
            stop = start + inputs[self.config.question_input].shape[0]
            lengths = [len(encoding.ids) for encoding in asked[start:stop]]
            if max(lengths) > room:
                index = int(np.argmax(lengths))
                refused[number] = InvalidInput(f"question {index} has {lengths[index]} tokens, which leave its context "
                                               f"no room within the model's limit of {self.config.max_length} "
                                               "(text.max_length)")
                pairs.extend(("", context) for context in contexts[start:stop])
            else:
                pairs.extend(zip(questions[start:stop], contexts[start:stop], strict=True))
            start = stop
        return pairs, refused

    def _tag(self, values: np.ndarray, mask: np.ndarray, rows: np.ndarray, texts: list[str],
             encodings: list[Encoding]) -> Tensors:
        """Each text's entities, as a JSON string (a BYTES element): their number varies from text to text."""
        scores = probabilities(values.astype(np.float32, copy=False), self.config.scores)
        best, best_scores = scores.argmax(axis=-1), scores.max(axis=-1)
        width = mask.shape[1]
        found = np.empty(len(rows), dtype=object)
        for index, row in enumerate(rows.tolist()):
            encoding = encodings[row]
            special = np.ones(width, dtype=bool)  # a fixed width may pass the tokens tokenized
            marks = encoding.special_tokens_mask[:width]
            special[:len(marks)] = marks
            own = (mask[index] > 0) & ~special
            found[index] = orjson.dumps(entities(texts[row], encoding.offsets, np.flatnonzero(own), best[index],
                                                 best_scores[index], self.label)).decode()
        return {ENTITIES: found}

    def _answers(self, outputs: Tensors, rows: np.ndarray, contexts: list[str], encodings: list[Encoding]) -> Tensors:
        """Each question's answer: the span of its context, its score, and its character offsets in the context
        (an empty answer, score 0 and offsets -1 when the context kept no token)."""
        assert self.end_output is not None
        starts, ends = outputs[self.output.name], outputs[self.end_output.name]
        width = starts.shape[1]
        answers = np.empty(len(rows), dtype=object)
        scores = np.zeros(len(rows), np.float32)
        offsets = np.full((2, len(rows)), -1, np.int64)
        for index, row in enumerate(rows.tolist()):
            encoding = encodings[row]
            sequences = encoding.sequence_ids[:width]
            context = np.zeros(width, dtype=bool)
            context[:len(sequences)] = np.array(sequences, dtype=np.float64) == 1  # None (special tokens): NaN
            leading_special = bool(encoding.special_tokens_mask[0]) and encoding.attention_mask[0] == 1
            span = best_span(starts[index], ends[index], context, leading_special, self.config.max_answer_tokens)
            if span is None:
                answers[index] = ""
                continue
            start, end = encoding.offsets[span.first][0], encoding.offsets[span.last][1]
            answers[index] = contexts[row][start:end]
            scores[index], offsets[0, index], offsets[1, index] = span.score, start, end
        return {ANSWER: answers, SCORE: scores, START: offsets[0], END: offsets[1]}

    def _embed(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        values = values.astype(np.float32, copy=False)
        if values.ndim == 3:
            if self.config.pooling == "cls":
                values = values[:, 0]
            else:
                counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
                values = np.einsum("bld,bl->bd", values, mask) / counts
        if self.config.normalize:
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            values = values / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(values, dtype=np.float32)

    def label(self, index: int) -> str:
        labels = self.labels
        return labels[index] if labels is not None and index < len(labels) else str(index)


def string_inputs(config: TextPreprocessing) -> tuple[str, ...]:
    """The BYTES inputs clients send: the texts, or (answer) the questions and their contexts."""
    if config.task == "answer":
        return config.question_input, config.context_input
    return (config.input_name,)


def _as_text(index: int, item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"text {index} is not UTF-8") from None
    raise InvalidInput(f"text {index} is a {type(item).__name__}, not a string")


def _to_width(values: np.ndarray, width: int, pad: int) -> np.ndarray:
    """Rows cut or padded (with `pad`) to `width` columns."""
    if values.shape[1] >= width:
        return values[:, :width]
    padded = np.full((values.shape[0], width), pad, dtype=values.dtype)
    padded[:, :values.shape[1]] = values
    return padded


def _runs(kept: np.ndarray, lengths: np.ndarray, max_padding: float) -> list[np.ndarray]:
    """The kept texts sorted by length and cut into runs whose padding (to the run's longest text) stays within
    `max_padding` of the run's tokens: a batch of unequal texts costs about its real tokens, not its count times
    the longest."""
    ordered = kept[np.argsort(lengths[kept], kind="stable")]
    runs, start, tokens = [], 0, 0
    for position, row in enumerate(ordered):
        length = int(lengths[row])
        if position > start and tokens + length < (1 - max_padding) * (position - start + 1) * length:
            runs.append(ordered[start:position])
            start, tokens = position, 0
        tokens += length
    runs.append(ordered[start:])
    return runs


def _find(directories: list[Path], name: str) -> Path | None:
    return next((directory / name for directory in directories if (directory / name).is_file()), None)


def _pad_id(tokenizer: Tokenizer) -> int:
    padding = tokenizer.padding
    if padding is not None:
        return int(padding["pad_id"])
    ids = (tokenizer.token_to_id(token) for token in _PAD_TOKENS)
    return next((token_id for token_id in ids if token_id is not None), 0)


def load_tokenizer(path: Path, config: TextPreprocessing) -> Tokenizer:
    """The tokenizer as the server runs it: padding to the batch's longest text; truncation at max_length (off:
    at one token past it, so that an over-long text is found without tokenizing all of it into the batch)."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises its own exception type for unreadable files
        raise ConfigError(f"{path} is not a tokenizer.json the `tokenizers` library reads: {exc}") from None
    pad_id = _pad_id(tokenizer)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
    # a question and its context: only the context is cut
    strategy = "only_second" if config.task == "answer" else "longest_first"
    tokenizer.enable_truncation(config.max_length + (0 if config.truncation else 1), strategy=strategy)
    return tokenizer


def _model_input(signature: Signature, model: str, role: str, configured: str | None) -> TensorSpec | None:
    name = configured or _USUAL_NAMES[role]
    spec = signature.input(name)
    if spec is None and configured is not None:
        raise ConfigError(f"model {model!r}: field 'text.inputs.{role}' names {name!r}, which is not a model input")
    if spec is not None and (spec.rank != 2 or spec.type.numpy.kind not in "iu"):
        raise ConfigError(f"model {model!r}: input {name!r} of shape {list(spec.shape)} and type {spec.type.v2} "
                          "does not take token ids as [batch, sequence] integers")
    return spec


def _labels(directories: list[Path], config: TextPreprocessing, model: str) -> list[str] | None:
    if config.labels_file is not None:
        path = _find(directories, config.labels_file)
        if path is None:
            raise ConfigError(f"model {model!r}: field 'text.labels_file': {config.labels_file} is in neither "
                              f"{directories[0]} nor {directories[1]}")
        return path.read_text().splitlines()
    hf_config = _find(directories, "config.json")  # a Hugging Face config's id2label
    if hf_config is None:
        return None
    try:
        id2label = json.loads(hf_config.read_text()).get("id2label") or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    return [str(id2label.get(str(index), index)) for index in range(len(id2label))] or None


def bind_text_model(model: str, version_dir: Path, config: TextPreprocessing, signature: Signature) -> TextModel:
    """Check the text settings against the model signature; load the tokenizer and labels."""
    directories = [version_dir, version_dir.parent]
    tokenizer_path = _find(directories, config.tokenizer)
    if tokenizer_path is None:
        raise ConfigError(f"model {model!r}: field 'text.tokenizer': {config.tokenizer} is in neither "
                          f"{version_dir} nor {version_dir.parent}")
    ids = _model_input(signature, model, "ids", config.inputs.ids)
    if ids is None:
        raise ConfigError(f"model {model!r}: no input named 'input_ids'; name the token ids input in "
                          "'text.inputs.ids'")
    mask = _model_input(signature, model, "mask", config.inputs.mask)
    type_ids = _model_input(signature, model, "type_ids", config.inputs.type_ids)
    fed = {spec.name for spec in (ids, mask, type_ids) if spec is not None}
    unfed = [spec.name for spec in signature.inputs if spec.name not in fed]
    if unfed:
        raise ConfigError(f"model {model!r}: the tokenizer feeds {sorted(fed)}, but the model also takes {unfed}; "
                          "name them in 'text.inputs'")
    if config.task == "answer":
        output, end_output = _span_outputs(signature, model)
    else:
        output, end_output = signature.output(config.output) if config.output else signature.outputs[0], None
    if output is None:
        raise ConfigError(f"model {model!r}: field 'text.output' names {config.output!r}, which is not a model "
                          "output")
    ranks, wanted = {"embed": ((2, 3), "[batch, hidden] or [batch, sequence, hidden]"),
                     "tag": ((3,), "[batch, sequence, labels]"),
                     "answer": ((2,), "[batch, sequence]")}.get(config.task, ((2,), "[batch, classes]"))
    for checked in (output, end_output) if config.task != "predict" else ():
        if checked is not None and checked.rank not in ranks:
            raise ConfigError(f"model {model!r}: output {checked.name!r} of shape {list(checked.shape)} is not a "
                              f"{wanted} tensor, as text.task {config.task!r} needs")
    width = output.shape[-1]
    strings = tuple(TensorSpec(name, BY_V2["BYTES"], (DYNAMIC,)) for name in string_inputs(config))
    if config.task == "predict":
        outputs = signature.outputs
    elif config.task == "embed":
        outputs = (TensorSpec(EMBEDDINGS, BY_V2["FP32"], (DYNAMIC, width)),)
    elif config.task == "tag":
        outputs = (TensorSpec(ENTITIES, BY_V2["BYTES"], (DYNAMIC,)),)
    elif config.task == "answer":
        outputs = (TensorSpec(ANSWER, BY_V2["BYTES"], (DYNAMIC,)), TensorSpec(SCORE, BY_V2["FP32"], (DYNAMIC,)),
                   TensorSpec(START, BY_V2["INT64"], (DYNAMIC,)), TensorSpec(END, BY_V2["INT64"], (DYNAMIC,)))
    else:
        outputs = (TensorSpec(SCORES, BY_V2["FP32"], (DYNAMIC, width)), TensorSpec(LABELS, BY_V2["BYTES"], (DYNAMIC,)))
    labels = _labels(directories, config, model) if config.task in ("classify", "tag") else None
    return TextModel(model, config, load_tokenizer(tokenizer_path, config), ids, mask, type_ids, output, labels,
                     Signature(strings, outputs), end_output)


def _span_outputs(signature: Signature, model: str) -> tuple[TensorSpec, TensorSpec]:
    """An extractive question-answering model's start and end logits: the outputs so named, else its two."""
    named = signature.output("start_logits"), signature.output("end_logits")
    if named[0] is not None and named[1] is not None:
        return named[0], named[1]
    if len(signature.outputs) == 2:
        return signature.outputs[0], signature.outputs[1]
    raise ConfigError(f"model {model!r}: text.task 'answer' needs the start and end logits: outputs named "
                      f"'start_logits' and 'end_logits', or two outputs; it has {[o.name for o in signature.outputs]}")
