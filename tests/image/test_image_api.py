"""The image classification API through the real server, on EfficientNet-Lite0 with its real weights."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image

from ortserve.bench.server import RunningServer
from ortserve.examples import demo
from tests.image.conftest import encode, reference_top5

pytestmark = pytest.mark.slow
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.fixture(scope="module")
def session(image_repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(image_repository / demo.MODEL / "1" / "model.onnx"))


def _predict(server: RunningServer, image: bytes, path: str = "/predict", **data) -> httpx.Response:
    return httpx.post(server.url + path, files={"image": ("upload", image)}, data=data, timeout=60)


def test_the_cat_is_a_cat_and_matches_in_process_onnxruntime(image_server: RunningServer, cat: Image.Image,
                                                              session: ort.InferenceSession) -> None:
    jpeg = encode(cat, "JPEG", quality=95)
    response = _predict(image_server, jpeg)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == demo.MODEL and answer["version"] == "1"
    ids = [p["class_id"] for p in answer["predictions"]]
    assert ids == reference_top5(session, jpeg)
    assert set(ids[:3]) == CAT_CLASSES
    assert answer["predictions"][0]["label"] == "tiger cat"
    confidences = [p["confidence"] for p in answer["predictions"]]
    assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1.0001
    assert answer["inference_time_ms"] > 0 and answer["timestamp"].endswith("+00:00")


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "PNG"), ("L", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"),
                                           ("RGB", "WEBP"), ("P", "PNG")])
def test_formats_and_colour_modes(image_server: RunningServer, cat: Image.Image, session: ort.InferenceSession,
                                  mode: str, fmt: str) -> None:
    image = encode(cat.convert(mode), fmt)
    answer = _predict(image_server, image).json()
    top = answer["predictions"][0]["class_id"]
    assert top == reference_top5(session, image)[0]
    assert top in CAT_CLASSES


def test_v2_classification_answers_with_the_image_models_labels(image_server: RunningServer, image_repository: Path,
                                                                  session: ort.InferenceSession) -> None:
    """Triton's classification extension on the image model's tensor API: "<value>:<index>:<label>"."""
    tensor = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    pixels = triton.InferInput("input", list(tensor.shape), "FP32")
    pixels.set_data_from_numpy(tensor)
    result = triton.InferenceServerClient(image_server.host_port).infer(
        demo.MODEL, [pixels], outputs=[triton.InferRequestedOutput("logits", class_count=2)])
    (logits,) = session.run(None, {"input": tensor})
    best = np.argsort(-logits[0], kind="stable")[:2]
    labels = (image_repository / demo.MODEL / "labels.txt").read_text().splitlines()
    assert result.as_numpy("logits").tolist() == [[f"{logits[0, i]:f}:{i}:{labels[i]}".encode() for i in best]]


def test_named_model_version_and_top_k(image_server: RunningServer, cat: Image.Image) -> None:
    jpeg = encode(cat, "JPEG")
    response = _predict(image_server, jpeg, f"/v1/models/{demo.MODEL}/versions/1:predict_image", top_k="2")
    assert len(response.json()["predictions"]) == 2
    response = httpx.post(f"{image_server.url}/predict?top_k=7", files={"image": ("cat.jpg", jpeg)})
    assert len(response.json()["predictions"]) == 7


def test_a_variant_group_classifies_under_its_own_name(image_server: RunningServer, cat: Image.Image) -> None:
    jpeg = encode(cat, "JPEG")
    direct = _predict(image_server, jpeg, f"/v1/models/{demo.MODEL}:predict_image").json()
    for _ in range(2):  # round robin: once through each member
        answer = _predict(image_server, jpeg, "/v1/models/any_image:predict_image").json()
        assert answer["model"] == "any_image" and answer["version"] == "1"
        assert [p["class_id"] for p in answer["predictions"]] == [p["class_id"] for p in direct["predictions"]]
    stats = httpx.get(f"{image_server.url}/v2/models/any_image/stats").json()["model_stats"][0]
    members = stats["ortserve"]["group"]["members"]
    assert members[demo.MODEL]["chosen"] == 1 and members["slow_batch"]["chosen"] == 1


def test_concurrent_uploads_are_batched(image_server: RunningServer, cat: Image.Image) -> None:
    jpeg = encode(cat, "JPEG")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _predict(image_server, jpeg, "/v1/models/batched_uploads:predict_image"),
                                range(6)))
    assert all(a.status_code == 200 for a in answers)
    assert len({a.json()["predictions"][0]["class_id"] for a in answers}) == 1
    stats = httpx.get(f"{image_server.url}/v2/models/batched_uploads/stats").json()["model_stats"][0]
    sizes = {entry["batch_size"] for entry in stats["batch_stats"]}
    assert max(sizes) > 1, sizes


def _truncated(cat: Image.Image) -> bytes:
    jpeg = encode(cat, "JPEG")
    return jpeg[: len(jpeg) // 2]


BAD_UPLOADS = [
    ("empty-file", "/predict", {"image": ("a.jpg", b"")}, 400, "empty"),
    ("not-an-image", "/predict", {"image": ("a.txt", b"hello, I am text")}, 400, "not an image"),
    ("no-image-field", "/predict", {"picture": ("a.jpg", b"\xff\xd8")}, 400, "'image'"),
    ("tensor-model", "/v1/models/mlp:predict_image", {"image": ("a.jpg", b"\xff\xd8")}, 400,
     "no image preprocessing"),
    ("unknown-model", "/v1/models/nope:predict_image", {"image": ("a.jpg", b"\xff\xd8")}, 404, "'nope'"),
]


@pytest.mark.parametrize(("path", "files", "status", "words"), [c[1:] for c in BAD_UPLOADS],
                         ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads(image_server: RunningServer, path: str, files: dict, status: int, words: str) -> None:
    response = httpx.post(image_server.url + path, files=files)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_truncated_image(image_server: RunningServer, cat: Image.Image) -> None:
    response = _predict(image_server, _truncated(cat))
    assert response.status_code == 400
    assert "cannot be decoded" in response.json()["error"]


def test_limits_refuse_big_images_before_decoding(image_server: RunningServer, cat: Image.Image) -> None:
    path = "/v1/models/small_limits:predict_image"
    small = encode(cat.resize((90, 60)), "PNG")
    assert _predict(image_server, small, path).status_code == 200
    too_many_pixels = encode(Image.new("RGB", (200, 200)), "PNG")  # tiny file, 40,000 pixels
    response = _predict(image_server, too_many_pixels, path)
    assert response.status_code == 413 and "pixels" in response.json()["error"]
    too_many_bytes = encode(cat, "PNG")
    response = _predict(image_server, too_many_bytes, path)
    assert response.status_code == 413 and "bytes" in response.json()["error"]


def test_not_multipart_and_bad_top_k(image_server: RunningServer, cat: Image.Image) -> None:
    response = httpx.post(f"{image_server.url}/predict", content=encode(cat, "JPEG"),
                          headers={"content-type": "image/jpeg"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["error"]
    for top_k in ("0", "x", "1001"):
        response = _predict(image_server, encode(cat, "JPEG"), top_k=top_k)
        assert response.status_code == 400 and "top_k" in response.json()["error"]
    assert httpx.get(f"{image_server.url}/v2/health/ready").status_code == 200


def test_bench_uploads_images(image_server: RunningServer, cat: Image.Image, tmp_path) -> None:
    import json
    import subprocess
    import sys

    photo = tmp_path / "cat.jpg"
    cat.save(photo)
    completed = subprocess.run([sys.executable, "-m", "ortserve", "bench", image_server.url, "--model", demo.MODEL,
                                "--protocol", "image", "--image", str(photo), "--concurrency", "2", "--duration", "2",
                                "--warmup", "0.5", "--out", str(tmp_path / "report")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    (entry,) = json.loads((tmp_path / "report" / "report.json").read_text())["points"]
    assert entry["errors"] == 0 and entry["throughput_per_s"] > 5 and entry["p50_ms"] > 1
    stats = httpx.get(f"{image_server.url}/v2/models/{demo.MODEL}/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= entry["sent"]
