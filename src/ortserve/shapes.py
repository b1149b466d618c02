"""What a tensor's shape says about it, where a sample of a dynamic size has to be made up."""

from __future__ import annotations

from collections.abc import Sequence

# Height and width to give an image input whose size is dynamic: a CNN's strides shrink small pictures to 1x1
# before its last stages (and ONNX Runtime's NCHWc convolution fails on MobileNetV3 there)
IMAGE_SIDE = 224
COLOUR_CHANNELS = (1, 3, 4)


def image_axes(dims: Sequence[object]) -> tuple[int, ...]:
    """The height and width axes of a batch of images (4-D, colour channels last or first), else none."""
    if len(dims) != 4:
        return ()
    if dims[3] in COLOUR_CHANNELS:
        return (1, 2)
    if dims[1] in COLOUR_CHANNELS:
        return (2, 3)
    return ()
