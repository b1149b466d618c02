"""ONNX back to a TensorFlow SavedModel for TF Serving, via onnx2tf, with parity proven before anything is written.

onnx2tf's own pins clash with this environment (its 1.29 line pins old TensorFlow, numpy and onnx), so ortserve
installs onnx2tf 1.28.8, which declares no dependencies, with its helpers into a directory of its own under
$ORTSERVE_HOME and runs it in a subprocess with that directory on PYTHONPATH (and its `onnxsim` command on PATH).
TensorFlow itself comes from the `convert` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortserve.convert.parity import ParityReport, compare
from ortserve.convert.writer import next_version
from ortserve.errors import InvalidInput
from ortserve.optimize.data import Samples
from ortserve.optimize.source import ModelSource, refuse_quantized
from ortserve.runtime.ort_guard import unsafe_optimizers

ONNX2TF_VERSION = "1.28.8"
TOOL_PACKAGES = (f"onnx2tf=={ONNX2TF_VERSION}", "onnx-graphsurgeon==0.6.1", "sng4onnx==2.0.1", "tf-keras==2.21.0",
                 "ai-edge-litert==2.3.0", "onnxsim==0.8.1", "psutil==7.2.2")
# onnx2tf fetches this sample for some 4-D inputs unless a file of that name is in its working directory
CALIBRATION_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
Progress = Callable[[str], None]


def home() -> Path:
    return Path(os.environ.get("ORTSERVE_HOME") or Path.home() / ".cache" / "ortserve")


def tool_directory() -> Path:
    return home() / f"onnx2tf-{ONNX2TF_VERSION}"


def ensure_tool(progress: Progress = print) -> Path:
    """onnx2tf and its helpers, installed once (whole or not at all) into ortserve's own directory."""
    target = tool_directory()
    if (target / ".complete").is_file():
        return target
    progress(f"installing onnx2tf {ONNX2TF_VERSION} into {target} (once) ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onnx2tf-", dir=target.parent) as scratch:
        staged = Path(scratch) / "packages"
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                 "--no-deps", "--target", str(staged), *TOOL_PACKAGES],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InvalidInput(f"could not install onnx2tf's packages ({' '.join(TOOL_PACKAGES)}): "
                               f"{result.stderr.strip().splitlines()[-1:]}")
        (staged / ".complete").write_text(" ".join(TOOL_PACKAGES) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    return target


@dataclass(frozen=True)
class ExportResult:
    version_dir: Path
    parity: ParityReport
    layout: str  # "nhwc" (onnx2tf's transposition of 4-D inputs) or "nchw"


def _calibration_sample(directory: Path) -> None:
    """Twenty 128x128 RGB crops in [0, 1] (the built-in photographs when installed), so onnx2tf fetches nothing."""
    try:
        from ortserve.optimize.data import builtin_photos

        photos = builtin_photos()
        crops = [np.asarray(photos[i % len(photos)].resize((128, 128)), np.float32) / 255 for i in range(20)]
        sample = np.stack(crops)
    except InvalidInput:  # without scikit-image: deterministic noise of the same shape and range
        sample = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    np.save(directory / CALIBRATION_FILE, sample.astype(np.float32))


def _run_onnx2tf(model: Path, output: Path, keep_nchw: list[str], work: Path, progress: Progress) -> None:
    tool = ensure_tool(progress)
    _calibration_sample(work)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tool),
                                                                              os.environ.get("PYTHONPATH")])),
                   "PATH": os.pathsep.join([str(tool / "bin"), os.environ.get("PATH", "")]),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "onnx2tf", "-i", str(model), "-o", str(output), "-osd", "-n"]
    if keep_nchw:
        command += ["-k", *keep_nchw]
    progress("converting with onnx2tf ...")
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (output / "saved_model.pb").is_file():
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise InvalidInput(f"onnx2tf could not convert {model.name}: " + " | ".join(lines[-3:]))


