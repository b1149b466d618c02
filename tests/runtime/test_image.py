"""Image preprocessing settings, checked pixel by pixel on small synthetic images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ortserve.dtypes import BY_V2
from ortserve.errors import ConfigError
from ortserve.repository.config import ImagePreprocessing
from ortserve.runtime.image import bind_image_classifier
from ortserve.runtime.signature import Signature, TensorSpec


def _signature(shape: tuple[int, ...], datatype: str = "FP32") -> Signature:
    return Signature(inputs=(TensorSpec("pixels", BY_V2[datatype], shape),),
                     outputs=(TensorSpec("scores", BY_V2["FP32"], (-1, 3)),))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


GRADIENT = np.stack(np.meshgrid(np.arange(8), np.arange(6)), -1).sum(-1).astype(np.uint8) * 10  # 6 x 8
IMAGE = np.stack([GRADIENT, GRADIENT + 1, GRADIENT + 2], -1)  # R, G, B differ by one


def test_nchw_rgb_with_mean_and_std(tmp_path: Path) -> None:
    config = ImagePreprocessing(mean=[1, 2, 3], std=[2, 2, 2])
    classifier = bind_image_classifier("m", tmp_path, config, _signature((-1, 3, 6, 8)))
    tensor = classifier.preprocess(_png(IMAGE))
    assert tensor.shape == (1, 3, 6, 8) and tensor.dtype == np.float32
    expected = (IMAGE.astype(np.float32) - [1, 2, 3]) / 2
    np.testing.assert_array_equal(tensor[0], expected.transpose(2, 0, 1))


def test_nhwc_bgr_with_scale(tmp_path: Path) -> None:
    config = ImagePreprocessing(layout="nhwc", color="bgr", scale=1 / 255)
    classifier = bind_image_classifier("m", tmp_path, config, _signature((-1, 6, 8, 3)))
    tensor = classifier.preprocess(_png(IMAGE))
    np.testing.assert_allclose(tensor[0], IMAGE[:, :, ::-1].astype(np.float32) / 255, rtol=1e-6)


def test_exact_resize_then_crop_and_uint8_models(tmp_path: Path) -> None:
    config = ImagePreprocessing.model_validate({"resize": {"exact": [12, 16]}, "center_crop": [4, 4]})
    classifier = bind_image_classifier("m", tmp_path, config, _signature((-1, 3, 4, 4), "UINT8"))
    tensor = classifier.preprocess(_png(IMAGE))
    assert tensor.shape == (1, 3, 4, 4) and tensor.dtype == np.uint8
    resized = np.asarray(Image.fromarray(IMAGE).resize((16, 12), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(tensor[0], resized[4:8, 6:10].transpose(2, 0, 1))


def test_softmax_and_labels(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    config = ImagePreprocessing(labels_file="labels.txt")
    classifier = bind_image_classifier("m", tmp_path, config, _signature((-1, 3, 6, 8)))
    best = classifier.top_k(np.array([1.0, 3.0, 2.0]), 2)
    assert [p["label"] for p in best] == ["dog", "bird"]
    expected = np.exp([3.0, 2.0]) / np.exp([1.0, 3.0, 2.0]).sum()
    np.testing.assert_allclose([p["confidence"] for p in best], expected)


@pytest.mark.parametrize(("config", "shape", "words"), [
    ({"input": "image"}, (-1, 3, 6, 8), "'image.input'"),
    ({"output": "probs"}, (-1, 3, 6, 8), "'image.output'"),
    ({"labels_file": "missing.txt"}, (-1, 3, 6, 8), "'image.labels_file'"),
    ({"layout": "nhwc"}, (-1, 3, 6, 8), "'image.layout'"),
    ({"center_crop": [5, 5]}, (-1, 3, 6, 8), "'image.center_crop'"),
    ({}, (-1, 784), "'image.layout'"),
])
def test_settings_that_do_not_fit_the_model(tmp_path: Path, config: dict, shape: tuple[int, ...],
                                            words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        bind_image_classifier("m", tmp_path, ImagePreprocessing.model_validate(config), _signature(shape))


def test_large_jpegs_decode_at_reduced_size_with_the_same_result(tmp_path: Path) -> None:
    from skimage import data

    photo = Image.fromarray(data.chelsea()).resize((451 * 6, 300 * 6), Image.Resampling.BICUBIC)  # 2706 x 1800
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95)
    config = ImagePreprocessing.model_validate({"resize": {"shorter_side": 256}, "center_crop": [224, 224]})
    classifier = bind_image_classifier("m", tmp_path, config, _signature((-1, 3, 224, 224)))
    fast = classifier.preprocess(buffer.getvalue())
    full = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").resize((385, 256), Image.Resampling.BILINEAR)
    left, top = (385 - 224) // 2, 16
    reference = np.asarray(full.crop((left, top, left + 224, top + 224)), np.float32).transpose(2, 0, 1)
    assert fast.shape == (1, 3, 224, 224)
    assert np.abs(fast[0] - reference).mean() < 2.0  # pixel levels out of 255: the same picture


def test_uint8_models_get_sixteen_bit_pictures_scaled_to_8_bits(tmp_path: Path) -> None:
    classifier = bind_image_classifier("m", tmp_path, ImagePreprocessing(), _signature((-1, 3, 6, 8), "UINT8"))
    buffer = io.BytesIO()
    Image.fromarray(GRADIENT.astype(np.uint16) * 257).save(buffer, "PNG")  # the gradient in 16 bits
    tensor = classifier.preprocess(buffer.getvalue())
    assert tensor.dtype == np.uint8
    for channel in tensor[0]:
        np.testing.assert_array_equal(channel, GRADIENT)


def test_a_sideways_jpeg_decoded_at_reduced_size_comes_out_upright(tmp_path: Path) -> None:
    """A large JPEG stored turned by a quarter, with its orientation tag, decoded at reduced size for an exact
    resize: it comes out as the upright photo does, within JPEG's rounding."""
    rng = np.random.default_rng(0)
    upright = Image.fromarray(np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((40, 40, 1))).astype(np.uint8))
    config = ImagePreprocessing.model_validate({"resize": {"exact": [60, 80]}})
    classifier = bind_image_classifier("m", tmp_path, config, _signature((-1, 3, 60, 80), "UINT8"))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned a quarter to the right: shown turned left
    stored, straight = io.BytesIO(), io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_270).save(stored, "JPEG", quality=95, exif=exif.tobytes())
    upright.save(straight, "JPEG", quality=95)
    turned, reference = classifier.preprocess(stored.getvalue()), classifier.preprocess(straight.getvalue())
    assert turned.shape == reference.shape == (1, 3, 60, 80)
    assert np.abs(turned.astype(int) - reference.astype(int)).mean() < 3


