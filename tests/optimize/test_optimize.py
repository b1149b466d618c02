"""ortserve optimize: graph rewrites keep the model's answers; each one is checked against the original."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tests.optimize.conftest import listing

from ortserve.cli import main
from ortserve.examples.models import mlp, resnet50
from ortserve.runtime import onnx_versions


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, feeds)[0]


def test_ort_optimization_publishes_a_new_version_with_the_same_answers(mlp_repository: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["optimize", "mlp", "--repository", str(mlp_repository), "--kind", "ort"]) == 0
    version = mlp_repository / "mlp" / "2"
    record = json.loads((version / "provenance.json").read_text())
    assert record["step"]["level"] == "extended" and record["step"]["portable"] is True
    source = mlp_repository / "mlp" / "1" / "model.onnx"
    assert record["derived_from"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["model_sha256"] == hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest()
    x = np.random.default_rng(3).standard_normal((5, 784)).astype(np.float32)
    np.testing.assert_allclose(_outputs(version / "model.onnx", {"input": x}),
                               _outputs(mlp_repository / "mlp" / "1" / "model.onnx", {"input": x}), atol=1e-5)
    assert record["step"]["evaluation"]["max_abs_error"] < 1e-4
    assert f"wrote {version / 'model.onnx'}" in capsys.readouterr().out


def test_layout_level_is_recorded_as_tied_to_this_cpu(tmp_path: Path) -> None:
    onnx.save(resnet50(classes=10), str(tmp_path / "resnet.onnx"))
    output = tmp_path / "resnet-layout.onnx"
    assert main(["optimize", str(tmp_path / "resnet.onnx"), "--level", "layout", "--output", str(output),
                 "--samples", "2"]) == 0
    record = json.loads(output.with_suffix(".provenance.json").read_text())
    assert record["step"]["portable"] is False
    assert record["machine"]["cpu"]
    assert any(node.domain == "com.microsoft.nchwc" for node in onnx.load(str(output)).graph.node)


def test_simplification_shrinks_a_graph_with_foldable_constants(tmp_path: Path) -> None:
    model = mlp()
    # a constant subgraph (Shape -> Gather-free arithmetic on initializers) that a simplifier folds away
    one = onnx.numpy_helper.from_array(np.ones(10, np.float32), "one")
    model.graph.initializer.append(one)
    model.graph.node.append(onnx.helper.make_node("Add", ["one", "one"], ["two"]))
    model.graph.node.append(onnx.helper.make_node("Mul", ["logits", "two"], ["scaled"]))
    model.graph.output[0].name = "scaled"
    onnx.save(model, str(tmp_path / "model.onnx"))
    assert main(["optimize", str(tmp_path / "model.onnx"), "--kind", "simplify", "--output",
                 str(tmp_path / "slim.onnx")]) == 0
    record = json.loads((tmp_path / "slim.provenance.json").read_text())["step"]
    assert record["nodes"]["after"] < record["nodes"]["before"]
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    np.testing.assert_allclose(_outputs(tmp_path / "slim.onnx", {"input": x}),
                               _outputs(tmp_path / "model.onnx", {"input": x}), rtol=1e-5, atol=1e-5)


def test_fp16_keeps_float32_inputs_and_outputs(tmp_path: Path) -> None:
    onnx.save(mlp(), str(tmp_path / "model.onnx"))
    assert main(["optimize", str(tmp_path / "model.onnx"), "--kind", "fp16", "--output",
                 str(tmp_path / "half.onnx")]) == 0
    half = onnx.load(str(tmp_path / "half.onnx"))
    assert {init.data_type for init in half.graph.initializer} == {onnx.TensorProto.FLOAT16}
    session = ort.InferenceSession(str(tmp_path / "half.onnx"))
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], _outputs(tmp_path / "model.onnx", {"input": x}),
                               atol=2e-2)


@pytest.mark.slow
def test_transformer_fusion_of_minilm(minilm_repository: Path) -> None:
    tokens_file = str(minilm_repository.parent / "tokens.npz")
    assert main(["optimize", "minilm", "--repository", str(minilm_repository), "--kind", "transformer", "--data",
                 tokens_file]) == 0
    record = json.loads((minilm_repository / "minilm" / "2" / "provenance.json").read_text())["step"]
    # one GELU per layer, and the LayerNorms (2 per layer + the embeddings'); ONNX Runtime's attention fusion
    # does not recognize the attention graph of transformers 5's BERT (recorded in docs/optimize.md)
    assert record["fused"]["BiasGelu"] == 6
    assert record["fused"]["LayerNormalization"] + record["fused"].get("SkipLayerNormalization", 0) == 13
    assert record["nodes"]["after"] < record["nodes"]["before"]
    assert record["evaluation"]["cosine_min"] >= 0.9999


def test_transformer_fusion_refuses_a_model_without_attention(mlp_repository: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    before = listing(mlp_repository)
    assert main(["optimize", "mlp", "--repository", str(mlp_repository), "--kind", "transformer"]) == 1
    assert "found no bert attention" in capsys.readouterr().err
    assert listing(mlp_repository) == before


def test_a_file_needs_an_output_and_the_output_must_be_onnx(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    onnx.save(mlp(), str(tmp_path / "model.onnx"))
    assert main(["optimize", str(tmp_path / "model.onnx")]) == 1
    assert "give --output FILE.onnx, or --repository" in capsys.readouterr().err
    assert main(["optimize", str(tmp_path / "model.onnx"), "--output", str(tmp_path / "model.bin")]) == 1
    assert "must end in .onnx" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_model_from_the_newest_onnx_is_optimized_as_the_versions_onnxruntime_reads(tmp_path: Path) -> None:
    """onnx's make_model stamps its newest IR version and opset, which onnxruntime may not read yet: the tool works
    on a copy taken down to what it reads, and its provenance names the file as given."""
    weights = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 6])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
                                    onnx.helper.make_node("Relu", ["h"], ["y"])], "newest", [x], [y],
                                   [onnx.numpy_helper.from_array(weights, "w")])
    model = onnx.helper.make_model(graph)
    if model.ir_version <= onnx_versions.runtime_limits()[0]:
        pytest.skip("this onnx writes versions this onnxruntime reads")
    onnx.save(model, str(tmp_path / "newest.onnx"))
    assert main(["optimize", str(tmp_path / "newest.onnx"), "--output", str(tmp_path / "optimized.onnx")]) == 0
    rows = np.random.default_rng(6).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_allclose(_outputs(tmp_path / "optimized.onnx", {"x": rows}), np.maximum(rows @ weights, 0),
                               rtol=1e-5, atol=1e-5)
    record = json.loads((tmp_path / "optimized.provenance.json").read_text())
    assert record["derived_from"]["path"] == str(tmp_path / "newest.onnx")


@pytest.mark.parametrize("content", [b"\x08\x07not a model" * 40, None], ids=["not-onnx", "unknown-operator"])
def test_every_tool_refuses_a_file_onnxruntime_cannot_load_in_one_line(tmp_path: Path, content: bytes | None,
                                                                       capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.onnx"
    if content is None:
        model = mlp()
        model.graph.node[0].op_type = "NoSuchOperator"
        onnx.save(model, str(bad))
    else:
        bad.write_bytes(content)
    onnx.save(mlp(), str(tmp_path / "good.onnx"))
    commands = [["optimize", str(bad), "--output", str(tmp_path / "out.onnx")],
                ["quantize", str(bad), "--output", str(tmp_path / "out.onnx"), "--calibration-data", "random"],
                ["evaluate", str(tmp_path / "good.onnx"), "--variant", str(bad)],
                ["tune", str(bad), "--output", str(tmp_path / "out.onnx"), "--accuracy-budget", "0.01"],
                ["export-tf", str(bad), "--export-dir", str(tmp_path / "exported")]]
    for command in commands:
        assert main(command) == 1, command
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"ortserve {command[0]}: cannot load the model file {str(bad)!r}: "), error
        assert "Traceback" not in error and "\n" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.onnx", "good.onnx"]
