"""`ortserve convert` on real models: PyTorch entry points and scikit-learn pipelines, with parity and provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    VotingClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput
from tests.convert import factories

pytestmark = pytest.mark.slow


def _versions(repository: Path, model: str) -> list[str]:
    return sorted(p.name for p in (repository / model).iterdir()) if (repository / model).exists() else []


def _leftovers(repository: Path) -> list[str]:
    return [p.name for p in repository.iterdir() if p.name.startswith(".")] if repository.exists() else []


def test_pytorch_entry_point_becomes_a_checked_version_with_provenance(tmp_path: Path) -> None:
    request = ConvertRequest(source="tests.convert.factories:small_net", repository=tmp_path, model="small",
                             inputs=[InputSpec.parse("features:float32:batch,6")], outputs=["scores"])
    result = convert(request)
    assert result.version_dir == tmp_path / "small" / "1"
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    assert session.get_inputs()[0].shape[0] == "batch"  # the batch axis stayed dynamic
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        expected = factories.small_net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(["scores"], {"features": x})[0], expected, rtol=1e-5, atol=1e-6)
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert provenance["framework"] == "pytorch" and provenance["exporter"] == "torch.export"
    assert provenance["opset"] == 18 and provenance["versions"]["torch"].startswith("2.13.0")
    assert provenance["parity"]["passed"] and provenance["parity"]["outputs"][0]["max_abs_error"] < 1e-5
    assert convert(request).version_dir == tmp_path / "small" / "2"  # the next conversion is the next version
    assert not _leftovers(tmp_path)


def test_efficientnet_lite0_keeps_the_cat_on_top(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.chelsea()).resize((298, 256), Image.Resampling.BILINEAR)
    left = (298 - 224) // 2
    pixels = np.asarray(image.crop((left, 16, left + 224, 240)), np.float32)
    cat = ((pixels - 127) / 128).transpose(2, 0, 1)[np.newaxis]
    np.savez(tmp_path / "samples.npz", input=np.concatenate([cat, cat[:, :, ::-1]]))
    result = convert(ConvertRequest(
        source="tests.convert.factories:efficientnet_lite0", repository=tmp_path / "repo", model="effnet",
        inputs=[InputSpec.parse("input:float32:batch,3,224,224")], outputs=["logits"],
        samples_file=tmp_path / "samples.npz"))
    assert result.parity.outputs[0].top1_agreement == 1.0
    (logits,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"input": cat})
    assert set(np.argsort(-logits[0])[:3]) == {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.fixture
def iris() -> tuple[np.ndarray, np.ndarray]:
    features, labels = load_iris(return_X_y=True)
    return features.astype(np.float32), labels


def test_sklearn_pipeline_predicts_identically(tmp_path: Path, iris) -> None:
    features, labels = iris
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    joblib.dump(pipeline, tmp_path / "iris.joblib")
    result = convert(ConvertRequest(source=str(tmp_path / "iris.joblib"), repository=tmp_path / "repo",
                                    model="iris", inputs=[], value_range=(0.0, 8.0), samples=64))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    predicted, probabilities = session.run(None, {"input": features})
    np.testing.assert_array_equal(predicted, pipeline.predict(features))
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(features), atol=1e-5)
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert provenance["framework"] == "sklearn" and len(provenance["source_sha256"]) == 64


def test_sklearn_regressor(tmp_path: Path, iris) -> None:
    features, _ = iris
    regressor = LinearRegression().fit(features[:, :3], features[:, 3])
    joblib.dump(regressor, tmp_path / "petal.pkl")
    result = convert(ConvertRequest(source=str(tmp_path / "petal.pkl"), repository=tmp_path / "repo", model="petal",
                                    inputs=[InputSpec.parse("measurements:float32:batch,3")]))
    (predicted,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None,
                                                                                      {"measurements": features[:, :3]})
    np.testing.assert_allclose(predicted.reshape(-1), regressor.predict(features[:, :3]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("source", "words"), [
    ("missing/model.joblib", "does not exist"),
    ("tests.convert.factories:not_a_module", "returned int, not a torch.nn.Module"),
    ("tests.convert.nowhere:make", "cannot load entry point"),
])
def test_bad_sources_fail_with_one_line_and_write_nothing(tmp_path: Path, source: str, words: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ortserve", "convert", source, "--repository", str(tmp_path), "--model", "m",
         "--input", "x:float32:batch,6"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ortserve convert:")]
    assert words in line
    assert not _versions(tmp_path, "m") and not _leftovers(tmp_path)


def test_wrong_kind_of_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InvalidInput, match="unsupported kind"):
        convert(ConvertRequest(source=str(tmp_path / "notes.txt"), repository=tmp_path / "repo", model="m",
                               inputs=[]))
    (tmp_path / "fake.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InvalidInput, match="not a pickled or joblib"):
        convert(ConvertRequest(source=str(tmp_path / "fake.pkl"), repository=tmp_path / "repo", model="m",
                               inputs=[]))


def test_parity_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ortserve.convert import pytorch

    real_run = pytorch.run
    # a source framework that disagrees with the export by 0.01: the converted model must not be published
    monkeypatch.setattr(pytorch, "run", lambda module, feeds: [out + 0.01 for out in real_run(module, feeds)])
    request = ConvertRequest(source="tests.convert.factories:small_net", repository=tmp_path, model="small",
                             inputs=[InputSpec.parse("features:float32:batch,6")])
    with pytest.raises(InvalidInput, match="does not match the pytorch model") as error:
        convert(request)
    assert "max abs error" in str(error.value)
    assert "unstable" not in str(error.value)  # the source agrees with itself: the export is what differs
    assert not _versions(tmp_path, "small") and not _leftovers(tmp_path)


def test_a_source_that_fails_on_the_moved_samples_leaves_the_parity_failure_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ortserve.convert import pytorch

    real_run = pytorch.run
    calls: list[int] = []

    def run(module, feeds):  # disagrees with the export, then fails when asked whether it agrees with itself
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("out of memory")
        return [out + 0.01 for out in real_run(module, feeds)]

    monkeypatch.setattr(pytorch, "run", run)
    request = ConvertRequest(source="tests.convert.factories:small_net", repository=tmp_path, model="small",
                             inputs=[InputSpec.parse("features:float32:batch,6")])
    with pytest.raises(InvalidInput, match="does not match the pytorch model") as error:
        convert(request)
    assert len(calls) == 2 and "out of memory" not in str(error.value)


def test_a_source_model_that_rounding_decides_is_named_as_the_cause(tmp_path: Path) -> None:
    # untrained deep networks can be chaotic: ONNX Runtime's summation order alone changes every output
    request = ConvertRequest(source="tests.convert.factories:chaotic_net", repository=tmp_path, model="chaotic",
                             inputs=[InputSpec.parse("features:float32:batch,64")])
    with pytest.raises(InvalidInput, match="does not match the pytorch model") as error:
        convert(request)
    assert "the pytorch model is itself unstable on these samples" in str(error.value)
    assert "untrained weights" in str(error.value)
    assert not _versions(tmp_path, "chaotic") and not _leftovers(tmp_path)


def test_input_spec_errors() -> None:
    with pytest.raises(InvalidInput, match="name:dtype:dim"):
        InputSpec.parse("x:float32")
    with pytest.raises(InvalidInput, match="unknown dtype"):
        InputSpec.parse("x:floaty:batch,3")


@pytest.mark.parametrize("kind", ["torchscript", "torch.export"])
def test_saved_pytorch_files(tmp_path: Path, kind: str) -> None:
    module = factories.small_net().eval()
    example = torch.zeros(2, 6)
    if kind == "torchscript":
        path = tmp_path / "net.pt"
        torch.jit.trace(module, example).save(str(path))
    else:
        path = tmp_path / "net.pt2"
        batch = torch.export.Dim("batch")
        torch.export.save(torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), str(path))
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="net",
                                    inputs=[InputSpec.parse("features:float32:batch,6")]))
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    (got,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"features": x})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert len(json.loads((result.version_dir / "provenance.json").read_text())["source_sha256"]) == 64


def test_a_file_that_is_not_torchscript(tmp_path: Path) -> None:
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match="is not a TorchScript file"):
        convert(ConvertRequest(source=str(tmp_path / "broken.pt"), repository=tmp_path / "repo", model="m",
                               inputs=[InputSpec.parse("x:float32:batch,6")]))
    assert not _leftovers(tmp_path / "repo")


def test_the_exporters_chatter_shows_only_at_debug_level(tmp_path: Path) -> None:
    """At the default log level a conversion prints one line per step of ours; the exporter's own progress
    lines, INFO logs and warnings come back with --log-level debug."""
    command = ["convert", "tests.convert.factories:small_net", "--repository", str(tmp_path), "--model", "m",
               "--input", "features:float32:batch,6"]

    def run(*level: str) -> str:
        result = subprocess.run([sys.executable, "-m", "ortserve", *level, *command], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    quiet = run()
    assert "[torch.onnx]" not in quiet and "onnx_ir" not in quiet and "torchvision" not in quiet
    assert len(quiet.strip().splitlines()) <= 6, quiet
    assert "exporting the pytorch model to ONNX" in quiet and "wrote " in quiet
    loud = run("--log-level", "debug")
    assert "[torch.onnx]" in loud


def test_an_export_that_fails_names_its_step(tmp_path: Path) -> None:
    """Inputs that do not fit the module (5 features for a 6-feature layer): both exporters fail, and the one line
    says so, instead of a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "ortserve", "convert", "tests.convert.factories:small_net", "--repository",
         str(tmp_path), "--model", "m", "--input", "x:float32:batch,5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ortserve convert:")]
    assert "could not export the model" in line and "RuntimeError" in line
    assert not _versions(tmp_path, "m") and not _leftovers(tmp_path)


