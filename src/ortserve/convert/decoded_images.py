"""SavedModels whose signature takes encoded images (TF Serving's image models: a string tensor of JPEG or PNG
bytes, sent as `{"b64": ...}`) and decodes, resizes and scales them in the graph. ONNX has no image decoder, and
ortserve decodes images itself (config.yaml `image:`, runtime.image), so the model is converted from the decoded
image batch on, and its `image:` section is fitted to what the graph does to test pictures:

- where: the first tensor after the string input that every output depends on and that holds a batch of 3-channel
  images of a fixed size (`tf.map_fn` over `tf.io.decode_jpeg` and `tf.image.resize` stacks one), its shape
  learnt by decoding test pictures of two sizes where the graph does not tell it (a TF1 loop's);
- how: the graph prepares smooth test pictures of other sizes and shapes, and each resize and crop ortserve can do
  (resize to the size; a central fraction, then the resize; the shorter side, then the centre), with Pillow's,
  TensorFlow's or TF1's bilinear or TensorFlow's bicubic, in either colour order, is compared with it: the closest
  one, with the per-channel scale and offset that fit its pixels to the graph's (least squares; a usual
  normalization when it fits within USUAL_WITHIN_LEVELS as well), becomes the model's `image:` section, provided
  it is within MOST_PIXEL_LEVELS_OFF of the graph's pixels (rms, on the 0-255 scale), else the model is refused
  by name.

The ONNX input keeps the signature's input name, so TF Serving's clients send their images unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ortserve.convert.graph_cut import cuts_off, downstream, upstream_tensors, without_control_inputs
from ortserve.convert.spec import InputSpec
from ortserve.dtypes import from_numpy
from ortserve.errors import InvalidInput
from ortserve.repository.config import ImagePreprocessing
from ortserve.runtime.image import ImageClassifier
from ortserve.runtime.signature import TensorSpec

# the decoders' ops, and the format test pictures are written in for each: PNG is lossless and DecodeImage reads it
_DECODERS = {"DecodeJpeg": "JPEG", "DecodeAndCropJpeg": "JPEG", "DecodePng": "PNG", "DecodeImage": "PNG",
             "DecodeBmp": "BMP", "DecodeGif": "GIF"}
MOST_PIXEL_LEVELS_OFF = 4.0
# TensorFlow decodes JPEGs with libjpeg's fast integer DCT, Pillow with its accurate one: ~1.6 levels apart (rms),
# some of which a fitted slope and offset absorb
USUAL_WITHIN_LEVELS = 1.0
# how much of the picture the usual central crops keep: Inception's and Keras' 0.875, and others seen in exports
# (EfficientNet's crop of size / (size + 32) of the shorter side is added per model)
_CROP_FRACTIONS = (0.875, 0.95, 0.9, 0.8, 0.75)
_CONVENTIONS: list[dict[str, Any]] = [  # usual normalizations, as config.yaml's `image:` writes them
    {},  # pixels as they are, 0-255
    {"std": [255.0] * 3},  # 0 to 1
    {"mean": [127.5] * 3, "std": [127.5] * 3},  # -1 to 1 (Inception, MobileNet)
    {"mean": [127.0] * 3, "std": [128.0] * 3},  # TF-Lite
    {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},  # ImageNet (torchvision)
    {"mean": [103.939, 116.779, 123.68]},  # Caffe's means, BGR (Keras' ResNet50, VGG)
    {"mean": [123.68, 116.779, 103.939]},  # the same means, RGB
]


@dataclass(frozen=True)
class DecodedImages:
    string_input: str  # the signature's input of encoded images
    starts: list[str]  # where the ONNX graph starts in the frozen graph: the decoded images, then the other inputs
    inputs: list[InputSpec]  # what the ONNX model takes: the image batch (named as the string input), the others
    settings: dict[str, Any]  # the model's config.yaml `image:` section
    pixel_levels_off: float  # how far ortserve's preprocessing is from the graph's (rms, 0-255 scale)
    decode: Callable[[np.ndarray], np.ndarray]  # the graph's own: encoded images (1-D, bytes) into the batch
    run: Callable[[list[np.ndarray]], list[np.ndarray]]  # the graph from `starts` on: its outputs
    picture_format: str  # test pictures' format, one the graph decodes
    graph_def: Any  # the frozen graph, without its control dependencies (graph_cut.without_control_inputs)
    any_size: bool  # the graph takes pictures of any size (else of its own only: it does not resize them)

    def read(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        """Encoded images (a TF Serving warmup request's) as the model's input, decoded by the graph."""
        import tensorflow as tf

        try:
            return {self.string_input: self.decode(encoded)}
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidInput(f"a warmup request's images do not decode: {str(exc).splitlines()[0]}") from None

    def sample(self, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Parity samples: pictures decoded by the graph itself, so the model sees images, not noise; the other
        inputs' as their specs make them."""
        spec = self.inputs[0]
        if isinstance(spec.dims[0], int):  # a graph that decodes one image at a time
            count = spec.dims[0]
        height, width = spec.dims[1:3] if self.settings["layout"] == "nhwc" else spec.dims[2:4]
        stretch = (lambda: rng.uniform(0.8, 1.6)) if self.any_size else (lambda: 1.0)
        pictures = [_smooth_picture(rng, round(int(height) * stretch()), round(int(width) * stretch()))
                    for _ in range(count)]
        images = np.concatenate([self.decode(np.array([_encoded(picture, self.picture_format)], dtype=object))
                                 for picture in pictures])
        return [images, *(_rows(other, count, rng) for other in self.inputs[1:])]


def _rows(spec: InputSpec, count: int, rng: np.random.Generator) -> np.ndarray:
    shape = spec.sample_shape()
    return InputSpec(spec.name, spec.dtype, (count, *shape[1:]) if spec.dims[:1] == ("batch",) else shape).sample(
        rng, 0, 8)


def find_decoder(graph_def: Any, inputs: list[InputSpec], input_tensors: list[str], output_tensors: list[str],
                 outputs: list[str]) -> DecodedImages | None:
    """The image decoding of a frozen graph (`inputs`: the signature's, fed by `input_tensors`; `outputs`: its
    names of `output_tensors`); None when no string input of it is decoded as images."""
    import tensorflow as tf

    decoding = _decoding_functions(graph_def)
    ops = {node.op for node in graph_def.node} | {node.op for function in graph_def.library.function
                                                   for node in function.node_def}
    formats = sorted({_DECODERS[op] for op in ops if op in _DECODERS})
    decoded = [index for index, spec in enumerate(inputs)
               if spec.dtype == object and _decodes(graph_def, input_tensors[index].split(":")[0], decoding)]
    if not decoded:
        return None
    if len(decoded) > 1:
        raise InvalidInput(f"the signature decodes images from {len(decoded)} inputs "
                           f"({', '.join(inputs[index].name for index in decoded)}); ortserve converts a model "
                           "that decodes one")
    (index,) = decoded
    string_input, input_tensor = inputs[index].name, input_tensors[index]
    others = [(spec, tensor) for spec, tensor in zip(inputs, input_tensors, strict=True) if tensor != input_tensor]
    graph_def = without_control_inputs(graph_def)
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    start, shape = _image_batch(wrapped, graph_def, input_tensor, output_tensors, formats)
    tensor = graph.get_tensor_by_name(start)
    starts = [start, *(other_tensor for _, other_tensor in others)]
    to_batch = wrapped.prune(feeds=[graph.get_tensor_by_name(input_tensor)], fetches=[tensor])
    from_starts = wrapped.prune(feeds=[graph.get_tensor_by_name(name) for name in starts],
                                fetches=[graph.get_tensor_by_name(name) for name in output_tensors])

    def decode(encoded: np.ndarray) -> np.ndarray:
        return np.asarray(to_batch(tf.constant(list(encoded.reshape(-1)), dtype=tf.string))[0])

    def run(feeds: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(output) for output in from_starts(*(tf.constant(feed) for feed in feeds))]

    layout = "nhwc" if shape[3] == 3 and shape[1] != 3 else "nchw"
    height, width = (shape[1], shape[2]) if layout == "nhwc" else (shape[2], shape[3])
    dtype = np.dtype(tensor.dtype.as_numpy_dtype)
    fitted = _fit(decode, formats, layout, height, width, dtype, string_input)
    dims: tuple[int | str, ...] = ("batch", height, width, 3) if layout == "nhwc" else ("batch", 3, height, width)
    if tensor.shape.rank and tensor.shape[0] is not None:  # a graph that decodes one image
        dims = (int(tensor.shape[0]), *dims[1:])
    settings = {"input": string_input, **fitted.settings, "layout": layout}
    rng = np.random.default_rng(0)
    answers = [run([batch, *(_rows(spec, len(batch), rng) for spec, _ in others)]) for batch in fitted.decoded]
    settings.update(_scores(answers, outputs))
    specs = [InputSpec(string_input, dtype, dims), *(spec for spec, _ in others)]
    return DecodedImages(string_input, starts, specs, settings, fitted.levels_off, decode, run,
                         fitted.picture_format, graph_def, fitted.any_size)


def _decoding_functions(graph_def: Any) -> set[str]:
    """The graph's library functions that decode images, themselves or through the functions they call."""
    calls: dict[str, set[str]] = {}
    decoding = set()
    for function in graph_def.library.function:
        name = function.signature.name
        calls[name] = {called for node in function.node_def for called in _called(node)}
        if any(node.op in _DECODERS for node in function.node_def):
            decoding.add(name)
    grown = True
    while grown:
        more = {name for name, called in calls.items() if name not in decoding and called & decoding}
        decoding |= more
        grown = bool(more)
    return decoding


def _called(node: Any) -> set[str]:
    """The functions a node runs (a While's body and condition, a call's function, an If's branches)."""
    return {value.func.name for value in node.attr.values() if value.HasField("func")} | {
        function.name for value in node.attr.values() for function in value.list.func}


def _decodes(graph_def: Any, source: str, decoding: set[str]) -> bool:
    """Whether images are decoded from the input node `source`: a decoder, or a function that runs one, is fed by
    it."""
    after = downstream(graph_def, source)
    return any(node.name in after and (node.op in _DECODERS or _called(node) & decoding) for node in graph_def.node)


def _image_batch(wrapped: Any, graph_def: Any, input_tensor: str, output_tensors: list[str],
                 formats: list[str]) -> tuple[str, list[int]]:
    """The first tensor after the string input that every output depends on only through it and that holds a
    batch of fixed-size 3-channel images, and its shape for one picture. Shapes are learnt by decoding test
    pictures of two sizes (a TF1 graph's loop leaves its stacked images of unknown shape); a graph that takes
    pictures of its own size only is read from its static shapes."""
    import tensorflow as tf

    graph = wrapped.graph
    producers = {node.name: node for node in graph_def.node}
    source = input_tensor.split(":")[0]
    after = downstream(graph_def, source)
    found = [output for node in graph_def.node if node.name in after and node.name != source
             for output in graph.get_operation_by_name(node.name).outputs
             if _may_hold_images(output) and cuts_off(producers, source, output.name, output_tensors)]
    # earliest first: a tensor has fewer tensors upstream than any that depends on it
    found = sorted(found, key=lambda tensor: len(upstream_tensors(producers, tensor.name)))[:_MOST_CANDIDATES]
    if found:
        probe = wrapped.prune(feeds=[graph.get_tensor_by_name(input_tensor)], fetches=found)
        picture_format = formats[0] if len(formats) == 1 else "PNG"
        rng = np.random.default_rng(1)
        try:
            shapes = [[np.shape(value) for value in probe(tf.constant([_encoded(_smooth_picture(rng, *size),
                                                                                picture_format)]))]
                      for size in _PROBE_SIZES]
        except tf.errors.InvalidArgumentError:  # pictures of its own size only: its static shapes must tell
            shapes = [[tuple(1 if dim is None else dim for dim in tensor.shape.as_list())
                       if tensor.shape.is_fully_defined() or _static_images(tensor) else () for tensor in found]]
        for index, tensor in enumerate(found):
            first = shapes[0][index]
            if all(shape[index] == first for shape in shapes) and _one_picture(first):
                return tensor.name, [int(dim) for dim in first]
    raise InvalidInput("the signature decodes images, but no batch of fixed-size 3-channel images (shape "
                       "[batch, height, width, 3]) lies between its string input and its outputs; ortserve "
                       "converts a model that decodes, resizes and stacks its images before the network")


_MOST_CANDIDATES = 16
_PROBE_SIZES = ((211, 317), (333, 229))  # height, width: two shapes no model takes as they are


def _may_hold_images(tensor: Any) -> bool:
    """Floats or bytes of rank 4 (or of a rank not known before they run)."""
    return (tensor.dtype.is_floating or tensor.dtype.name == "uint8") and tensor.shape.rank in (4, None)


def _static_images(tensor: Any) -> bool:
    shape = tensor.shape
    if shape.rank != 4:
        return False
    dims = shape.as_list()
    return None not in dims[1:] and 3 in (dims[1], dims[3])


def _one_picture(shape: tuple[int, ...]) -> bool:
    """A batch of one 3-channel picture (channels last or first)."""
    return len(shape) == 4 and shape[0] == 1 and 3 in (shape[1], shape[3]) and min(shape) > 0


@dataclass(frozen=True)
class _Fit:
    settings: dict[str, Any]  # resize, crop, colour, scale, mean, std
    levels_off: float
    picture_format: str  # the one the graph decodes
    decoded: list[np.ndarray]  # the test pictures, as the graph decoded them (one batch each)
    any_size: bool  # the graph took pictures of other sizes than its own


def _fit(decode: Callable[[np.ndarray], np.ndarray], formats: list[str], layout: str, height: int, width: int,
         dtype: np.dtype, string_input: str) -> _Fit:
    """The resize, crop, colour order and per-channel scale and offset with which ortserve's preprocessing of
    test pictures comes closest to the graph's."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    picture_format = formats[0] if len(formats) == 1 else "PNG"
    sizes = [(round(height * 1.25) + 7, round(width * 1.7) + 11), (round(height * 1.6) + 9, round(width * 1.1) + 5)]
    pictures = [_encoded(_smooth_picture(rng, *size), picture_format) for size in sizes]
    any_size = True
    try:
        decoded = [decode(np.array([picture], dtype=object)) for picture in pictures]
    except tf.errors.InvalidArgumentError:  # a graph that takes images of its own size only
        any_size = False
        pictures = [_encoded(_smooth_picture(rng, height, width), picture_format) for _ in range(2)]
        try:
            decoded = [decode(np.array([picture], dtype=object)) for picture in pictures]
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidInput(f"input {string_input!r}: the signature fails on {picture_format} test pictures of "
                               f"{width}x{height} and other sizes: {str(exc).splitlines()[0]}") from None
    graph_pixels = np.concatenate(decoded).astype(np.float64)
    best: tuple[float, dict[str, Any], np.ndarray, np.ndarray] | None = None
    for geometry in _geometries(height, width):
        ours = _ours(pictures, geometry, layout, height, width)
        for color in ("rgb", "bgr"):
            if color == "bgr":
                ours = ours[..., ::-1] if layout == "nhwc" else ours[:, ::-1]
            slopes, offsets = _channel_fits(ours, graph_pixels, layout)
            levels_off = _levels_off(ours, graph_pixels, layout, slopes, offsets)
            if best is None or levels_off < best[0]:
                best = (levels_off, {**geometry, "color": color}, ours, np.stack([slopes, offsets]))
    assert best is not None
    levels_off, settings, ours, (slopes, offsets) = best
    # a usual normalization, when it fits about as well as the least squares (which the decoders' differences pull
    # a little off the round values)
    conventions = [{}] if dtype.kind != "f" else _CONVENTIONS
    usual = min(((_levels_off(ours, graph_pixels, layout, *_line(convention)), convention)
                 for convention in conventions), key=lambda found: found[0])
    if dtype.kind != "f" or usual[0] <= levels_off + USUAL_WITHIN_LEVELS:
        levels_off = usual[0]
        settings.update(usual[1])
    else:
        settings.update({"mean": [_round(-offset / slope) for offset, slope in zip(offsets, slopes, strict=True)],
                         "std": [_round(1 / slope) for slope in slopes]})
    if levels_off > MOST_PIXEL_LEVELS_OFF:
        raise InvalidInput(f"input {string_input!r}: the signature decodes and prepares its images in a way ortserve's "
                           f"image preprocessing does not reproduce (the closest, {_described(settings)}, is "
                           f"{levels_off:.1f} pixel levels off, more than {MOST_PIXEL_LEVELS_OFF}); convert the "
                           "model behind the decoding instead (its Keras model or a signature of pixels)")
    return _Fit(settings, round(levels_off, 2), picture_format, decoded, any_size)


def _scores(answers: list[list[np.ndarray]], outputs: list[str]) -> dict[str, Any]:
    """The `image:` settings of the output POST /predict ranks: the first one of a score per class ([batch,
    classes], floats), named when it is not the first output, and marked as probabilities when its rows are
    (non-negative, each summing to 1: a softmax in the graph)."""
    for index, name in enumerate(outputs):
        found = [answer[index] for answer in answers]
        if all(scores.ndim == 2 and scores.shape[1] > 1 and scores.dtype.kind == "f" for scores in found):
            settings: dict[str, Any] = {"output": name} if index else {}
            if all(np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1, atol=1e-3) for scores in found):
                settings["scores"] = "probabilities"  # ranked as they are, with no softmax
            return settings
    return {}


def _geometries(height: int, width: int) -> list[dict[str, Any]]:
    """The resizes and crops to try, each with Pillow's bilinear, TensorFlow's bilinear and bicubic, and TF1's
    bilinear."""
    shorter = min(height, width)
    fractions = sorted({*_CROP_FRACTIONS, shorter / (shorter + 32)}, reverse=True)
    found: list[dict[str, Any]] = [{"resize": {"exact": [height, width]}}]
    for fraction in fractions:  # a central crop of the picture (Inception's) or square (EfficientNet's), resized
        found.append({"crop_fraction": fraction, "resize": {"exact": [height, width]}})
        found.append({"crop_fraction": fraction, "crop_square": True, "resize": {"exact": [height, width]}})
    # the shorter side, then the centre: a square crop of the picture, then the resize (EfficientNet's)
    for side in sorted({shorter, *(round(shorter / fraction) for fraction in fractions)}):
        found.append({"resize": {"shorter_side": side}, "center_crop": [height, width]})
    return [variant for geometry in found for variant in (
        geometry, {**geometry, "resize": {**geometry["resize"], "antialias": False}},
        {**geometry, "resize": {**geometry["resize"], "antialias": False, "half_pixel_centers": False}},
        {**geometry, "resize": {**geometry["resize"], "antialias": False, "method": "bicubic"}})]


def _ours(pictures: list[bytes], geometry: dict[str, Any], layout: str, height: int, width: int) -> np.ndarray:
    config = ImagePreprocessing.model_validate({**geometry, "layout": layout})
    shape = (-1, height, width, 3) if layout == "nhwc" else (-1, 3, height, width)
    classifier = ImageClassifier(config, TensorSpec("images", from_numpy(np.dtype(np.float32)), shape), TensorSpec(
        "scores", from_numpy(np.dtype(np.float32)), (-1, -1)), None)
    return np.concatenate([classifier.preprocess(picture) for picture in pictures]).astype(np.float64)


def _channel_fits(ours: np.ndarray, theirs: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the least-squares slope and offset from our pixels (0-255) to the graph's values."""
    axis = 3 if layout == "nhwc" else 1
    slopes, offsets = [], []
    for channel in range(3):
        x = np.take(ours, channel, axis=axis).reshape(-1)
        y = np.take(theirs, channel, axis=axis).reshape(-1)
        spread = float(np.var(x))
        slope = float(np.mean((x - x.mean()) * (y - y.mean())) / spread) if spread else 0.0
        slopes.append(slope)
        offsets.append(float(y.mean() - slope * x.mean()))
    return np.array(slopes), np.array(offsets)


def _levels_off(ours: np.ndarray, theirs: np.ndarray, layout: str, slopes: np.ndarray, offsets: np.ndarray) -> float:
    """How far `slope * pixel + offset` of our pixels is from the graph's values: the worst channel's rms, in
    pixel levels (0-255)."""
    axis = 3 if layout == "nhwc" else 1
    worst = 0.0
    for channel, (slope, offset) in enumerate(zip(slopes, offsets, strict=True)):
        if not slope:
            return float("inf")
        residual = np.take(theirs, channel, axis=axis) - (slope * np.take(ours, channel, axis=axis) + offset)
        worst = max(worst, float(np.sqrt(np.mean(residual ** 2))) / abs(float(slope)))
    return worst


def _line(convention: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel slope and offset of `(pixel * scale - mean) / std`."""
    scale = convention.get("scale", 1.0)
    mean = np.asarray(convention.get("mean", [0.0] * 3))
    std = np.asarray(convention.get("std", [1.0] * 3))
    return scale / std, -mean / std


def _round(value: float) -> float:
    return float(f"{value:.5g}")


def _described(settings: dict[str, Any]) -> str:
    resize = settings["resize"]
    shape = "square" if settings.get("crop_square") else "crop"
    text = f"central {settings['crop_fraction']} {shape}, " if "crop_fraction" in settings else ""
    text += f"resize to {resize['exact']}" if "exact" in resize else f"shorter side to {resize['shorter_side']}"
    kind = resize.get("method", "bilinear")
    text += (" (Pillow's bilinear)" if resize.get("antialias", True) else f" (TensorFlow's {kind})"
             if resize.get("half_pixel_centers", True) else " (TF1's bilinear)")
    if "center_crop" in settings:
        text += f", centre crop {settings['center_crop']}"
    return f"{text}, {settings['color'].upper()}"


def _smooth_picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB picture of waves per channel: slow ones, which a different crop or scale moves visibly, and a finer
    one, which Pillow's antialiasing filter softens and TensorFlow's bilinear does not."""
    rows = np.linspace(0, 1, height)[:, None]
    columns = np.linspace(0, 1, width)[None, :]
    channels = []
    for _ in range(3):
        wave = sum(np.sin(2 * np.pi * (rng.uniform(0.5, 2.5) * rows + rng.uniform(0.5, 2.5) * columns)
                          + rng.uniform(0, 2 * np.pi)) for _ in range(3))
        fine = np.sin(2 * np.pi * (rng.uniform(6, 10) * rows + rng.uniform(6, 10) * columns))
        channels.append(128 + 35 * wave + 15 * fine)
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def _encoded(picture: np.ndarray, picture_format: str) -> bytes:
    buffer = io.BytesIO()
    extra = {"quality": 98, "subsampling": 0} if picture_format == "JPEG" else {}
    Image.fromarray(picture).save(buffer, picture_format, **extra)
    return buffer.getvalue()
