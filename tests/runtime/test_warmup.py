"""Warmup of models whose dynamic dimensions config.yaml leaves unsized: guessed until the model runs, else the
model is served without warmup; never left unloaded for a guess of ours."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortserve
from ortserve.examples.models import _model, save


def _conv_over_time(kernel: int) -> onnx.ModelProto:
    """audio [batch, 1, samples] -> Conv1d(2 filters of ones, `kernel` wide): refuses fewer samples than `kernel`."""
    weights = numpy_helper.from_array(np.ones((2, 1, kernel), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["audio", "w"], ["frames"], kernel_shape=[kernel])], "conv_over_time",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 1, "samples"])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 2, "steps"])], initializer=[weights])
    return _model(graph)


def _moving_sums(audio: np.ndarray, kernel: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(audio[:, 0], kernel, axis=-1).sum(axis=-1)
    return np.stack([windows, windows], axis=1)


def test_a_model_refusing_one_sample_is_warmed_up_with_more(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = save(_conv_over_time(kernel=5), tmp_path, "audio")
    with caplog.at_level(logging.INFO), ortserve.Engine.from_file(path, name="audio") as engine:
        served = engine.model("audio").resolve()
        assert served.warmup is not None and served.warmup.shapes == {"audio": [1, 16]}
        assert served.calibration is not None and served.calibration.measured
        audio = np.random.default_rng(0).standard_normal((2, 1, 9)).astype(np.float32)
        np.testing.assert_allclose(engine.predict("audio", audio)["frames"], _moving_sums(audio, 5), rtol=1e-5)
    assert "warmup runs inputs of shapes {'audio': [1, 16]}" in caplog.text


def test_a_model_refusing_every_guess_is_served_without_warmup(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = save(_conv_over_time(kernel=1500), tmp_path, "audio")
    with caplog.at_level(logging.INFO), ortserve.Engine.from_file(path, name="audio") as engine:
        served = engine.model("audio").resolve()
        assert served.warmup is not None and served.warmup.runs == 0
        assert served.calibration is not None and not served.calibration.measured
        audio = np.random.default_rng(1).standard_normal((1, 1, 1502)).astype(np.float32)
        np.testing.assert_allclose(engine.predict("audio", audio)["frames"], _moving_sums(audio, 1500), rtol=1e-4)
    assert "served without warmup" in caplog.text and "set warmup.shapes" in caplog.text


def test_configured_shapes_that_do_not_run_still_fail_the_load(tmp_path: Path) -> None:
    path = save(_conv_over_time(kernel=5), tmp_path, "audio")
    with pytest.raises(ortserve.InvalidInput, match=r"warmup failed \(set warmup.shapes\?\)"):
        ortserve.Engine.from_file(path, name="audio", warmup={"shapes": {"audio": [1, 3]}})


def test_configured_shapes_follow_a_model_found_not_to_batch(tmp_path: Path) -> None:
    """[batch, n] flattened to [batch * n]: served unbatched, so config.yaml's shape [5] (written past the batch
    dimension, as for a batched model) is warmed up as [1, 5], not refused as rank 1."""
    shape = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "flat"], ["y"])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["values"])], initializer=[shape])
    path = save(_model(graph), tmp_path, "flat")
    with ortserve.Engine.from_file(path, name="flat", warmup={"shapes": {"x": [5]}}) as engine:
        served = engine.model("flat").resolve()
        assert served.max_batch_size == 0 and served.warmup is not None
        assert served.warmup.shapes == {"x": [1, 5]}
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(engine.predict("flat", x)["y"], x.reshape(-1))


def test_a_model_refusing_zero_values_is_served_without_warmup(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Expand's second input is a shape: zeros are not one, whatever its size (ONNX's test_expand_shape_model1)."""
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"])], "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    path = save(_model(graph), tmp_path, "expand")
    with caplog.at_level(logging.INFO), ortserve.Engine.from_file(path, name="expand") as engine:
        x = np.arange(3, dtype=np.float32).reshape(3, 1)
        y = engine.predict("expand", {"x": x, "shape": np.array([3, 4], np.int64)})["y"]
        np.testing.assert_array_equal(y, np.broadcast_to(x, (3, 4)))
        with pytest.raises(ortserve.InvalidInput, match="invalid expand shape"):
            engine.predict("expand", {"x": x, "shape": np.array([0, 0], np.int64)})
    assert "served without warmup: it refused zero-filled inputs" in caplog.text


