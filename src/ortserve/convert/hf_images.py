"""A Hugging Face image classifier's preprocessing (its `preprocessor_config.json`, read by transformers' image
processor so that the processor's own defaults fill what the file leaves out) as the server's `image:` section,
so the converted model takes pictures over the image API as transformers prepares them.

Only processors whose steps are resize, centre crop, rescale, normalize and a channel flip, in that order, are
translated (ViT, DeiT, BEiT, BiT and DINOv2, CLIP, ConvNeXt and ResNet, MobileViT); another, or a setting the
server does not reproduce (a resample other than bilinear or bicubic, a crop larger than the resized picture),
leaves the model without an image section, said in the log: it still takes `pixel_values` tensors.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROCESSOR_FILE = "preprocessor_config.json"
STANDARD_PROCESSORS = {"ViTImageProcessor", "DeiTImageProcessor", "BeitImageProcessor", "BitImageProcessor",
                       "CLIPImageProcessor", "ConvNextImageProcessor", "MobileViTImageProcessor"}
RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's numbers
CONVNEXT_CROP_BELOW = 384  # ConvNeXt's processor crops (crop_pct) only below this size, and warps to a square above


def _dim(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return None if value is None else int(value)


def _resize_and_crop(processor: Any, kind: str) -> tuple[dict[str, Any], list[int] | None] | None:
    """The resize section and centre crop [height, width]; None when the size is of a kind not reproduced."""
    size = processor.size
    height, width, shortest = _dim(size, "height"), _dim(size, "width"), _dim(size, "shortest_edge")
    crop_size = getattr(processor, "crop_size", None)
    crop = None
    if getattr(processor, "do_center_crop", False) and crop_size is not None:
        crop_height, crop_width = _dim(crop_size, "height"), _dim(crop_size, "width")
        if crop_height is None or crop_width is None:  # a crop by another measure than height and width
            return None
        crop = [crop_height, crop_width]
    if height is not None and width is not None and _dim(size, "longest_edge") is None:
        return {"exact": [height, width]}, crop
    if shortest is None or _dim(size, "longest_edge") is not None:
        return None
    if kind == "ConvNextImageProcessor":
        if shortest >= CONVNEXT_CROP_BELOW:
            return {"exact": [shortest, shortest]}, None
        return {"shorter_side": int(shortest / processor.crop_pct), "longer_side": "truncate"}, [shortest, shortest]
    return {"shorter_side": shortest, "longer_side": "truncate"}, crop


def _fits(crop: list[int], resize: dict[str, Any]) -> bool:
    """Whether the crop lies within every picture resized so (transformers would pad it)."""
    if "exact" in resize:
        return crop[0] <= resize["exact"][0] and crop[1] <= resize["exact"][1]
    return max(crop) <= resize["shorter_side"]


def image_settings(transformers: Any, path: Path, has_labels: bool) -> dict[str, Any] | None:
    """The `image:` section for the classifier saved at `path`, or None (logged)."""
    try:
        document = json.loads((path / PROCESSOR_FILE).read_text()) if (path / PROCESSOR_FILE).is_file() else {}
        kind = str(document.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil") \
            if isinstance(document, dict) else ""
        processor = transformers.AutoImageProcessor.from_pretrained(str(path)) if kind in STANDARD_PROCESSORS \
            else None
    # ValueError (JSONDecodeError among them), OSError: a processor file neither json nor transformers reads
    except (ValueError, OSError) as exc:
        log.warning("%s: no image section for the image API (%s: %s); the model takes pixel_values", path,
                    PROCESSOR_FILE, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    if processor is None:
        log.info("%s: no image section for the image API (%s is not an image processor ortserve reproduces); the "
                 "model takes pixel_values", path, kind or f"no {PROCESSOR_FILE}")
        return None
    sized = _resize_and_crop(processor, kind) if processor.do_resize else None
    method = RESAMPLE.get(int(processor.resample))
    if sized is None or method is None:
        log.info("%s: no image section for the image API (%s's size %s, resample %s are not reproduced); the model "
                 "takes pixel_values", path, kind, processor.size, processor.resample)
        return None
    resize, crop = sized
    if crop is not None and not _fits(crop, resize):
        log.info("%s: no image section for the image API (its crop %s is larger than the resized picture %s); the "
                 "model takes pixel_values", path, crop, resize)
        return None
    settings: dict[str, Any] = {"resize": resize | {"method": method}, "layout": "nchw"}
    if crop is not None:
        settings["center_crop"] = crop
    if getattr(processor, "do_flip_channel_order", False):
        settings["color"] = "bgr"
    if processor.do_rescale:
        settings["scale"] = float(processor.rescale_factor)
    if getattr(processor, "do_normalize", False):
        settings["mean"] = [float(value) for value in processor.image_mean]
        settings["std"] = [float(value) for value in processor.image_std]
    if has_labels:
        settings["labels_file"] = "labels.txt"
    return settings
