"""ZipMap outputs (skl2onnx's default for classifiers) rewritten into the probability tensors they map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.tree import DecisionTreeClassifier

from ortserve.examples.models import mlp, save
from ortserve.runtime.zipmap import without_zipmap


def test_string_classes_keep_their_order_and_the_output_its_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3)).astype(np.float32)
    y = np.array(["dog", "cat", "fish"])[np.argmax(x, axis=1)]
    model = to_onnx(DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y), x[:1],
                    target_opset={"": 17, "ai.onnx.ml": 3})
    model.ir_version = 10
    path = tmp_path / "tree.onnx"
    path.write_bytes(model.SerializeToString())
    rewritten = without_zipmap(onnx.load(path), str(path))
    assert rewritten is not None
    served = ort.InferenceSession(rewritten)
    assert [(out.name, out.type) for out in served.get_outputs()] == [
        ("output_label", "tensor(string)"), ("output_probability", "tensor(float)")]
    assert served.get_outputs()[1].shape == [None, 3]
    labels, probabilities = served.run(None, {"X": x[:7]})
    exported_labels, maps = ort.InferenceSession(str(path)).run(None, {"X": x[:7]})
    np.testing.assert_array_equal(labels, exported_labels)
    # the log's order: the classifier's classes, sorted as scikit-learn keeps them
    expected = np.array([[row[name] for name in ("cat", "dog", "fish")] for row in maps], np.float32)
    np.testing.assert_array_equal(probabilities, expected)


def test_a_model_without_zipmap_is_left_alone(tmp_path: Path) -> None:
    path = save(mlp(inputs=4, hidden=3, outputs=2), tmp_path, "m")
    assert without_zipmap(onnx.load(path), str(path)) is None