def _expand() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"])], "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    return _model(graph)


def test_the_models_own_samples_warm_up_what_zeros_cannot(tmp_path: Path) -> None:
    """warmup.npz beside model.onnx (numbers cast to the input's type where the kind is kept: float64 to float32)."""
    version_dir = save(_expand(), tmp_path, "expand").parent
    np.savez(version_dir / "warmup.npz", x=np.ones((3, 1)), shape=np.array([3, 4]))
    with ortserve.Engine(tmp_path) as engine:
        served = engine.model("expand").resolve()
        assert served.warmup is not None and served.warmup.runs == 1
        assert served.calibration is not None and served.calibration.measured


def test_samples_set_the_lengths_warmup_measures(tmp_path: Path) -> None:
    """A convolution over 1,500 samples refuses every guessed length; the model directory's samples of 1,600 run,
    in batches of any size (their 2 rows taken in turn), and the batch costs are measured on them."""
    save(_conv_over_time(kernel=1500), tmp_path, "audio")
    audio = np.random.default_rng(2).standard_normal((2, 1, 1600)).astype(np.float32)
    np.savez(tmp_path / "audio" / "recorded.npz", audio=audio)
    (tmp_path / "audio" / "config.yaml").write_text("warmup: {data: recorded.npz, batch_size: 5}\n")
    with ortserve.Engine(tmp_path) as engine:
        served = engine.model("audio").resolve()
        assert served.samples is not None and served.samples["audio"].shape == (2, 1, 1600)
        assert served.calibration is not None and served.calibration.measured
        assert served.max_batch_size > 1  # sized on the samples: zeros of a guessed length never ran
        np.testing.assert_allclose(engine.predict("audio", audio)["frames"], _moving_sums(audio, 1500), rtol=1e-4)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.ones((3, 1), np.float32)}, "missing input 'shape'"),
    ({"x": np.ones((3, 1), np.float32), "shape": np.array([3, 4]), "extra": np.ones(2)}, "unknown input 'extra'"),
    ({"x": np.ones((3, 2), np.float32), "shape": np.array([3, 4])}, "'x'"),
    ({"x": np.ones((3, 1), np.float32), "shape": np.array([2, 4])}, "warmup failed on the model's warmup data"),
    ({"x": np.array(["a", "b", "c"]).reshape(3, 1), "shape": np.array([3, 4])}, "'x'"),
    ({"x": np.ones((3, 1), np.float32), "shape": np.array([3.0, 4.0])}, "'shape'"),
])
def test_samples_that_do_not_fit_the_model_fail_its_load_by_name(tmp_path: Path, arrays: dict, message: str) -> None:
    version_dir = save(_expand(), tmp_path, "expand").parent
    np.savez(version_dir / "warmup.npz", **arrays)
    with ortserve.Engine(tmp_path) as engine:
        failure = engine.model("expand").versions[1].error
    assert failure.startswith("model 'expand': warmup") and message in failure


def test_a_configured_samples_file_that_is_not_there_fails_the_load(tmp_path: Path) -> None:
    save(_expand(), tmp_path, "expand")
    (tmp_path / "expand" / "config.yaml").write_text("warmup: {data: missing.npz}\n")
    with ortserve.Engine(tmp_path) as engine:
        assert "warmup.data: no file 'missing.npz'" in engine.model("expand").versions[1].error
