"""Image classification around a served model: decode an upload into the input tensor, scores into labels."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ortserve.errors import ConfigError, InvalidInput
from ortserve.repository.config import ImagePreprocessing
from ortserve.runtime.pixels import SIDEWAYS_ORIENTATIONS, orientation, to_rgb
from ortserve.runtime.resize import bicubic_tensorflow, bilinear_tensorflow
from ortserve.runtime.scores import probabilities, ranked
from ortserve.runtime.signature import DYNAMIC, Signature, TensorSpec

Image.MAX_IMAGE_PIXELS = None  # the per-model max_image_pixels check below replaces Pillow's global warning


class ImageTooLarge(InvalidInput):
    """The upload is over the model's byte or pixel limit (HTTP 413)."""


@dataclass(frozen=True)
class ImageClassifier:
    config: ImagePreprocessing
    input: TensorSpec
    output: TensorSpec
    labels: list[str] | None

    @property
    def height_width(self) -> tuple[int, int]:
        """The input's spatial size from the signature (dynamic sizes come from the crop or resize)."""
        spatial = self.input.shape[2:4] if self.config.layout == "nchw" else self.input.shape[1:3]
        return int(spatial[0]), int(spatial[1])

    def preprocess(self, data: bytes) -> np.ndarray:
        """Decode, convert colour, resize, crop and normalize: one batch row of the model's input."""
        if not data:
            raise InvalidInput("the image file is empty")
        if len(data) > self.config.max_image_bytes:
            raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {self.config.max_image_bytes}")
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > self.config.max_image_pixels:
                raise ImageTooLarge(f"the image has {width}x{height} pixels; the limit is "
                                    f"{self.config.max_image_pixels}")
            self._draft(image)
            image = to_rgb(image)  # decodes: upright, 8-bit RGB, whatever the file stored (runtime.pixels)
        except ImageTooLarge:
            raise
        except UnidentifiedImageError:
            raise InvalidInput("the file is not an image in a format Pillow reads (JPEG, PNG, WebP, ...)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidInput(f"the image cannot be decoded: {exc}") from None
        return self.tensor(image)

    def tensor(self, image: Image.Image) -> np.ndarray:
        """Resize, crop and normalize a decoded RGB image: one batch row of the model's input."""
        pixels = self._resize_and_crop(image)  # height x width x 3: uint8, or float32 from TensorFlow's resize
        if self.config.color == "bgr":
            pixels = pixels[:, :, ::-1]
        if self.config.layout == "nchw":
            pixels = pixels.transpose(2, 0, 1)
        if self.input.type.numpy == np.uint8:
            if pixels.dtype != np.uint8:
                pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(pixels)[np.newaxis]
        # (pixel * scale - mean) / std as one multiply-add into the output, in float32
        channel_shape = (3, 1, 1) if self.config.layout == "nchw" else (3,)
        std = np.asarray(self.config.std, np.float32)
        factor = (np.float32(self.config.scale) / std).reshape(channel_shape)
        offset = (-np.asarray(self.config.mean, np.float32) / std).reshape(channel_shape)
        tensor = np.empty((1, *pixels.shape), np.float32)
        np.multiply(pixels, factor, out=tensor[0])
        tensor[0] += offset
        return tensor.astype(self.input.type.numpy, copy=False)

    def _draft(self, image: Image.Image) -> None:
        """Let the JPEG decoder scale down by 2, 4 or 8 when the image is that much larger than needed."""
        resize = self.config.resize
        if image.format != "JPEG" or (resize is not None and not resize.antialias):
            return  # TensorFlow's resize reads the full-size pixels: so must its replica
        if resize is not None and resize.shorter_side is not None:
            width, height = image.size
            factor = resize.shorter_side / min(width, height)
            needed = (round(width * factor), round(height * factor))
        elif resize is not None and resize.exact is not None:
            needed = (resize.exact[1], resize.exact[0])
            if orientation(image) in SIDEWAYS_ORIENTATIONS:  # the stored picture is turned by a quarter
                needed = (needed[1], needed[0])
        else:
            return  # without a resize the crop needs the full-size pixels
        # draft keeps at least the requested size; asking twice that keeps the bilinear resize's quality (of the
        # central part that crop_fraction keeps: the whole picture is decoded)
        enlarge = 2 / (self.config.crop_fraction or 1)
        image.draft("RGB", (math.ceil(needed[0] * enlarge), math.ceil(needed[1] * enlarge)))

    def _resize_and_crop(self, image: Image.Image) -> np.ndarray:
        resize = self.config.resize
        if self.config.crop_fraction is not None:
            box = _central_square if self.config.crop_square else _central_box
            image = image.crop(box(image.size, self.config.crop_fraction))
        size = None  # height, width
        if resize is not None and resize.exact is not None:
            size = (resize.exact[0], resize.exact[1])
        elif resize is not None and resize.shorter_side is not None:
            size = _shorter_side_to(resize.shorter_side, image.height, image.width, resize.longer_side)
        if resize is not None and size is not None and not resize.antialias:
            pixels = bicubic_tensorflow(np.asarray(image), *size) if resize.method == "bicubic" else \
                bilinear_tensorflow(np.asarray(image), *size, resize.half_pixel_centers)
            top, left, bottom, right = self._crop_box(*pixels.shape[:2])
            return pixels[top:bottom, left:right]
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC if resize is not None and
                                 resize.method == "bicubic" else Image.Resampling.BILINEAR)
        top, left, bottom, right = self._crop_box(image.height, image.width)
        if (bottom - top, right - left) != (image.height, image.width):
            image = image.crop((left, top, right, bottom))  # in Pillow: only the kept pixels become an array
        return np.asarray(image)

    def _crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Top, left, bottom and right of the centre crop of a resized picture (all of it without one)."""
        crop = self.config.center_crop
        if crop is None:
            return 0, 0, height, width
        crop_height, crop_width = crop
        if crop_height > height or crop_width > width:
            raise InvalidInput(f"the image is {width}x{height} after resizing, smaller than the "
                               f"{crop_width}x{crop_height} crop")
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return top, left, top + crop_height, left + crop_width

    def top_k(self, scores: np.ndarray, k: int) -> list[dict[str, object]]:
        """The k best classes of one row of scores, as probabilities."""
        row = probabilities(scores.reshape(-1).astype(np.float64), self.config.scores)
        labels = self.labels
        return ranked(row, k, lambda i: labels[i] if labels and i < len(labels) else str(i))


def _central_box(size: tuple[int, int], fraction: float) -> tuple[int, int, int, int]:
    """The central part of a picture of `size` (width, height) that keeps `fraction` of each side, as
    tf.image.central_crop rounds it: the margins truncated, the box what they leave."""
    width, height = size
    top, left = int((height - height * fraction) / 2), int((width - width * fraction) / 2)
    return left, top, width - left, height - top


def _central_square(size: tuple[int, int], fraction: float) -> tuple[int, int, int, int]:
    """The centred square whose side is `fraction` of the picture's shorter side, as TensorFlow's official ResNet
    and EfficientNet preprocessing rounds it: the side truncated (in float32), the margins rounded up."""
    width, height = size
    side = int(np.float32(fraction) * np.float32(min(width, height)))
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    return left, top, left + side, top + side


def _tensor(signature: Signature, name: str | None, kind: str, model: str) -> TensorSpec:
    specs = signature.inputs if kind == "input" else signature.outputs
    if name is None:
        if kind == "input" and len(specs) != 1:
            raise ConfigError(f"model {model!r}: field 'image.input' must name one of the model's "
                              f"{len(specs)} inputs")
        return specs[0]
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        raise ConfigError(f"model {model!r}: field 'image.{kind}' names {name!r}, which is not a model {kind}")
    return spec


def _shorter_side_to(side: int, height: int, width: int, longer_side: str) -> tuple[int, int]:
    """The height and width of a picture scaled so that its shorter side is `side`, the longer one rounded or
    truncated (torchvision's Resize and transformers' image processors truncate)."""
    to_pixels = int if longer_side == "truncate" else round
    if height <= width:
        return side, max(1, to_pixels(side * width / height))
    return max(1, to_pixels(side * height / width)), side


def bind_image_classifier(model: str, model_dir: Path, config: ImagePreprocessing,
                          signature: Signature, version_dir: Path | None = None) -> ImageClassifier:
    """Check the image settings against the model signature and load the labels file (in the version directory,
    else the model directory)."""
    spec = _tensor(signature, config.input, "input", model)
    output = _tensor(signature, config.output, "output", model)
    channels = spec.shape[1] if config.layout == "nchw" else spec.shape[-1]
    if spec.rank != 4 or channels not in (3, DYNAMIC) or spec.type.numpy.kind not in "fu":
        raise ConfigError(f"model {model!r}: field 'image.layout': input {spec.name!r} of shape {list(spec.shape)} "
                          f"and type {spec.type.v2} does not take {config.layout.upper()} 3-channel images")
    labels = None
    if config.labels_file is not None:
        path = model_dir / config.labels_file
        if version_dir is not None and (version_dir / config.labels_file).is_file():
            path = version_dir / config.labels_file
        if not path.is_file():
            raise ConfigError(f"model {model!r}: field 'image.labels_file': {path} does not exist")
        labels = path.read_text().splitlines()
    classifier = ImageClassifier(config, spec, output, labels)
    expected = config.center_crop or (config.resize.exact if config.resize else None)
    height, width = classifier.height_width
    if (height, width) != (DYNAMIC, DYNAMIC) and expected is not None and list(expected) != [height, width]:
        raise ConfigError(f"model {model!r}: field 'image.center_crop': images come out {expected}, but input "
                          f"{spec.name!r} takes {[height, width]}")
    return classifier
