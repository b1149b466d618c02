"""One conversion: load the source, export to ONNX, check it, prove parity, publish it as a new version."""

from __future__ import annotations

import importlib
import logging
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ortserve.convert import huggingface, parsed_examples, pytorch, sklearn, tensorflow, tf_warmup
from ortserve.convert.chatter import hushed
from ortserve.convert.parity import ParityReport, compare, instability, nudged
from ortserve.convert.spec import InputSpec, with_rows
from ortserve.convert.writer import check, file_sha256, publish, scratch_dir
from ortserve.errors import InvalidInput
from ortserve.indexed_inputs import indexed_rows
from ortserve.runtime.ort_guard import unsafe_optimizers

log = logging.getLogger(__name__)
DEFAULT_OPSET = 18
SKLEARN_SUFFIXES = {".pkl", ".pickle", ".joblib"}
PARITY_ELEMENTS = 8 * 224 * 224 * 3  # eight ImageNet-sized images
_MODULES = {"pytorch": "torch", "tensorflow": "tensorflow", "sklearn": "sklearn", "huggingface": "transformers"}
_ORT_ERRORS = "onnxruntime.capi.onnxruntime_pybind11_state"  # the module of ONNX Runtime's exception types
TORCH_FILE_SUFFIXES = {".pt", ".pth", ".torchscript", ".pt2"}


@dataclass(frozen=True)
class ConvertRequest:
    source: str  # package.module:factory, or a .pkl/.joblib file
    repository: Path
    model: str
    inputs: list[InputSpec]
    outputs: list[str] | None = None
    weights: Path | None = None
    opset: int = DEFAULT_OPSET
    exporter: str = "auto"  # PyTorch: auto (torch.export, else TorchScript), torch.export or torchscript
    samples: int = 8
    value_range: tuple[float, float] = (-1.0, 1.0)
    samples_file: Path | None = None  # .npz with one array per input name
    atol: float = 1e-4
    rtol: float = 1e-3
    version: int | None = None  # the version number to write (default: the model's next)
    signature: str | None = None  # a SavedModel's signature (default: serving_default, or its only one)
    unsafe_deserialization: bool = False  # a Keras file may run its Python code (Lambda layers) as it loads


@dataclass(frozen=True)
class ConvertResult:
    version_dir: Path
    parity: ParityReport
    exporter: str


def _framework(source: str) -> str:
    path = Path(source)
    if path.exists() and tensorflow.is_source(path):
        return "tensorflow"
    if huggingface.is_source(path):
        return "huggingface"
    if path.suffix in SKLEARN_SUFFIXES | TORCH_FILE_SUFFIXES | tensorflow.KERAS_SUFFIXES:
        if not path.is_file():
            raise InvalidInput(f"source {source!r} does not exist")
        return "sklearn" if path.suffix in SKLEARN_SUFFIXES else "pytorch"
    if ":" in source and not path.exists():
        return "pytorch"
    if path.exists():
        raise InvalidInput(f"source {source!r}: unsupported kind; give a package.module:factory entry point, a "
                           f"{'/'.join(sorted(TORCH_FILE_SUFFIXES))} file (PyTorch), a SavedModel directory or "
                           f"{'/'.join(sorted(tensorflow.KERAS_SUFFIXES))} file (TensorFlow), or a "
                           f"{'/'.join(sorted(SKLEARN_SUFFIXES))} file (scikit-learn)")
    raise InvalidInput(f"source {source!r} does not exist")


def _sample_feeds(request: ConvertRequest, inputs: list[InputSpec],
                  sample: Callable[[int, np.random.Generator], list[np.ndarray]] | None = None) -> list[np.ndarray]:
    if request.samples_file is not None:
        if not request.samples_file.is_file():
            raise InvalidInput(f"samples file {str(request.samples_file)!r} does not exist")
        stored = np.load(request.samples_file)
        missing = [spec.name for spec in inputs if spec.name not in stored]
        if missing:
            raise InvalidInput(f"samples file has no array for inputs {missing}")
        return [stored[spec.name].astype(spec.dtype) for spec in inputs]
    rng = np.random.default_rng(0)
    count = _parity_rows(request.samples, inputs)
    if sample is not None:
        return sample(count, rng)
    low, high = request.value_range
    feeds = []
    for spec in inputs:
        shape = list(spec.sample_shape())
        if spec.dims and spec.dims[0] == "batch":
            shape[0] = count
        feeds.append(replace(spec, dims=tuple(shape)).sample(rng, low, high))
    return feeds


