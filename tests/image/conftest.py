from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples import demo
from ortserve.examples.models import mlp, save


@pytest.fixture(scope="session")
def image_repository(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model, plus copies with a long batching delay and with small upload limits, plus a tensor model."""
    repository = tmp_path_factory.mktemp("images")
    shutil.copytree(demo_repository / demo.MODEL, repository / demo.MODEL)
    # batched_uploads: as slow_batch, for one test alone: a configured delay makes only a model's first batch wait
    # for company whatever came before (after it, as many rows as the last batch had: model-repository.md), so
    # requests other tests sent to slow_batch would leave its next lone upload running at once
    for name, changes in (("slow_batch", {"max_queue_delay_us": 300_000}),
                          ("batched_uploads", {"max_queue_delay_us": 300_000}),
                          ("small_limits", {"image": {"max_image_pixels": 10_000, "max_image_bytes": 20_000}})):
        shutil.copytree(demo_repository / demo.MODEL, repository / name)
        config = yaml.safe_load((repository / name / "config.yaml").read_text())
        config.update({key: value for key, value in changes.items() if key != "image"})
        config["image"].update(changes.get("image", {}), default=False)
        (repository / name / "config.yaml").write_text(yaml.safe_dump(config))
    save(mlp(), repository, "mlp")
    (repository / "any_image").mkdir()  # a variant group of two image models
    (repository / "any_image" / "config.yaml").write_text(yaml.safe_dump(
        {"group": {"members": [demo.MODEL, "slow_batch"], "policy": "round_robin"}}))
    return repository


@pytest.fixture(scope="session")
def image_server(image_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(image_repository, tmp_path_factory.mktemp("image-logs") / "server.log") as running:
        yield running


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())


def reference_top5(session, image_bytes: bytes) -> list[int]:
    """The test's own TF-Lite preprocessing (resize 256, centre crop 224, (x - 127) / 128) and top-5 ids."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    width, height = image.size
    factor = 256 / min(width, height)
    image = image.resize((round(width * factor), round(height * factor)), Image.Resampling.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    tensor = ((pixels - 127) / 128).transpose(2, 0, 1)[np.newaxis]
    (logits,) = session.run(None, {"input": np.ascontiguousarray(tensor)})
    return [int(i) for i in np.argsort(-logits[0], kind="stable")[:5]]