def test_tensorflow_resize_reads_the_nearest_two_by_two_pixels(tmp_path: Path) -> None:
    """`antialias: false` is tf.image.resize's bilinear (half-pixel centres): halving a picture averages each
    2x2 block, where Pillow's filter, widened by the scale, also reads the pixels around it."""
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    tf_style = bind_image_classifier("m", tmp_path, ImagePreprocessing(
        layout="nhwc", resize={"exact": [4, 6], "antialias": False}), _signature((-1, 4, 6, 3)))
    blocks = picture.astype(np.float32).reshape(4, 2, 6, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(tf_style.preprocess(_png(picture))[0], blocks, atol=1e-4)
    pillow = bind_image_classifier("m", tmp_path, ImagePreprocessing(layout="nhwc", resize={"exact": [4, 6]}),
                                   _signature((-1, 4, 6, 3)))
    assert np.abs(pillow.preprocess(_png(picture))[0] - blocks).max() > 5
    # enlarging: positions between pixels weigh their two neighbours by distance; edges repeat the border
    row = np.array([[[0, 0, 0], [100, 100, 100]]], dtype=np.uint8)  # 1 x 2
    enlarged = bind_image_classifier("m", tmp_path, ImagePreprocessing(
        layout="nhwc", resize={"exact": [1, 4], "antialias": False}), _signature((-1, 1, 4, 3)))
    np.testing.assert_allclose(enlarged.preprocess(_png(row))[0, 0, :, 0], [0, 25, 75, 100])


def test_a_crop_fraction_keeps_the_centre_before_resizing(tmp_path: Path) -> None:
    """tf.image.central_crop's margins: truncated, so 0.5 of 9 rows keeps rows 2 to 6 (5 rows)."""
    picture = np.zeros((9, 10, 3), dtype=np.uint8)
    picture[2:7, 2:8] = 200  # the part kept: rows 2-6, columns 2.5 -> 2 to 7
    classifier = bind_image_classifier("m", tmp_path, ImagePreprocessing(layout="nhwc", crop_fraction=0.5),
                                       _signature((-1, 5, 6, 3), "UINT8"))
    kept = classifier.preprocess(_png(picture))[0]
    assert kept.shape == (5, 6, 3) and (kept == 200).all()


def test_tf1_resize_reads_pixel_i_at_i_times_the_scale(tmp_path: Path) -> None:
    """`half_pixel_centers: false` (TF1's resize_bilinear by default): halving reads every other pixel, from the
    first, where half-pixel centres average pairs."""
    picture = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
    classifier = bind_image_classifier("m", tmp_path, ImagePreprocessing(
        layout="nhwc", resize={"exact": [4, 6], "antialias": False, "half_pixel_centers": False}),
        _signature((-1, 4, 6, 3)))
    np.testing.assert_array_equal(classifier.preprocess(_png(picture))[0], picture[::2, ::2])
    with pytest.raises(ValueError, match="set `antialias: false` too"):
        ImagePreprocessing(resize={"exact": [4, 6], "half_pixel_centers": False})


def test_tensorflow_bicubic_weighs_four_pixels_with_keys_kernel(tmp_path: Path) -> None:
    """`method: bicubic` with `antialias: false` (tf.image.resize's): halving reads 4 pixels a side with weights
    -1/16, 9/16, 9/16, -1/16 (Keys' kernel at a half-pixel offset); at the border the taps outside weigh 0 and the
    others are renormalized."""
    row = np.array([[[0] * 3, [16] * 3, [32] * 3, [48] * 3, [0] * 3, [160] * 3, [0] * 3, [0] * 3]], np.uint8)
    classifier = bind_image_classifier("m", tmp_path, ImagePreprocessing(
        layout="nhwc", resize={"exact": [1, 4], "antialias": False, "method": "bicubic"}), _signature((-1, 1, 4, 3)))
    got = classifier.preprocess(_png(row))[0, 0, :, 0]
    values = row[0, :, 0].astype(int)
    inner = [(-values[i - 1] + 9 * values[i] + 9 * values[i + 1] - values[i + 2]) / 16 for i in (2, 4)]
    np.testing.assert_allclose(got[1:3], inner, atol=1e-4)
    first = (9 * 0 + 9 * 16 - 32) / 17  # the tap left of the picture dropped: 9 + 9 - 1 = 17 sixteenths remain
    np.testing.assert_allclose(got[0], first, atol=1e-4)


def test_a_square_crop_fraction_keeps_a_centred_square_of_the_shorter_side(tmp_path: Path) -> None:
    """`crop_square: true` (TensorFlow's official EfficientNet preprocessing): 0.5 of a 10x7 picture's shorter side
    is a side of 3 (truncated), its margins rounded up: rows 4 to 6, columns 2 to 4."""
    picture = np.zeros((10, 7, 3), dtype=np.uint8)
    picture[4:7, 2:5] = 90
    classifier = bind_image_classifier("m", tmp_path, ImagePreprocessing(layout="nhwc", crop_fraction=0.5,
                                                                         crop_square=True),
                                       _signature((-1, 3, 3, 3), "UINT8"))
    assert (classifier.preprocess(_png(picture))[0] == 90).all()
    with pytest.raises(ValueError, match="set it too"):
        ImagePreprocessing(crop_square=True)
