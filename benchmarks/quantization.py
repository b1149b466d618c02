"""INT8 against FP32 in process, in one run, for the floors of the optimization issue:

- ResNet50 (random weights) static INT8 at batch 1,
- EfficientNet-Lite0 (real weights) static INT8 at batch 1, naive and accuracy-aware, with top-1 agreement on
  crops of the built-in photographs,
- all-MiniLM-L6-v2 dynamic INT8 at batch 8, with cosine to FP32 on real sentences.

FP32 and INT8 are timed in alternating rounds (the machine is shared) and compared as ratios of medians.
Usage: python benchmarks/quantization.py [--rounds 5] [--only resnet50 efficientnet minilm]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortserve.examples import demo
from ortserve.examples.models import resnet50, save
from ortserve.optimize import accuracy_aware, machine, quantize
from ortserve.optimize.commands import Judging, QuantizeRequest, judge, quantize_model, samples_for
from ortserve.optimize.data import Samples
from ortserve.optimize.measure import batch_of, open_session, time_runs
from ortserve.optimize.source import resolve

WORK = Path(__file__).parent / "work" / "quantization"
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent.parent))  # tests.convert.factories and the sentences


def alternate(fp32: Path, int8: Path, feed: dict[str, np.ndarray], rounds: int) -> dict[str, float]:
    sessions = {"fp32": open_session(fp32), "int8": open_session(int8)}
    latencies: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        for name, session in sessions.items():
            latencies[name].append(time_runs(session, feed, seconds=2.0).p50_ms)
    fp32_ms, int8_ms = statistics.median(latencies["fp32"]), statistics.median(latencies["int8"])
    return {"fp32_ms": round(fp32_ms, 3), "int8_ms": round(int8_ms, 3), "speedup": round(fp32_ms / int8_ms, 3),
            "fp32_rounds": [round(v, 3) for v in latencies["fp32"]],
            "int8_rounds": [round(v, 3) for v in latencies["int8"]]}


def bench_resnet50(rounds: int) -> dict[str, object]:
    repository = WORK / "resnet50"
    shutil.rmtree(repository, ignore_errors=True)
    save(resnet50(), repository, "resnet50")
    rng = np.random.default_rng(0)
    calibration = WORK / "resnet50-calibration.npz"
    np.savez(calibration, input=rng.standard_normal((32, 3, 224, 224)).astype(np.float32))
    source = resolve("resnet50", repository)
    outcome, _ = quantize_model(source, QuantizeRequest("static", str(calibration), 32), None,
                                Judging(str(calibration), 32, task="classification"), progress=print)
    feed = {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    return {**alternate(source.path, outcome.path, feed, rounds), "top1_agreement": outcome.comparison.top1_agreement}


def bench_efficientnet(rounds: int, crops: int) -> dict[str, object]:
    repository = WORK / "efficientnet"
    if not (repository / demo.MODEL / "1").is_dir():
        demo.build(repository)
    for extra in sorted(p for p in (repository / demo.MODEL).iterdir() if p.name.isdigit() and p.name != "1"):
        shutil.rmtree(extra)
    source = resolve(demo.MODEL, repository, 1)
    judging = Judging("samples", crops)
    naive, _ = quantize_model(source, QuantizeRequest("static", "samples", 128), None, judging, progress=print)
    feed = batch_of(samples_for(source, "samples", 1, seed=5), 1)
    result: dict[str, object] = {"naive": {**alternate(source.path, naive.path, feed, rounds),
                                           **naive.comparison.as_dict()}}
    result["agreement_by_fp32_confidence"] = confidence_split(source.path, naive.path,
                                                              samples_for(source, "samples", crops, seed=1))
    # the accuracy-aware search towards a 1 % budget, kept whether or not it meets it
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        work = Path(scratch)
        quantize.preprocess(source.path, work / "pre.onnx")
        evaluation = samples_for(source, "samples", crops, seed=1)
        search = accuracy_aware.search(work / "pre.onnx", work, samples_for(source, "samples", 128, seed=0),
                                       evaluation, quantize.StaticOptions(), 0.01,
                                       judge(source, evaluation, judging))
        result["accuracy_aware"] = {**alternate(source.path, search.model, feed, rounds), **search.as_dict(),
                                    **search.comparison.as_dict()}
    return result


def confidence_split(fp32: Path, int8: Path, samples: Samples) -> dict[str, object]:
    """Top-1 agreement where FP32 itself is sure (top-1 probability >= 0.5) and where it is not."""
    reference = ort.InferenceSession(str(fp32)).run(None, samples.feeds)[0]
    variant = ort.InferenceSession(str(int8)).run(None, samples.feeds)[0]
    probabilities = np.exp(reference - reference.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    sure = probabilities.max(1) >= 0.5
    agree = reference.argmax(1) == variant.argmax(1)
    return {"median_fp32_top1_probability": round(float(np.median(probabilities.max(1))), 3),
            "sure_samples": int(sure.sum()), "agreement_where_sure": round(float(agree[sure].mean()), 4),
            "unsure_samples": int((~sure).sum()), "agreement_where_unsure": round(float(agree[~sure].mean()), 4)}


def bench_minilm(rounds: int) -> dict[str, object]:
    from tests.optimize.conftest import SENTENCES, tokens

    from ortserve.convert.pipeline import ConvertRequest, convert
    from ortserve.convert.spec import InputSpec

    repository = WORK / "minilm"
    shutil.rmtree(repository, ignore_errors=True)
    feeds = WORK / "minilm-tokens.npz"
    np.savez(feeds, **tokens(SENTENCES))
    results = {}
    for exporter in ("torchscript", "torch.export"):
        model = f"minilm-{exporter.replace('.', '-')}"
        convert(ConvertRequest(source="tests.convert.factories:minilm", repository=repository, model=model,
                               inputs=[InputSpec.parse("input_ids:int64:batch,sequence"),
                                       InputSpec.parse("attention_mask:int64:batch,sequence")],
                               outputs=["embedding"], samples_file=feeds, exporter=exporter))
        source = resolve(model, repository, 1)
        outcome, _ = quantize_model(source, QuantizeRequest("dynamic"), None, Judging(str(feeds), 64),
                                    progress=print)
        batch = {name: array[:8] for name, array in np.load(feeds).items()}
        results[exporter] = {**alternate(source.path, outcome.path, batch, rounds),
                             "cosine_mean": outcome.comparison.cosine_mean,
                             "cosine_min": outcome.comparison.cosine_min,
                             "sequence_length": int(batch["input_ids"].shape[1])}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crops", type=int, default=300, help="EfficientNet-Lite0 evaluation crops")
    parser.add_argument("--only", nargs="*", default=["resnet50", "efficientnet", "minilm"])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict[str, object] = {"started": started, "machine": machine.describe(),
                                  "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                                  "python": platform.python_version(), "rounds": args.rounds,
                                  "vnni_defaults": quantize.StaticOptions().describe()}
    if "resnet50" in args.only:
        results["resnet50"] = bench_resnet50(args.rounds)
        print(json.dumps(results["resnet50"]), flush=True)
    if "efficientnet" in args.only:
        results["efficientnet"] = bench_efficientnet(args.rounds, args.crops)
        print(json.dumps(results["efficientnet"]), flush=True)
    if "minilm" in args.only:
        results["minilm"] = bench_minilm(args.rounds)
        print(json.dumps(results["minilm"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"{started[:10]}-quantization.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
