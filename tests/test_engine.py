"""ortserve.Engine: the server's core in process, its answers checked against bare ONNX Runtime."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from skimage import data

import ortserve
from ortserve.examples import demo
from ortserve.examples.models import IR_VERSION, OPSET, dense_stack, flattened, mlp, multi_io, save
from tests.conftest import write_config


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("engine")
    for version in (1, 2):
        save(mlp(seed=version), repo, "mlp", version)
    write_config(repo, "mlp", {"version_policy": "all", "labels": {"stable": 1}})
    save(multi_io(), repo, "multi")
    return repo


@pytest.fixture(scope="module")
def engine(repo: Path):
    with ortserve.Engine(repo) as running:
        yield running


def _reference(repo: Path, model: str, version: int, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(repo / model / str(version) / "model.onnx")).run(None, inputs)


def test_predict_matches_onnxruntime(engine: ortserve.Engine, repo: Path) -> None:
    rows = np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32)
    (expected,) = _reference(repo, "mlp", 2, {"input": rows})
    answer = engine.predict("mlp", rows)  # one array for a one-input model; the newest version
    np.testing.assert_allclose(answer["logits"], expected, rtol=1e-5, atol=1e-5)
    (first,) = _reference(repo, "mlp", 1, {"input": rows})
    for pinned in (engine.predict("mlp", {"input": rows}, version=1), engine.predict("mlp", rows, label="stable")):
        np.testing.assert_allclose(pinned["logits"], first, rtol=1e-5, atol=1e-5)
    inputs = {"a": np.ones((2, 4), np.float32), "b": np.full((2, 4), 2, np.int64),
              "half": np.full((2, 3), 1.5, np.float16), "text": np.array([b"x", "\u00e9".encode()], dtype=object)}
    total, scaled, text = _reference(repo, "multi", 1, inputs)
    every = engine.predict("multi", inputs)
    np.testing.assert_array_equal(every["total"], total)
    np.testing.assert_array_equal(every["scaled"], scaled)
    assert list(every["label_bytes"]) == list(text)
    assert list(engine.predict("multi", inputs, outputs=["scaled"])) == ["scaled"]


def test_errors_are_typed_and_name_the_problem(engine: ortserve.Engine) -> None:
    with pytest.raises(ortserve.NotFound, match="'nope'"):
        engine.predict("nope", np.zeros((1, 784), np.float32))
    with pytest.raises(ortserve.InvalidInput, match="input"):
        engine.predict("mlp", np.zeros((1, 5), np.float32))
    with pytest.raises(ortserve.InvalidInput, match="4 inputs"):
        engine.predict("multi", np.zeros((1, 4), np.float32))
    with pytest.raises(ortserve.NotFound, match="label"):
        engine.predict("mlp", np.zeros((1, 784), np.float32), label="canary")
    with pytest.raises(ortserve.InvalidInput, match="'input' must be a numpy array, got list"):
        engine.predict("mlp", {"input": [[0.0] * 784]})
    with pytest.raises(ortserve.InvalidInput, match="'input' must be a numpy array, got str"):
        engine.predict_batch("mlp", [{"input": np.zeros((1, 784), np.float32)}, {"input": "x"}])
    with pytest.raises(ortserve.InvalidInput, match="outputs must be a list of output names, got 'logits'"):
        engine.predict("mlp", np.zeros((1, 784), np.float32), outputs="logits")  # type: ignore[arg-type]
    for bulk in (engine.predict_batch, engine.predict_concurrent):
        with pytest.raises(ortserve.InvalidInput, match=r"must be a list of requests .* got ndarray"):
            bulk("mlp", np.zeros((3, 784), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ortserve.InvalidInput, match=r"'input' has shape \[\] \(a scalar\)"):
        engine.predict_batch("mlp", [np.array(1.0, np.float32)] * 3)


def test_batch_and_concurrent_keep_the_order(engine: ortserve.Engine, repo: Path) -> None:
    rng = np.random.default_rng(2)
    requests = [rng.standard_normal((int(rng.integers(1, 5)), 784)).astype(np.float32) for _ in range(300)]
    (expected,) = _reference(repo, "mlp", 2, {"input": np.concatenate(requests)})
    bounds = np.cumsum([len(r) for r in requests])[:-1]
    for answers in (engine.predict_batch("mlp", requests), engine.predict_concurrent("mlp", requests,
                                                                                       max_workers=8)):
        assert len(answers) == len(requests)
        for answer, want in zip(answers, np.split(expected, bounds), strict=True):
            np.testing.assert_allclose(answer["logits"], want, rtol=1e-5, atol=1e-5)
    stats = engine.model("mlp").versions[2].stats
    assert max(stats.per_batch_size) > 4  # requests were merged into batches


def test_answers_outlive_the_next_bulk_call(engine: ortserve.Engine, repo: Path) -> None:
    """Bulk calls stack one-row requests into buffers the calling thread reuses (runtime.staging): an answer
    must stay what it was when the next call stacks other rows into the same buffers."""
    rng = np.random.default_rng(4)

    def requests(count: int) -> list[dict[str, np.ndarray]]:
        return [{"a": rng.standard_normal((1, 4)).astype(np.float32), "b": rng.integers(0, 9, (1, 4)),
                 "half": rng.standard_normal((1, 3)).astype(np.float16), "text": np.array([b"t%d" % i], object)}
                for i in range(count)]

    first, second = requests(40), requests(40)
    kept = engine.predict_batch("multi", first)
    engine.predict_batch("multi", second)
    for request, answer in zip(first, kept, strict=True):
        total, scaled, text = _reference(repo, "multi", 1, request)
        np.testing.assert_array_equal(answer["total"], total)
        np.testing.assert_array_equal(answer["scaled"], scaled)
        assert list(answer["label_bytes"]) == list(text)


def test_concurrent_bulk_calls_stay_within_a_slow_models_queue_bound(tmp_path: Path) -> None:
    """Eight threads of a bulk call keep at most a slice per instance and one more in flight, as predict_batch
    does, so a slow model's bounded queue (here two batches) takes them all rather than refusing some."""
    save(dense_stack(layers=64, width=256), tmp_path, "slow")  # a few ms a batch of 4
    write_config(tmp_path, "slow", {"max_batch_size": 4, "queue": {"max_rows": 8}})
    requests = [np.full((1, 256), index / 64, np.float32) for index in range(64)]
    with ortserve.Engine(tmp_path) as engine:
        answers = engine.predict_concurrent("slow", requests, max_workers=8)
        alone = [engine.predict("slow", request) for request in requests[:4]]
        refusals = engine.model("slow").versions[1].stats.refusals
    assert len(answers) == 64
    for answer, single in zip(answers, alone, strict=False):
        np.testing.assert_allclose(answer["output"], single["output"], rtol=1e-5, atol=1e-6)
    assert not refusals


