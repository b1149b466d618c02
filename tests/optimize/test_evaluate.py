"""ortserve evaluate: each figure recomputed here in a different way, and the budget's exit code."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

from ortserve.cli import main
from ortserve.examples.models import mlp, save
from ortserve.optimize.commands import Judging, evaluate
from ortserve.optimize.data import builtin_photos, load
from ortserve.optimize.evaluate import _classification
from ortserve.optimize.source import resolve
from ortserve.runtime.signature import read_signature


def perturbed_mlp(noise: float, seed: int = 1) -> onnx.ModelProto:
    """The MLP with Gaussian noise added to its weights: a stand-in for a lossy variant."""
    model = mlp()
    rng = np.random.default_rng(seed)
    for index, initializer in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(initializer)
        noisy = values + rng.standard_normal(values.shape).astype(np.float32) * noise * values.std()
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), initializer.name))
    return model


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    repository = tmp_path / "repository"
    save(mlp(), repository, "mlp", 1)
    save(perturbed_mlp(0.5), repository, "mlp", 2)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 784)).astype(np.float32)
    labels = rng.integers(0, 10, 100)
    np.savez(tmp_path / "validation.npz", input=x, labels=labels)
    return tmp_path


def test_classification_figures(pair: Path) -> None:
    reference = resolve("mlp", pair / "repository", 1)
    comparison = evaluate(reference, pair / "repository" / "mlp" / "2" / "model.onnx",
                          Judging(str(pair / "validation.npz"), task="classification"))
    stored = np.load(pair / "validation.npz")
    a, b = (ort.InferenceSession(str(pair / "repository" / "mlp" / v / "model.onnx")).run(None, {"input":
                                                                                             stored["input"]})[0]
            for v in ("1", "2"))
    agreement = sum(int(np.argmax(row_a) == np.argmax(row_b)) for row_a, row_b in zip(a, b, strict=True)) / len(a)
    overlaps = [len(set(sorted(range(10), key=lambda i, r=row_a: -r[i])[:5])
                    & set(sorted(range(10), key=lambda i, r=row_b: -r[i])[:5])) / 5
                for row_a, row_b in zip(a, b, strict=True)]
    assert comparison.samples == 100
    assert comparison.top1_agreement == pytest.approx(agreement)
    assert comparison.top5_overlap == pytest.approx(sum(overlaps) / len(overlaps))
    assert comparison.reference_accuracy == pytest.approx(np.mean(a.argmax(1) == stored["labels"]))
    assert comparison.variant_accuracy == pytest.approx(np.mean(b.argmax(1) == stored["labels"]))
    assert comparison.max_abs_error == pytest.approx(float(np.abs(a - b).max()), rel=1e-6)
    assert comparison.loss == pytest.approx(1 - agreement)
    assert 0.3 < agreement < 1.0  # the perturbation changes some answers, not all


def test_embedding_cosine(pair: Path) -> None:
    reference = resolve("mlp", pair / "repository", 1)
    comparison = evaluate(reference, pair / "repository" / "mlp" / "2" / "model.onnx",
                          Judging(str(pair / "validation.npz"), task="embedding"))
    x = np.load(pair / "validation.npz")["input"]
    a, b = (ort.InferenceSession(str(pair / "repository" / "mlp" / v / "model.onnx")).run(None, {"input": x})[0]
            .astype(np.float64) for v in ("1", "2"))
    cosines = [float(u @ v / np.sqrt((u @ u) * (v @ v))) for u, v in zip(a, b, strict=True)]
    assert comparison.cosine_mean == pytest.approx(np.mean(cosines), abs=1e-9)
    assert comparison.cosine_min == pytest.approx(min(cosines), abs=1e-9)


def test_budget_decides_the_exit_code(pair: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["evaluate", "mlp", "--repository", str(pair / "repository"), "--variant-version", "2", "--data",
            str(pair / "validation.npz"), "--task", "classification"]
    loss = evaluate(resolve("mlp", pair / "repository", 1), pair / "repository" / "mlp" / "2" / "model.onnx",
                    Judging(str(pair / "validation.npz"), task="classification")).loss
    assert loss > 0
    assert main(base) == 0
    assert f"loss {loss:.4f}" in capsys.readouterr().out
    assert main([*base, "--accuracy-budget", "0"]) == 3
    assert "is over the budget 0" in capsys.readouterr().err
    assert main([*base, "--accuracy-budget", repr(loss)]) == 0


def test_evaluate_needs_exactly_one_variant(pair: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "mlp", "--repository", str(pair / "repository")]) == 2
    assert "exactly one of --variant FILE or --variant-version N" in capsys.readouterr().err


def test_builtin_samples_are_distinct_preprocessed_crops(demo_repository: Path) -> None:
    source = resolve("efficientnet_lite0", demo_repository)
    from ortserve.optimize.commands import image_classifier

    classifier = image_classifier(source)
    assert classifier is not None
    signature = read_signature(ort.InferenceSession(str(source.path)))
    samples = load("samples", signature, classifier, 24, seed=0)
    crops = samples.feeds["input"]
    assert crops.shape == (24, 3, 224, 224) and crops.dtype == np.float32
    assert len({row.tobytes() for row in crops}) == 24
    # (pixel - 127) / 128 keeps values inside [-1, 1]
    assert crops.min() >= -1.0 and crops.max() <= 1.0
    assert len(builtin_photos()) == 10
    again = load("samples", signature, classifier, 24, seed=0).feeds["input"]
    np.testing.assert_array_equal(crops, again)


def test_image_folder_with_numbered_class_folders_gives_labels(demo_repository: Path, tmp_path: Path) -> None:
    for label, photo in ((281, builtin_photos()[1]), (0, builtin_photos()[0])):
        (tmp_path / "images" / str(label)).mkdir(parents=True)
        photo.save(tmp_path / "images" / str(label) / "photo.jpg")
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "ignored.txt.bak", "PNG")
    source = resolve("efficientnet_lite0", demo_repository)
    from ortserve.optimize.commands import samples_for

    samples = samples_for(source, str(tmp_path / "images"), 0, seed=0)
    assert len(samples) == 2
    assert sorted(samples.labels.tolist()) == [0, 281]


def test_tied_scores_rank_as_argmax_ranks_them_on_every_cpu() -> None:
    """Quantized outputs tie often; numpy's SIMD argsort (AVX2, AVX-512) breaks ties in no fixed order, which made
    top-1 agreement differ from argmax's by machine. Ties go to the lower class index, as argmax and the served
    classification extension break them."""
    rng = np.random.default_rng(5)
    variant = rng.uniform(-1.0, 0.5, (45 * 4, 10))
    reference = variant.copy()
    for row, (first, second) in enumerate(itertools.combinations(range(10), 2)):  # each pair tied at the top
        variant[4 * row:4 * row + 4, [first, second]] = 1.0
        reference[4 * row:4 * row + 4, [first, second]] = 1.01, 1.0  # the reference's best: the tie's first
    assert _classification(reference, variant, None)["top1_agreement"] == 1.0
