"""Keras models that split their text in the graph: a TextVectorization layer in front of the network lowercases
each string, strips its punctuation, splits it on whitespace, looks each word up in a vocabulary table and pads or
cuts the ids to a length. ONNX has no such ops and the table cannot be frozen into constants, so the model is
converted from the token ids on, and the layer becomes a `tokenizers` tokenizer.json (its normalization, split and
vocabulary, read from the graph and its table) behind a config.yaml `text:` section of task `predict`: clients
send the same strings, and get the model's own outputs.

The tokenizer is checked against the graph on sample texts (case, punctuation, unknown words, runs of spaces):
the token ids must be the same, or the model is refused by name.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.convert.graph_cut import captured_by_placeholder, cuts_off, past_identities, without_control_inputs
from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput

_SPLIT, _LOOKUP, _DENSE = "StringSplitV2", "LookupTableFindV2", "RaggedTensorToTensor"
_PASSING = frozenset({"Identity", "Squeeze", "Reshape", "ExpandDims"})  # shape only: the text is unchanged
TOKEN_IDS = "token_ids"  # the ONNX model's input
UNKNOWN, PADDING = "[UNK]", "[PAD]"
_SAMPLE_WORDS = ("Hello,", "WORLD!", "it's", "don't", "naïve", "café", "e-mail", "(maybe)", "#tag", "x_y", "42",
                 "3.14", "a", "")


@dataclass(frozen=True)
class VectorizedText:
    string_input: str  # the signature's input of strings
    tensor: str  # the token ids in the frozen graph, where the ONNX graph starts
    spec: InputSpec  # what the ONNX model takes: TOKEN_IDS, [batch, length or "sequence"]
    tokenizer: Path  # the written tokenizer.json
    settings: dict[str, Any]  # the model's config.yaml `text:` section
    graph_def: Any  # the frozen graph, the table's control dependencies dropped
    vectorize: Callable[[np.ndarray], np.ndarray]  # the graph's own: texts (1-D) into token ids
    run: Callable[[list[np.ndarray]], list[np.ndarray]]  # the graph from the token ids on: its outputs
    vocabulary: list[str]  # by id, for samples

    def read(self, texts: np.ndarray) -> dict[str, np.ndarray]:
        """A TF Serving warmup request's texts as the model's input, split by the graph."""
        return {TOKEN_IDS: self.vectorize(texts)}

    def sample(self, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Parity samples: texts of known and unknown words, split by the graph itself."""
        return [self.vectorize(_texts(rng, self.vocabulary, count))]


def find_vectorizer(graph_def: Any, signature: Any, inputs: list[InputSpec], input_tensors: list[str],
                    output_tensors: list[str]) -> VectorizedText | None:
    """The text vectorization of a signature of one string input; None when its graph splits no text."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    ops = {node.op for node in graph_def.node}
    if len(inputs) != 1 or inputs[0].dtype != object or not {_SPLIT, _LOOKUP, _DENSE} <= ops:
        return None
    string_input, input_tensor = inputs[0].name, input_tensors[0]
    splits, lookups, denses = ([node for node in graph_def.node if node.op == op] for op in (_SPLIT, _LOOKUP, _DENSE))
    if len(splits) != 1 or len(lookups) != 1 or len(denses) != 1:
        raise InvalidInput(f"the signature splits its text {len(splits)} times ({len(lookups)} lookups); ortserve "
                           "converts a model with one TextVectorization layer")
    split, lookup, dense = splits[0], lookups[0], denses[0]
    normalizer = _normalizer(nodes, split, input_tensor.split(":")[0])
    if _constant(nodes, split.input[1]) != b"":
        raise InvalidInput("the signature splits its text on a separator; ortserve's tokenizer reproduces a split "
                           "on whitespace (TextVectorization's default)")
    table = past_identities(nodes, lookup.input[0])
    captured = captured_by_placeholder(signature)
    if table not in captured:
        raise InvalidInput(f"the vocabulary table of the text lookup ({table!r}) is not one the signature holds")
    keys, values = tf.raw_ops.LookupTableExportV2(table_handle=captured[table], Tkeys=tf.string, Tvalues=tf.int64)
    default = _default_id(nodes, lookup.input[2], captured)
    start = f"{dense.name}:0"
    graph_def = without_control_inputs(graph_def)
    producers = {node.name: node for node in graph_def.node}
    for source in (input_tensor.split(":")[0], table):
        if not cuts_off(producers, source, start, output_tensors):
            raise InvalidInput("the signature uses its text or vocabulary beyond the token ids it looks up; "
                               "ortserve converts a model whose network takes the token ids only")
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    tensor = graph.get_tensor_by_name(start)
    to_ids = wrapped.prune(feeds=[graph.get_tensor_by_name(name) for name in (input_tensor, f"{table}:0")],
                           fetches=[tensor])
    from_ids = wrapped.prune(feeds=[tensor], fetches=[graph.get_tensor_by_name(name) for name in output_tensors])
    two_dimensional = inputs[0].dims[1:] == (1,)

    def vectorize(texts: np.ndarray) -> np.ndarray:
        flat = tf.constant([_as_bytes(text) for text in texts.reshape(-1)], dtype=tf.string)
        return np.asarray(to_ids(tf.reshape(flat, [-1, 1]) if two_dimensional else flat, captured[table])[0])

    def run(feeds: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(output) for output in from_ids(tf.constant(feeds[0]))]

    length = tensor.shape[1] if tensor.shape.rank == 2 else None
    vocabulary = {key.decode("utf-8"): int(value) for key, value in zip(keys.numpy(), values.numpy(), strict=True)}
    folder = Path(tempfile.mkdtemp(prefix="ortserve-tokenizer-"))
    tokenizer = _tokenizer(normalizer, vocabulary, default)
    written = folder / "tokenizer.json"
    tokenizer.save(str(written))
    by_id = [""] * (max(vocabulary.values(), default=0) + 1)
    for word, index in vocabulary.items():
        by_id[index] = word
    _check(tokenizer, vectorize, by_id, length)
    settings: dict[str, Any] = {"task": "predict", "input_name": string_input, "inputs": {"ids": TOKEN_IDS}}
    if length is None:
        settings["max_padding"] = 0.0  # each text padded to its own length: its answer never depends on others
    else:
        settings["max_length"] = int(length)
    spec = InputSpec(TOKEN_IDS, np.dtype(tensor.dtype.as_numpy_dtype), ("batch", int(length) if length else "sequence"))
    return VectorizedText(string_input, start, spec, written, settings, graph_def, vectorize, run, by_id)


def _normalizer(nodes: dict[str, Any], split: Any, source: str) -> list[tuple[str, ...]]:
    """What the graph does to the text between its input and the split, in order: ("lower",) or ("replace",
    pattern, rewrite); an op ortserve's tokenizer does not reproduce is refused by name."""
    steps: list[tuple[str, ...]] = []
    name = split.input[0].split(":")[0]
    while name != source:
        node = nodes[name]
        if node.op == "StringLower":
            steps.append(("lower",))
        elif node.op == "StaticRegexReplace":
            if not node.attr["replace_global"].b:
                raise InvalidInput("the signature replaces only the first match of a pattern in its text; ortserve's "
                                   "tokenizer replaces every match")
            steps.append(("replace", node.attr["pattern"].s.decode(), node.attr["rewrite"].s.decode()))
        elif node.op not in _PASSING:
            raise InvalidInput(f"the signature runs {node.op} on its text before splitting it, which ortserve's "
                               "tokenizer does not reproduce (it lowercases and replaces patterns, as "
                               "TextVectorization's standardize does)")
        name = node.input[0].split(":")[0]
    return steps[::-1]