@pytest.mark.parametrize("config", [{}, {"max_batch_size": 8}], ids=["inferred", "configured"])
def test_bulk_calls_of_a_model_with_no_row_per_input_row(config: dict, tmp_path: Path) -> None:
    """[batch, 4] -> [batch * 4]: unbatched by default; batched by config.yaml, each request still gets its own
    answer (a merged run's output cannot be cut by rows, so its requests run alone)."""
    path = save(flattened(), tmp_path, "flat")
    rng = np.random.default_rng(8)
    same = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(12)]
    mixed = [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 2, 1, 3)]
    with ortserve.Engine.from_file(path, name="flat", **config) as engine:
        assert engine.model("flat").resolve().max_batch_size == config.get("max_batch_size", 0)
        for requests in (same, mixed):
            for answers in (engine.predict_batch("flat", requests), engine.predict_concurrent("flat", requests)):
                assert len(answers) == len(requests)
                for request, answer in zip(requests, answers, strict=True):
                    np.testing.assert_array_equal(answer["y"], request.reshape(-1))
        if config:
            with pytest.raises(ortserve.InvalidInput, match="cannot be joined: send at most max_batch_size rows"):
                engine.predict_batch("flat", [np.zeros((20, 4), np.float32)])


def test_predict_of_more_rows_than_the_inferred_batch_limit(engine: ortserve.Engine, repo: Path) -> None:
    served = engine.model("multi").resolve()
    rows = 2 * served.max_batch_size + 1
    rng = np.random.default_rng(12)
    inputs = {"a": rng.standard_normal((rows, 4)).astype(np.float32), "b": rng.integers(0, 9, (rows, 4)),
              "half": rng.standard_normal((rows, 3)).astype(np.float16),
              "text": np.array([b"t%d" % i for i in range(rows)], object)}
    answer = engine.predict("multi", inputs)
    expected = _reference(repo, "multi", 1, inputs)
    np.testing.assert_allclose(answer["total"], expected[0], rtol=1e-6)
    np.testing.assert_array_equal(answer["label_bytes"], expected[2])


def test_predict_past_the_batch_limit_with_inputs_that_disagree_names_the_problem(engine: ortserve.Engine) -> None:
    rows = 2 * engine.model("multi").resolve().max_batch_size + 1
    inputs = {"a": np.zeros((rows, 4), np.float32), "b": np.zeros((3, 4), np.int64),
              "half": np.zeros((rows, 3), np.float16), "text": np.array([b"t"] * rows, object)}
    with pytest.raises(ortserve.InvalidInput, match="disagree on the batch size"):
        engine.predict("multi", inputs)
    assert engine.predict("multi", {**inputs, "b": np.zeros((rows, 4), np.int64)})["total"].shape[0] == rows


def test_predict_async(engine: ortserve.Engine, repo: Path) -> None:
    rows = np.random.default_rng(3).standard_normal((8, 784)).astype(np.float32)

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(engine.predict_async("mlp", rows[i:i + 1]) for i in range(8)))

    answers = asyncio.run(main())
    (expected,) = _reference(repo, "mlp", 2, {"input": rows})
    np.testing.assert_allclose(np.concatenate([a["logits"] for a in answers]), expected, rtol=1e-5, atol=1e-5)