def test_a_dataframe_pipeline_converts_column_by_column_and_serves_rows_of_named_columns(tmp_path: Path) -> None:
    """The usual tabular model: a ColumnTransformer scaling numbers and one-hot encoding a text column, fitted on
    a DataFrame; one input per column, and clients send the columns by name (TF Serving rows, classify)."""
    import httpx
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    from ortserve.bench.server import start_server

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.integers(18, 80, 300).astype(float), "income": rng.normal(5e4, 1e4, 300),
                          "city": rng.choice(["Paris", "Lyon", "Nice"], 300)})
    churned = np.where((frame.age > 50) | (frame.city == "Nice"), "churn", "stay")
    prepare = ColumnTransformer([("numbers", StandardScaler(), ["age", "income"]),
                                 ("cities", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    pipeline = make_pipeline(prepare, LogisticRegression(max_iter=500)).fit(frame, churned)
    joblib.dump(pipeline, tmp_path / "churn.joblib")
    result = convert(ConvertRequest(source=str(tmp_path / "churn.joblib"), repository=tmp_path / "repo",
                                    model="churn", inputs=[]))
    assert result.parity.passed
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert [(spec["name"], spec["dtype"], spec["dims"]) for spec in provenance["inputs"]] == [
        ("age", "float32", ["batch", 1]), ("income", "float32", ["batch", 1]), ("city", "object", ["batch", 1])]

    rows = frame.iloc[:5]
    expected = pipeline.predict_proba(rows)
    instances = [{"age": [row.age], "income": [row.income], "city": [row.city]} for row in rows.itertuples()]
    examples = [{"age": row.age, "income": row.income, "city": row.city} for row in rows.itertuples()]
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        predicted = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": instances}, timeout=30)
        classified = httpx.post(f"{server.url}/v1/models/churn:classify", json={"examples": examples}, timeout=30)
    assert predicted.status_code == 200, predicted.text
    answers = predicted.json()["predictions"]
    np.testing.assert_allclose([row["probabilities"] for row in answers], expected, rtol=1e-4, atol=1e-5)
    assert [row["label"] for row in answers] == list(pipeline.predict(rows))
    assert classified.status_code == 200, classified.text
    for result_row, probabilities in zip(classified.json()["results"], expected, strict=True):
        assert [label for label, _ in result_row] == ["churn", "stay"]
        np.testing.assert_allclose([score for _, score in result_row], probabilities, rtol=1e-4, atol=1e-5)


def test_a_module_saved_whole_converts_and_a_state_dict_is_told_what_to_give(tmp_path: Path) -> None:
    module = factories.small_net()
    torch.save(module, tmp_path / "whole.pt")  # torch.save(model): a pickle of the module, not TorchScript
    result = convert(ConvertRequest(source=str(tmp_path / "whole.pt"), repository=tmp_path / "repo", model="whole",
                                    inputs=[InputSpec.parse("features:float32:batch,6")]))
    rows = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    (answer,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"features": rows})
    with torch.no_grad():
        np.testing.assert_allclose(answer, module(torch.from_numpy(rows)).numpy(), rtol=1e-5, atol=1e-6)

    torch.save(module.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InvalidInput, match=r"holds a dict of \d+ entries .* and this file as --weights"):
        convert(ConvertRequest(source=str(tmp_path / "weights.pt"), repository=tmp_path / "repo", model="w",
                               inputs=[InputSpec.parse("features:float32:batch,6")]))


def test_dataframe_pipelines_with_imputers_and_ordinal_codes_convert_column_by_column(tmp_path: Path) -> None:
    """Missing text filled by a SimpleImputer (fitted on NaN, taken as "" in the ONNX model: a string tensor
    holds no NaN), and an OrdinalEncoder feeding a random forest."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"age": rng.integers(18, 80, 200).astype(float), "city": rng.choice(["Paris", "Lyon"], 200),
                          "plan": rng.choice(["basic", "pro", "max"], 200)})
    frame.loc[::7, "city"] = np.nan  # missing text, as a DataFrame holds it
    labels = np.where((frame.age > 50) | (frame.plan == "max"), 1, 0)
    text = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))
    pipelines = {
        "imputed": make_pipeline(ColumnTransformer([("age", StandardScaler(), ["age"]),
                                                    ("text", text, ["city", "plan"])]), LogisticRegression()),
        "ordinal": make_pipeline(ColumnTransformer([("age", "passthrough", ["age"]),
                                                    ("text", OrdinalEncoder(), ["plan"])]),
                                 RandomForestClassifier(n_estimators=8, random_state=0)),
    }
    for name, pipeline in pipelines.items():
        columns = ["age", "city", "plan"] if name == "imputed" else ["age", "plan"]
        pipeline.fit(frame[columns], labels)
        joblib.dump(pipeline, tmp_path / f"{name}.joblib")
        result = convert(ConvertRequest(source=str(tmp_path / f"{name}.joblib"), repository=tmp_path / "repo",
                                        model=name, inputs=[]))
        rows = frame[columns].iloc[:14]  # row 0 and row 7 miss their city
        feeds = {column: (rows[column].to_numpy(np.float32) if pd.api.types.is_numeric_dtype(rows[column])
                          else rows[column].fillna("").to_numpy(object)).reshape(-1, 1) for column in columns}
        _, probabilities = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, feeds)
        np.testing.assert_allclose(probabilities, pipeline.predict_proba(rows), rtol=1e-4, atol=1e-5)


def test_generated_parity_samples_keep_what_the_source_knows_of_its_inputs(tmp_path: Path) -> None:
    """Looked-up inputs draw from their vocabulary (and one word it lacks), ids from below their table's rows, at
    the parity batch size."""
    from ortserve.convert.pipeline import _sample_feeds

    inputs = [InputSpec("animal", np.dtype(object), ("batch", 1), known=("cat", "dog")),
              InputSpec("word_ids", np.dtype(np.int64), ("batch", 5), rows=3),
              InputSpec("score", np.dtype(np.float32), ("batch", 2))]
    request = ConvertRequest(source="", repository=tmp_path, model="m", inputs=[], samples=64)
    animals, word_ids, scores = _sample_feeds(request, inputs)
    assert set(animals.reshape(-1)) == {"cat", "dog", "unknown0"}
    assert word_ids.shape == (64, 5) and set(word_ids.reshape(-1)) == {0, 1, 2}
    assert scores.shape == (64, 2) and scores.min() >= -1.0 and scores.max() <= 1.0


def test_a_pytorch_model_taking_ids_is_checked_on_ids_its_embedding_has(tmp_path: Path) -> None:
    """The default --range (-1, 1) gave ids -1 and 0: PyTorch's Embedding refused -1, and parity failed."""
    result = convert(ConvertRequest(source="tests.convert.factories:word_bag", repository=tmp_path, model="bag",
                                    inputs=[InputSpec.parse("ids:int64:batch,12")], samples=32))
    assert result.parity.passed
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    ids = np.random.default_rng(1).integers(0, 30, (4, 12))
    with torch.no_grad():
        expected = factories.word_bag()(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(session.run(None, {"ids": ids})[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exporter", ["torch.export", "torchscript"])
def test_a_pytorch_model_answering_a_dict_names_its_outputs_by_the_keys(tmp_path: Path, exporter: str) -> None:
    result = convert(ConvertRequest(source="tests.convert.factories:two_heads", repository=tmp_path, model="heads",
                                    inputs=[InputSpec.parse("features:float32:batch,6")], exporter=exporter))
    assert result.parity.passed
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    assert [output.name for output in session.get_outputs()] == ["probabilities", "logits"]
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    with torch.no_grad():
        expected = factories.two_heads()(torch.from_numpy(x))
    served = dict(zip(["probabilities", "logits"], session.run(None, {"features": x}), strict=True))
    for name in ("probabilities", "logits"):
        np.testing.assert_allclose(served[name], expected[name].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exporter", ["torch.export", "torchscript"])
def test_a_pytorch_model_answering_nested_tuples_gives_one_output_per_tensor(tmp_path: Path, exporter: str) -> None:
    result = convert(ConvertRequest(source="tests.convert.factories:recurrent", repository=tmp_path, model="lstm",
                                    inputs=[InputSpec.parse("x:float32:batch,7,4")], exporter=exporter,
                                    outputs=["sequence", "hidden", "cell"]))
    assert result.parity.passed
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    x = np.random.default_rng(1).standard_normal((3, 7, 4)).astype(np.float32)
    with torch.no_grad():
        sequence, (hidden, cell) = factories.recurrent()(torch.from_numpy(x))
    served = session.run(["sequence", "hidden", "cell"], {"x": x})
    for got, want in zip(served, (sequence, hidden, cell), strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def _scores_of(estimator: object, features: np.ndarray) -> np.ndarray:
    """The estimator's own scores: probabilities, else its decision function, else (a clusterer) distances."""
    for method in ("predict_proba", "decision_function", "transform"):
        if hasattr(estimator, method):
            return np.asarray(getattr(estimator, method)(features))
    raise AssertionError("no scores")


@pytest.mark.parametrize("make, binary", [
    (lambda: HistGradientBoostingClassifier(max_iter=10), False),  # skl2onnx's boolean attributes
    (lambda: SVC(), False),  # no predict_proba: scores are the decision function
    (lambda: SVC(), True),  # libsvm's binary scores: [d, -d]
    (lambda: SGDClassifier(random_state=0), True),  # the others': [-d, d]
    (lambda: LinearSVC(), True),  # one column of d
    (lambda: KMeans(3, n_init=2, random_state=0), False),  # labels and distances to the centres
    (lambda: IsolationForest(n_estimators=10, random_state=0), False),  # labels and decision function
    (lambda: make_pipeline(StandardScaler(), VotingClassifier(  # flatten_transform (default): refused by skl2onnx
        [("linear", LogisticRegression()), ("bayes", GaussianNB())], voting="soft")), False),
])
def test_sklearn_estimators_without_probabilities_answer_their_scores(tmp_path: Path, iris, make, binary) -> None:
    features, labels = iris
    estimator = make().fit(features, (labels == 1).astype(int) if binary else labels)
    joblib.dump(estimator, tmp_path / "model.joblib")
    result = convert(ConvertRequest(source=str(tmp_path / "model.joblib"), repository=tmp_path / "repo",
                                    model="m", inputs=[], value_range=(0.0, 8.0), samples=64))
    assert result.parity.passed, result.parity.text()
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    predicted, scores = session.run(None, {"input": features})
    np.testing.assert_array_equal(predicted.reshape(-1), estimator.predict(features))
    expected = _scores_of(estimator, features)
    got = scores[:, 1] if binary and scores.shape[1] == 2 else scores.reshape(expected.shape)
    if isinstance(estimator, SVC) and binary:
        got = -got  # libsvm's column 1 holds -d
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_a_hist_gradient_boosting_regressor_converts(tmp_path: Path, iris) -> None:
    features, _ = iris
    regressor = HistGradientBoostingRegressor(max_iter=10).fit(features[:, :3], features[:, 3])
    joblib.dump(regressor, tmp_path / "model.joblib")
    result = convert(ConvertRequest(source=str(tmp_path / "model.joblib"), repository=tmp_path / "repo",
                                    model="m", inputs=[], value_range=(0.0, 8.0), samples=64))
    (predicted,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"input": features[:, :3]})
    np.testing.assert_allclose(predicted.reshape(-1), regressor.predict(features[:, :3]), rtol=1e-4, atol=1e-4)


def test_a_kmeans_fitted_on_float64_is_checked_on_its_own_float_type(tmp_path: Path, iris) -> None:
    """scikit-learn 1.9's KMeans refuses float32 data when its centres are float64 (NumPy's default)."""
    features, _ = iris
    clusters = KMeans(3, n_init=2, random_state=0).fit(features.astype(np.float64))
    joblib.dump(clusters, tmp_path / "model.joblib")
    result = convert(ConvertRequest(source=str(tmp_path / "model.joblib"), repository=tmp_path / "repo",
                                    model="m", inputs=[], value_range=(0.0, 8.0), samples=64))
    assert result.parity.passed
    predicted, _ = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"input": features})
    np.testing.assert_array_equal(predicted, clusters.predict(features.astype(np.float64)))


def test_an_export_that_fixes_a_declared_dynamic_dimension_is_refused_naming_it(tmp_path: Path) -> None:
    """torch.export fixed the sequence at the example's size, silently: the model would have refused every other
    length. Declared with its size, it converts."""
    source = "tests.convert.factories:position_scaled"
    with pytest.raises(InvalidInput, match="fixed the dynamic dimension\\(s\\) 'sequence' of 'x' at 8"):
        convert(ConvertRequest(source=source, repository=tmp_path, model="scaled",
                               inputs=[InputSpec.parse("x:float32:batch,sequence")]))
    assert not _versions(tmp_path, "scaled") and not _leftovers(tmp_path)
    result = convert(ConvertRequest(source=source, repository=tmp_path, model="scaled",
                                    inputs=[InputSpec.parse("x:float32:batch,8")]))
    assert result.parity.passed


def test_an_op_neither_exporter_converts_is_named_by_both(tmp_path: Path) -> None:
    """Both exporters' causes, torch.export's from its exception summary (its first line only names the step)."""
    with pytest.raises(InvalidInput) as refused:
        convert(ConvertRequest(source="tests.convert.factories:running_product", repository=tmp_path, model="p",
                               inputs=[InputSpec.parse("x:float32:batch,6")]))
    message = str(refused.value)
    assert "the TorchScript exporter could not export the model" in message and "aten::cumprod" in message
    assert "nor could torch.export" in message and "No ONNX function found" in message
    assert "Next steps" not in message