def _rename_outputs(converted: Path, target: Path, output_names: list[str]) -> None:
    """Re-save with serving_default's outputs named as the ONNX model's (onnx2tf names them output_0, ...)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(converted))
    inner = loaded.signatures["serving_default"]
    specs = inner.structured_input_signature[1]
    names = list(specs)
    produced = sorted(inner.structured_outputs, key=lambda name: int(name.rsplit("_", 1)[-1]))

    @tf.autograph.experimental.do_not_convert
    def serve(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = inner(**dict(zip(names, tensors, strict=True)))
        return {name: outputs[key] for name, key in zip(output_names, produced, strict=True)}

    function = tf.function(serve, input_signature=[specs[name] for name in names])
    module = tf.Module()
    module.inner = loaded
    module.serve = function
    tf.saved_model.save(module, str(target), signatures={"serving_default": function})


def _parity(source: Path, saved_model: Path, samples: Samples, atol: float, rtol: float) -> ParityReport:
    """ONNX Runtime against TensorFlow on the same samples, transposing 4-D tensors where the layouts differ."""
    import tensorflow as tf

    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=unsafe_optimizers(source))
    expected = session.run(None, samples.feeds)
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    feeds = {}
    for name, array in samples.feeds.items():
        spec = specs.get(name)
        if spec is None:
            raise InvalidInput(f"the SavedModel has no input {name!r}; it has {sorted(specs)}")
        transposed = array.ndim == 4 and _nhwc(spec.shape, array.shape)
        feeds[name] = tf.constant(array.transpose(0, 2, 3, 1) if transposed else array)
    outputs = serve(**feeds)
    names = [output.name for output in session.get_outputs()]
    actual = []
    for name, want in zip(names, expected, strict=True):
        got = outputs[name].numpy()
        if got.ndim == 4 and got.shape != want.shape and got.transpose(0, 3, 1, 2).shape == want.shape:
            got = got.transpose(0, 3, 1, 2)
        actual.append(got)
    return compare(names, expected, actual, atol, rtol, len(samples))


def _nhwc(tf_shape: object, onnx_shape: tuple[int, ...]) -> bool:
    """True when the SavedModel's 4-D input takes channels last where the ONNX model took them first."""
    dims = [-1 if d is None else d for d in list(tf_shape)]  # type: ignore[call-overload]

    def fits(wanted: list[int]) -> bool:
        return all(d in (-1, w) for d, w in zip(dims, wanted, strict=True))

    channels, height, width = onnx_shape[1:]
    return fits([-1, height, width, channels]) and not fits([-1, channels, height, width])


def export(source: ModelSource, export_dir: Path, samples: Samples, keep_nchw: bool = False, atol: float = 1e-4,
           rtol: float = 1e-3, progress: Progress = print) -> ExportResult:
    """Convert, prove parity, then publish as EXPORT_DIR/<model>/<next version>/ (TF Serving's layout)."""
    started = time.perf_counter()
    refuse_quantized(source.path, "onnx2tf converts FP32 graphs: export the FP32 model it came from instead")
    model = onnx.load(str(source.path), load_external_data=False)
    four_d = [i.name for i in model.graph.input if len(i.type.tensor_type.shape.dim) == 4]
    export_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-tf-", dir=export_dir) as scratch:
        work = Path(scratch)
        _run_onnx2tf(source.path.resolve(), work / "converted", four_d if keep_nchw else [], work, progress)
        staged = work / "staged"
        _rename_outputs(work / "converted", staged, [output.name for output in model.graph.output])
        progress("checking parity ...")
        parity = _parity(source.path, staged, samples, atol, rtol)
        if not parity.passed:
            raise InvalidInput("the SavedModel does not match the ONNX model; nothing was written\n" + parity.text())
        layout = "nchw" if keep_nchw or not four_d else "nhwc"
        extra = staged / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "provenance.json").write_text(json.dumps({
            "derived_from": source.describe(), "converter": f"onnx2tf {ONNX2TF_VERSION}",
            "tensorflow": metadata.version("tensorflow-cpu"), "layout": layout, "parity": parity.as_dict(),
            "seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
        model_dir = export_dir / source.name
        model_dir.mkdir(exist_ok=True)
        target = model_dir / str(next_version(model_dir))
        staged.rename(target)  # TF Serving picks up a version directory that appears whole
    return ExportResult(target, parity, layout)