def _parity_rows(asked: int, inputs: list[InputSpec]) -> int:
    """Generated parity samples: as many as asked, but no more elements than PARITY_ELEMENTS (and at least two):
    both frameworks run them as one batch, and eight 600x600 images through EfficientNetB7 in eager TensorFlow
    took more memory than this 24 GB machine has."""
    per_row = sum(math.prod(spec.sample_shape()[1:]) for spec in inputs if spec.dims and spec.dims[0] == "batch")
    if not per_row:
        return asked
    return max(min(asked, PARITY_ELEMENTS // per_row), min(asked, 2))


@dataclass(frozen=True)
class LoadedSource:
    """A source model in its own framework: what it takes, how it runs, how it exports."""

    framework: str  # pytorch, tensorflow or sklearn
    inputs: list[InputSpec]
    run: Callable[[list[np.ndarray]], list[np.ndarray]]  # the framework's outputs, in the exported order
    export: Callable[[Path], str]  # writes the ONNX file; the exporter used
    versions: dict[str, str]  # of the framework and exporter
    record: dict[str, Any]  # what provenance says of the source
    sample: Callable[[int, np.random.Generator], list[np.ndarray]] | None = None  # valid parity samples, if special
    files: dict[str, Path] = field(default_factory=dict)  # carried into the version directory, by name
    settings: dict[str, Any] = field(default_factory=dict)  # config.yaml sections the model is served with


def load_source(request: ConvertRequest) -> LoadedSource:
    """Load the source named by the request with its framework (imported only then)."""
    framework = _framework(request.source)
    importlib.import_module(_MODULES[framework])  # before hushed(): its import sets its loggers' levels
    with hushed():
        return _load(framework, request)


def _load(framework: str, request: ConvertRequest) -> LoadedSource:
    record: dict[str, Any] = {"source": request.source}
    if framework == "pytorch":
        import torch

        if not request.inputs:
            raise InvalidInput("declare the model inputs with --input name:dtype:dims")
        source_path = Path(request.source)
        if source_path.suffix in TORCH_FILE_SUFFIXES:
            module = pytorch.load_file(source_path)
            record["source_sha256"] = file_sha256(source_path)
        else:
            module = pytorch.load_module(request.source, request.weights)
        if request.weights is not None:
            record["weights"] = str(request.weights)
            record["weights_sha256"] = file_sha256(request.weights)
        return LoadedSource(
            framework, request.inputs, lambda feeds: pytorch.run(module, feeds),
            lambda path: pytorch.export(module, request.inputs, request.outputs, path, request.opset,
                                        request.exporter),
            {"torch": torch.__version__, "onnxscript": _version("onnxscript")}, record)
    if framework == "huggingface":
        return _load_huggingface(request, record)
    if framework == "tensorflow":
        import tensorflow as tf
        import tf2onnx

        tf_model = tensorflow.load(Path(request.source), request.inputs, request.signature,
                                   request.unsafe_deserialization)
        files: dict[str, Path] = {}
        if Path(request.source).is_file():
            record["source_sha256"] = file_sha256(Path(request.source))
        else:
            warmup = tf_warmup.warmup_samples(Path(request.source), tf_model.inputs,
                                              Path(tempfile.mkdtemp(prefix="ortserve-warmup-")),
                                              _string_input(tf_model))
            if warmup is not None:
                files[warmup.name] = warmup

        def export_tf(path: Path) -> str:
            tensorflow.convert(tf_model, request.opset, path)
            return "tf2onnx"

        settings: dict[str, Any] = {}
        versions = {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}
        if tf_model.keras_file is not None:
            versions[tf_model.keras_file.loader] = tf_model.keras_file.loader_version
            record["keras_saved_by"] = tf_model.keras_file.saved_by
        lookups = tf_model.frozen.lookups if tf_model.frozen is not None else None
        if lookups is not None and lookups.tables:
            looked_up = {spec.name: len(spec.known) for spec in tf_model.inputs if spec.known is not None}
            record["lookup_tables"] = {"tables": len(lookups.tables), "inputs": looked_up}
            log.info("the graph looks keys up in %d table(s), each converted into an ONNX LabelEncoder holding its "
                     "keys and values (inputs looked up: %s)", len(lookups.tables),
                     ", ".join(looked_up) or "none directly")
        if tf_model.parsed is not None:
            settings["examples_input"] = record["parsed_examples"] = tf_model.parsed.string_input
        text = tf_model.text
        if text is not None:
            settings["text"] = text.settings
            files["tokenizer.json"] = text.tokenizer
            record["text_vectorization"] = {"input": text.string_input, "vocabulary": len(text.vocabulary),
                                            "sequence_length": text.spec.dims[1]}
            log.info("input %r takes text, which the graph splits into token ids: the model is converted from its "
                     "token ids on, and ortserve splits the text with the tokenizer.json written beside it, checked "
                     "against the graph's own split", text.string_input)
        images = tf_model.images
        if images is not None:
            settings["image"] = images.settings
            record["decoded_images"] = {"input": images.string_input, "pixel_levels_off": images.pixel_levels_off}
            log.info("input %r takes encoded images, which the graph decodes: the model is converted from its decoded "
                     "images on, and ortserve decodes them as config.yaml's image section says (%.2f pixel levels "
                     "from the graph's own preprocessing, rms): %s", images.string_input, images.pixel_levels_off,
                     images.settings)
        sample = images.sample if images is not None else text.sample if text is not None else None
        return LoadedSource(framework, tf_model.inputs, lambda feeds: tensorflow.run(tf_model, feeds), export_tf,
                            versions, record, sample, files, settings)
    estimator = sklearn.load_estimator(Path(request.source))
    name = request.inputs[0].name if request.inputs else "input"
    features = sklearn.features(estimator)
    record["source_sha256"] = file_sha256(Path(request.source))
    column_inputs = None if request.inputs else sklearn.columns(estimator)

    shapes: list[tuple[int | None, ...]] = []  # the exported outputs', which the estimator's answers take

    def export_sklearn(path: Path) -> str:
        shapes[:] = sklearn.convert(estimator, name, features, request.opset, path, column_inputs)
        return "skl2onnx"

    if column_inputs is not None:
        return LoadedSource(framework, column_inputs,
                            lambda feeds: sklearn.run_columns(estimator, column_inputs, feeds, shapes), export_sklearn,
                            {"scikit-learn": _version("scikit-learn"), "skl2onnx": _version("skl2onnx")}, record,
                            sklearn.column_samples(estimator, column_inputs, *request.value_range))
    return LoadedSource(framework, [InputSpec(name, np.dtype(np.float32), ("batch", features))],
                        lambda feeds: sklearn.run(estimator, feeds[0], shapes), export_sklearn,
                        {"scikit-learn": _version("scikit-learn"), "skl2onnx": _version("skl2onnx")}, record)


def _string_input(tf_model: tensorflow.TfModel) -> tf_warmup.StringInput | None:
    """The signature's string input of a model converted from behind it (parsed tf.Examples, decoded images, split
    text)."""
    parsing, images = tf_model.parsed, tf_model.images
    if parsing is not None:
        return tf_warmup.StringInput(parsing.string_input,
                                     lambda strings: parsed_examples.parsed(parsing.features, strings), True)
    if images is not None:
        return tf_warmup.StringInput(images.string_input, images.read, False)
    if tf_model.text is not None:
        return tf_warmup.StringInput(tf_model.text.string_input, tf_model.text.read, False)
    return None


def _load_huggingface(request: ConvertRequest, record: dict[str, Any]) -> LoadedSource:
    import torch
    import transformers

    source = Path(request.source)
    model = huggingface.load(source)
    record.update({"architecture": model.architecture, "task": model.task})
    files = dict(model.files)
    labels = huggingface.labels(source) if model.task.endswith("classification") else None
    if labels:
        written = Path(tempfile.mkdtemp(prefix="ortserve-labels-")) / "labels.txt"
        written.write_text("\n".join(labels) + "\n")
        files["labels.txt"] = written
    return LoadedSource(
        "huggingface", model.inputs, lambda feeds: pytorch.run(model.module, feeds),
        lambda path: pytorch.export(model.module, model.inputs, request.outputs or model.outputs, path,
                                    request.opset, request.exporter),
        {"torch": torch.__version__, "transformers": transformers.__version__}, record, model.sample, files,
        model.settings)


def convert(request: ConvertRequest, loaded: LoadedSource | None = None) -> ConvertResult:
    """Convert the source (`loaded`, when the caller has loaded it already), prove parity, publish."""
    started = time.perf_counter()
    if request.version is not None and (request.repository / request.model / str(request.version)).exists():
        raise InvalidInput(f"model {request.model!r} has a version {request.version} already; nothing was written")
    loaded = loaded or load_source(request)
    framework, inputs, source, versions = loaded.framework, loaded.inputs, loaded.record, loaded.versions
    with scratch_dir(request.repository) as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        log.info("exporting the %s model to ONNX ...", framework)
        with hushed():
            exporter = loaded.export(onnx_path)
        log.info("checking it and its parity with %s ...", framework)
        feeds = _sample_feeds(request, with_rows(inputs, indexed_rows(onnx_path)), loaded.sample)
        expected = _run_source(loaded, feeds)
        check(onnx_path)
        actual, names = _run_onnx(onnx_path, {spec.name: feed for spec, feed in zip(inputs, feeds, strict=True)})
        parity = compare(names, expected, actual, request.atol, request.rtol, len(feeds[0]))
        log.debug("%s", parity.text())
        if not parity.passed:
            raise InvalidInput(f"the ONNX model does not match the {framework} model; nothing was written\n"
                               + parity.text() + _source_instability(loaded, feeds, expected, parity, request))
        provenance = {
            **source,
            "framework": framework,
            "exporter": exporter,
            "opset": request.opset,
            "inputs": [{"name": s.name, "dtype": s.dtype.name, "dims": list(s.dims)} for s in inputs],
            "outputs": names,
            "versions": {**versions, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                         "python": platform.python_version()},
            "model_sha256": file_sha256(onnx_path),
            "parity": parity.as_dict(),
            "seconds": round(time.perf_counter() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        version_dir = publish(request.repository, request.model, onnx_path, provenance, loaded.files,
                              loaded.settings, request.version)
    return ConvertResult(version_dir, parity, exporter)


def _source_instability(loaded: LoadedSource, feeds: list[np.ndarray], expected: list[np.ndarray],
                        parity: ParityReport, request: ConvertRequest) -> str:
    """What the source model does with the samples moved by rounding: when it fails parity with itself, the
    failure is the model's, and the message says so."""
    moved = nudged(feeds)
    if moved is None:
        return ""
    try:
        again = _run_source(loaded, moved)
    except InvalidInput:  # the source failed on the moved samples: the parity failure stays the error reported
        return ""
    itself = compare([o.name for o in parity.outputs], expected, again, request.atol, request.rtol, parity.samples)
    return instability(loaded.framework, parity, itself)


def _run_source(loaded: LoadedSource, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """The source model's outputs on the parity samples; its framework's errors (of any type) are this step's."""
    try:
        with hushed():
            return loaded.run(feeds)
    except Exception as exc:
        shapes = ", ".join(f"{spec.name} {list(feed.shape)}" for spec, feed in zip(loaded.inputs, feeds, strict=True))
        raise InvalidInput(f"parity check: the {loaded.framework} model failed on the samples ({shapes}): "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """The exported model's outputs on the parity samples, and their names. ONNX Runtime's own errors (its
    exceptions derive from Exception alone) are the parity step's: the model passed the checker but cannot run."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                       disabled_optimizers=unsafe_optimizers(path))
        return session.run(None, feeds), [output.name for output in session.get_outputs()]
    except Exception as exc:
        if type(exc).__module__ != _ORT_ERRORS:
            raise
        raise InvalidInput(f"parity check: ONNX Runtime cannot run the exported model: "
                           f"{str(exc).splitlines()[0][:400]}") from None


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"