def _tokenizer(steps: list[tuple[str, ...]], vocabulary: dict[str, int], unknown_id: int) -> Any:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    words = dict(vocabulary)
    unknown = UNKNOWN if UNKNOWN not in words or words[UNKNOWN] == unknown_id else f"{UNKNOWN}#{unknown_id}"
    words[unknown] = unknown_id
    tokenizer = Tokenizer(models.WordLevel(words, unk_token=unknown))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase() if step[0] == "lower"
                                                 else normalizers.Replace(Regex(step[1]), step[2])
                                                 for step in steps])
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.enable_padding(pad_id=0, pad_token=PADDING)
    return tokenizer


def _check(tokenizer: Any, vectorize: Callable[[np.ndarray], np.ndarray], vocabulary: list[str],
           length: int | None) -> None:
    """The tokenizer's ids for sample texts are the graph's, or the model is refused with the first that differs."""
    texts = _texts(np.random.default_rng(0), vocabulary, 64)
    theirs = vectorize(texts)
    for text, row in zip(texts, theirs, strict=True):
        ours = tokenizer.encode(text).ids
        ours = (ours + [0] * len(row))[:len(row)] if length is not None else ours
        if list(row[:len(ours)]) != ours or any(row[len(ours):]):
            raise InvalidInput(f"the signature splits the text {text!r} into token ids {list(row)}, and ortserve's "
                               f"tokenizer of its vocabulary into {ours}: the model's text preparation is not one "
                               "it reproduces")


def _texts(rng: np.random.Generator, vocabulary: list[str], count: int) -> np.ndarray:
    """Texts of known words, written with capitals and punctuation, and unknown ones, in runs of spaces."""
    known = [word for word in vocabulary if word and word != UNKNOWN] or ["word"]
    texts = []
    for _ in range(count):
        words = []
        for _ in range(int(rng.integers(0, 12))):
            word = str(rng.choice(known)) if rng.random() < 0.7 else str(rng.choice(_SAMPLE_WORDS))
            words.append(word.upper() if rng.random() < 0.2 else word + ("," if rng.random() < 0.2 else ""))
        texts.append((" " * int(rng.integers(1, 3))).join(words))
    array = np.empty(count, dtype=object)
    array[:] = texts
    return array


def _constant(nodes: dict[str, Any], tensor: str) -> Any:
    """A scalar constant's value (through Identity nodes); None when the tensor is not one."""
    import tensorflow as tf

    node = nodes.get(past_identities(nodes, tensor))
    if node is None or node.op != "Const":
        return None
    values = np.asarray(tf.make_ndarray(node.attr["value"].tensor)).reshape(-1)
    return values[0] if values.size == 1 else None


def _default_id(nodes: dict[str, Any], tensor: str, captured: dict[str, Any]) -> int:
    """The id the lookup gives a word not in the vocabulary: a constant, or a captured scalar."""
    value = _constant(nodes, tensor)
    if value is not None:
        return int(value)
    name = past_identities(nodes, tensor)
    if name in captured:
        return int(np.asarray(captured[name]))
    raise InvalidInput("the text lookup's id for unknown words is computed in the graph; ortserve's tokenizer takes "
                       "a fixed one")


def _as_bytes(text: object) -> bytes:
    return text if isinstance(text, bytes) else str(text).encode("utf-8")
