"""What preparing one uploaded picture costs (decode, resize, crop, normalize: runtime.image), per resize kind, in
fresh processes, for one source tree or several (an A/B): medians of the rounds, and their ranges.

    .venv/bin/python benchmarks/image_preprocess.py --tree before=/tmp/before/src --tree now=src --rounds 8

A round runs each tree once, one after the other, each in a new process that times `--images` preprocessings of a
640x480 JPEG of blurred noise after 20 untimed ones. A tree without a setting (an older one) shows "n/a".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_PROBE = r"""
import io, json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from PIL import Image
from ortserve.dtypes import BY_V2
from ortserve.repository.config import ImagePreprocessing
from ortserve.runtime.image import ImageClassifier
from ortserve.runtime.signature import TensorSpec

SETTINGS = {
    "pillow: shorter side 256, crop 224": {"resize": {"shorter_side": 256}, "center_crop": [224, 224],
                                           "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                           "std": [0.229, 0.224, 0.225]},
    "tensorflow: resize 224x224": {"resize": {"exact": [224, 224], "antialias": False}, "layout": "nhwc"},
    "tf1: crop 0.875, resize 224x224": {"crop_fraction": 0.875, "layout": "nhwc",
                                        "resize": {"exact": [224, 224], "antialias": False,
                                                   "half_pixel_centers": False}},
}
rng = np.random.default_rng(0)
noise = Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8))
buffer = io.BytesIO()
noise.resize((640, 480), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
picture, images = buffer.getvalue(), int(sys.argv[2])
found = {}
for name, setting in SETTINGS.items():
    try:
        config = ImagePreprocessing.model_validate(setting)
    except ValueError:
        found[name] = None
        continue
    shape = (-1, 3, 224, 224) if config.layout == "nchw" else (-1, 224, 224, 3)
    classifier = ImageClassifier(config, TensorSpec("x", BY_V2["FP32"], shape), TensorSpec("y", BY_V2["FP32"],
                                 (-1, 1000)), None)
    for _ in range(20):
        classifier.preprocess(picture)
    started = time.perf_counter()
    for _ in range(images):
        classifier.preprocess(picture)
    found[name] = (time.perf_counter() - started) / images * 1000
print(json.dumps(found))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=SRC (default: now=src)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    trees = dict(tree.split("=", 1) for tree in args.tree) or {"now": "src"}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, source in trees.items():
            answer = subprocess.run([sys.executable, "-c", _PROBE, source, str(args.images)], check=True,
                                    capture_output=True, text=True)
            for setting, milliseconds in json.loads(answer.stdout).items():
                if milliseconds is not None:
                    times.setdefault((setting, name), []).append(milliseconds)
    settings = list(dict.fromkeys(setting for setting, _ in times))
    print(f"| setting | {' | '.join(trees)} |")
    print(f"|---|{'---|' * len(trees)}")
    for setting in settings:
        cells = []
        for name in trees:
            found = times.get((setting, name))
            cells.append("n/a" if not found else
                         f"{statistics.median(found):.2f} ms ({min(found):.2f}-{max(found):.2f})")
        print(f"| {setting} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
