"""Calibration and evaluation samples: from an .npz, a folder of images, built-in photographs, or random values.

Every source ends as one array per model input with the samples along the first axis, checked against the
model's signature before any quantizer or session sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ortserve.digits import is_decimal
from ortserve.errors import InvalidInput
from ortserve.runtime.image import ImageClassifier
from ortserve.runtime.signature import DYNAMIC, Signature

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
LABELS_KEY = "labels"  # in an .npz, true class ids for labelled accuracy (unless an input has that name)
BUILTIN = "samples"
RANDOM = "random"


@dataclass(frozen=True)
class Samples:
    feeds: dict[str, np.ndarray]  # input name -> array with the samples along axis 0
    labels: np.ndarray | None  # true class per sample, when known
    origin: str

    def __len__(self) -> int:
        return len(next(iter(self.feeds.values())))

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), size):
            yield {name: array[start : start + size] for name, array in self.feeds.items()}

    def head(self, count: int) -> Samples:
        labels = self.labels[:count] if self.labels is not None else None
        return Samples({name: array[:count] for name, array in self.feeds.items()}, labels, self.origin)


def load(spec: str, signature: Signature, classifier: ImageClassifier | None, count: int,
         seed: int = 0, rows: dict[str, int] | None = None) -> Samples:
    """`spec` is an .npz file, a folder of images, `samples` (built-in photographs) or `random` (`rows`: the
    integer inputs the model uses as row numbers of a table, with its row count: random ids stay below it)."""
    if spec == RANDOM:
        samples = _random(signature, count, seed, rows or {})
    elif spec == BUILTIN:
        samples = _image_samples(_need_classifier(classifier, spec), builtin_photos(), count, seed)
    else:
        path = Path(spec)
        if not path.exists():
            raise InvalidInput(f"sample data {spec!r} does not exist; give an .npz file, a folder of images, "
                               f"{BUILTIN!r} or {RANDOM!r}")
        if path.is_dir():
            samples = _folder(path, _need_classifier(classifier, spec))
        elif path.suffix == ".npz":
            samples = _npz(path, signature)
        else:
            raise InvalidInput(f"sample data {spec!r} is neither an .npz file nor a folder of images")
    check(samples, signature)
    return samples


def check(samples: Samples, signature: Signature) -> None:
    """Names, element kinds, shapes and sample counts must fit the model's inputs."""
    missing = [spec.name for spec in signature.inputs if spec.name not in samples.feeds]
    if missing:
        raise InvalidInput(f"sample data ({samples.origin}) has no array for model inputs {missing}; it has "
                           f"{sorted(samples.feeds)}")
    counts = {len(array) for array in samples.feeds.values()}
    if len(counts) != 1 or 0 in counts:
        raise InvalidInput(f"sample data ({samples.origin}): every input needs the same, non-zero number of "
                           f"samples along axis 0; got {sorted(counts)}")
    for spec in signature.inputs:
        array = samples.feeds[spec.name]
        fits = array.ndim == spec.rank and all(
            want in (DYNAMIC, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True))
        if not fits:
            wanted = ["n" if i == 0 else ("?" if d == DYNAMIC else d) for i, d in enumerate(spec.shape)]
            raise InvalidInput(f"sample data ({samples.origin}): input {spec.name!r} has shape {list(array.shape)}; "
                               f"the model takes {wanted}")
        if array.dtype.kind != spec.type.numpy.kind and not (array.dtype.kind in "iu" and spec.type.numpy.kind
                                                               in "iu"):
            raise InvalidInput(f"sample data ({samples.origin}): input {spec.name!r} is {array.dtype}; the model "
                               f"takes {spec.type.numpy}")
        samples.feeds[spec.name] = np.ascontiguousarray(array, dtype=spec.type.numpy)
    if samples.labels is not None and len(samples.labels) != len(samples):
        raise InvalidInput(f"sample data ({samples.origin}): {len(samples.labels)} labels for {len(samples)} "
                           f"samples")


def _need_classifier(classifier: ImageClassifier | None, spec: str) -> ImageClassifier:
    if classifier is None:
        raise InvalidInput(f"sample data {spec!r} are images, but the model declares no `image:` preprocessing in "
                           f"its config.yaml; give an .npz with one array per input instead")
    return classifier


def _npz(path: Path, signature: Signature) -> Samples:
    try:
        stored = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"sample data {str(path)!r} is not a readable .npz file: {exc}") from None
    labels = stored.pop(LABELS_KEY, None) if signature.input(LABELS_KEY) is None else None
    return Samples(stored, labels, str(path))


def _folder(folder: Path, classifier: ImageClassifier) -> Samples:
    """Every image under the folder; images in a sub-folder named by a number carry that class id as label."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInput(f"sample folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    rows = [classifier.preprocess(path.read_bytes()) for path in files]
    parents = [path.parent.name for path in files]
    labels = np.array([int(name) for name in parents]) if all(is_decimal(name) for name in parents) else None
    return Samples({classifier.input.name: np.concatenate(rows)}, labels, str(folder))


def builtin_photos() -> list[Image.Image]:
    """The photographs scikit-image and scikit-learn ship (no download)."""
    try:
        from skimage import data
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise InvalidInput(f"sample data {BUILTIN!r} needs scikit-image and scikit-learn: install "
                           f"ortserve[optimize]") from None
    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
              data.immunohistochemistry(), data.retina(), data.stereo_motorcycle()[0],
              *load_sample_images().images]
    return [Image.fromarray(array).convert("RGB") for array in arrays]


def _image_samples(classifier: ImageClassifier, photos: list[Image.Image], count: int, seed: int) -> Samples:
    """Random square-ish crops (a third of the photo or more), half of them mirrored, through the preprocessing."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.35, 1.0))
        crop_width = min(width, int(side * rng.uniform(0.8, 1.25)))
        left, top = int(rng.integers(0, width - crop_width + 1)), int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + crop_width, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rows.append(classifier.tensor(crop))
    return Samples({classifier.input.name: np.concatenate(rows)}, None, f"{count} crops of built-in photographs")


def _random(signature: Signature, count: int, seed: int, rows: dict[str, int]) -> Samples:
    """Standard normal floats, small non-negative integers (below an indexed table's rows), dynamic dimensions
    other than the batch set to 8."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in signature.inputs:
        shape = [count, *(8 if d == DYNAMIC else d for d in spec.shape[1:])]
        kind = spec.type.numpy.kind
        if kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.type.numpy)
        elif kind in "iu":
            feeds[spec.name] = rng.integers(0, min(100, rows.get(spec.name, 100)), shape).astype(spec.type.numpy)
        elif kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=bool)
        else:
            raise InvalidInput(f"input {spec.name!r} of type {spec.type.v2} cannot be filled with random values; "
                               f"give an .npz")
    return Samples(feeds, None, f"{count} random samples")