def test_from_file_with_config_fields(tmp_path: Path) -> None:
    path = save(mlp(seed=4), tmp_path, "m")
    with ortserve.Engine.from_file(path, name="tiny", max_batch_size=4) as engine:
        assert engine.models == ["tiny"]
        assert engine.model("tiny").resolve().max_batch_size == 4
        with pytest.raises(ortserve.InvalidInput, match="max_batch_size"):
            engine.predict("tiny", np.zeros((5, 784), np.float32))
        scratch = engine._scratch
    assert scratch is not None and not scratch.exists()
    with pytest.raises(ortserve.ConfigError, match="instances"):
        ortserve.Engine.from_file(path, instances=0)
    with pytest.raises(ortserve.NotFound):
        ortserve.Engine.from_file(tmp_path / "missing.onnx")


def test_from_file_with_weights_in_an_external_data_file(tmp_path: Path) -> None:
    """Large models keep their weights beside model.onnx (model.onnx.data): found through the engine's link."""
    model = mlp(inputs=8, hidden=16, outputs=3, seed=5)
    path = tmp_path / "weights_apart.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights_apart.onnx.data", size_threshold=0)
    assert (tmp_path / "weights_apart.onnx.data").exists()
    rows = np.random.default_rng(13).standard_normal((2, 8)).astype(np.float32)
    with ortserve.Engine.from_file(path) as engine:
        answer = engine.predict("weights_apart", rows)["logits"]
    (expected,) = ort.InferenceSession(str(path)).run(None, {"input": rows})
    np.testing.assert_allclose(answer, expected, rtol=1e-6)


def test_from_file_refuses_a_file_that_does_not_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    named = f"failed to load model 'broken'.*{re.escape(str(broken))}.*Protobuf"  # the caller's path, not a link
    with pytest.raises(ortserve.InvalidInput, match=named):
        ortserve.Engine.from_file(broken)


def test_classify_takes_paths_bytes_images_and_arrays(demo_repository: Path, tmp_path: Path) -> None:
    cat = Image.fromarray(data.chelsea())
    path = tmp_path / "cat.jpg"
    cat.save(path)
    with ortserve.Engine(demo_repository) as engine:
        answers = [engine.classify(demo.MODEL, source, top_k=3)
                   for source in (path, str(path), path.read_bytes(), cat, np.asarray(cat))]
        with pytest.raises(ortserve.InvalidInput, match="not an image"):
            engine.classify(demo.MODEL, b"hello")
        with pytest.raises(ortserve.InvalidInput, match="cannot read"):
            engine.classify(demo.MODEL, tmp_path / "missing.jpg")
        with pytest.raises(ortserve.InvalidInput, match="top_k must be a whole number of at least 1, got '3'"):
            engine.classify(demo.MODEL, path, top_k="3")  # type: ignore[arg-type]
    tops = [[entry["class_id"] for entry in answer] for answer in answers]
    assert all(len(top) == 3 for top in tops)
    assert len({top[0] for top in tops}) == 1  # the same cat however it is given
    assert "cat" in str(answers[0][0]["label"]).lower()


def test_the_engine_imports_no_server_stack(repo: Path) -> None:
    code = ("import sys, numpy as np, ortserve\n"
            f"with ortserve.Engine({str(repo)!r}) as engine:\n"
            "    engine.predict('mlp', np.zeros((1, 784), np.float32))\n"
            "loaded = [m for m in ('grpc', 'uvicorn', 'httptools', 'ortserve.server', 'torch', 'tensorflow') "
            "if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bulk_calls_whose_requests_differ_past_the_first_dimension_or_in_dtype(engine: ortserve.Engine,
                                                                                tmp_path: Path) -> None:
    """Requests of one row count are stacked with their shapes and dtypes checked by the stacking itself: where one
    differs in a later slice, the slices before it have run and the rest run as runs of alike requests."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "width"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "width"])
    two = onnx.helper.make_tensor("two", onnx.TensorProto.FLOAT, [], [2.0])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Mul", ["x", "two"], ["y"])], "double", [x], [y], [two])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.save(model, tmp_path / "double.onnx")
    rng = np.random.default_rng(9)
    with ortserve.Engine.from_file(tmp_path / "double.onnx", max_batch_size=8) as doubling:
        requests = [rng.standard_normal((1, 5 if index in (13, 14, 30) else 3)).astype(np.float32)
                    for index in range(40)]
        for answers in (doubling.predict_batch("double", requests), doubling.predict_concurrent("double", requests)):
            assert [answer["y"].shape for answer in answers] == [request.shape for request in requests]
            for request, answer in zip(requests, answers, strict=True):
                np.testing.assert_array_equal(answer["y"], request * 2)
    mixed_dtype = [np.zeros((1, 784), np.float32)] * 300 + [np.zeros((1, 784), np.float64)]
    with pytest.raises(ortserve.InvalidInput, match=r"input 'input'.*FP64"):
        engine.predict_batch("mlp", mixed_dtype)
