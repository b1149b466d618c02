"""ortserve export-tf: ONNX to a TF SavedModel that TF Serving loads, with parity checked here independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from skimage import data

from ortserve.cli import main
from ortserve.examples.models import IR_VERSION, OPSET, mlp

pytestmark = pytest.mark.slow


def _tf():
    import tensorflow as tf

    return tf


def small_cnn() -> onnx.ModelProto:
    """Conv(3->4) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3), NCHW with a dynamic batch."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
               numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["scores"], transB=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
                              initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def test_efficientnet_to_a_saved_model_tf_serving_loads(demo_repository: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    export_dir = tmp_path / "tf-serving"
    assert main(["export-tf", "efficientnet_lite0", "--repository", str(demo_repository), "--export-dir",
                 str(export_dir)]) == 0, capsys.readouterr().err
    version = export_dir / "efficientnet_lite0" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    record = json.loads((version / "assets.extra" / "provenance.json").read_text())
    assert record["layout"] == "nhwc" and record["parity"]["passed"] is True

    tf = _tf()
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]["input"].shape) == [None, 224, 224, 3]
    assert list(serve.structured_outputs) == ["logits"]
    # the cat, preprocessed here as TF-Lite did in training (resize 256, centre crop 224, (x - 127) / 128)
    image = Image.fromarray(data.chelsea())
    factor = 256 / min(image.size)
    image = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = (np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) - 127) / 128
    tf_scores = serve(input=tf.constant(pixels[np.newaxis]))["logits"].numpy()[0]
    onnx_model = demo_repository / "efficientnet_lite0" / "1" / "model.onnx"
    onnx_scores = ort.InferenceSession(str(onnx_model)).run(None, {"input": pixels.transpose(2, 0, 1)[None]})[0][0]
    np.testing.assert_allclose(tf_scores, onnx_scores, atol=1e-3)
    assert np.argsort(-tf_scores)[:5].tolist() == np.argsort(-onnx_scores)[:5].tolist()
    assert int(np.argmax(tf_scores)) in range(281, 286)  # a cat class

    # a second export is the next version, as TF Serving expects
    assert main(["export-tf", "efficientnet_lite0", "--repository", str(demo_repository), "--export-dir",
                 str(export_dir), "--samples", "2"]) == 0
    assert sorted(p.name for p in (export_dir / "efficientnet_lite0").iterdir()) == ["1", "2"]


def test_keep_nchw_keeps_channels_first(tmp_path: Path) -> None:
    onnx.save(small_cnn(), str(tmp_path / "cnn.onnx"))
    assert main(["export-tf", str(tmp_path / "cnn.onnx"), "--export-dir", str(tmp_path / "out"),
                 "--keep-nchw"]) == 0
    tf = _tf()
    serve = tf.saved_model.load(str(tmp_path / "out" / "cnn" / "1")).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]["image"].shape) == [None, 3, 16, 16]
    x = np.random.default_rng(4).standard_normal((5, 3, 16, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(tmp_path / "cnn.onnx")).run(None, {"image": x})[0]
    np.testing.assert_allclose(serve(image=tf.constant(x))["scores"].numpy(), expected, atol=1e-4)


def test_refusals_leave_the_export_directory_empty(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    export_dir = tmp_path / "out"
    onnx.save(mlp(), str(tmp_path / "mlp.onnx"))
    np.savez(tmp_path / "calibration.npz", input=np.random.default_rng(0).standard_normal((8, 784)).astype(
        np.float32))
    assert main(["quantize", str(tmp_path / "mlp.onnx"), "--output", str(tmp_path / "mlp-int8.onnx"),
                 "--calibration-data", str(tmp_path / "calibration.npz")]) == 0
    capsys.readouterr()
    assert main(["export-tf", str(tmp_path / "mlp-int8.onnx"), "--export-dir", str(export_dir)]) == 1
    assert "already quantized" in capsys.readouterr().err
    assert main(["export-tf", str(tmp_path / "absent.onnx"), "--export-dir", str(export_dir)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["export-tf", str(tmp_path / "mlp.onnx")]) == 2
    assert not export_dir.exists() or list(export_dir.iterdir()) == []
