"""The tuning report: Markdown for people, JSON for tools, and a plot of latency against throughput."""

from __future__ import annotations

import json
from pathlib import Path

from ortserve.optimize.tune import TuneResult


def write(result: TuneResult, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.json", directory / "report.md", directory / "report.png"]
    paths[0].write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    paths[1].write_text(markdown(result, paths[2].name))
    plot(result, paths[2])
    return paths


def markdown(result: TuneResult, plot_name: str) -> str:
    choice = result.choice
    slo = f", latency SLO {result.latency_slo_ms:g} ms" if result.latency_slo_ms else ""
    lines = [f"# Tuning {result.model}", "",
             f"Accuracy budget {result.budget:g}{slo}; {len(result.points)} points in {result.seconds:.0f} s.", "",
             f"**Chosen:** {choice.variant}, {choice.threads} threads x {choice.instances} instances, "
             f"{choice.execution_mode}, batch "
             f"{choice.batch_size}: p50 {choice.p50_ms:.2f} ms, {choice.rows_per_second:.1f} rows/s, loss "
             f"{choice.loss:.4f}." + (f" Published as {result.published}." if result.published else ""), "",
             "## Variants", "", "| variant | loss | accuracy figures |", "|---|---:|---|"]
    for variant in result.variants:
        lines.append(f"| {variant.name} | {variant.comparison.loss:.4f} | {variant.comparison.text()} |")
    for name, why in result.skipped.items():
        lines.append(f"| {name} | - | not built: {why} |")
    lines += ["", "## Points", "",
              "| variant | threads | instances | mode | batch | p50 ms | p90 ms | rows/s | loss | eligible |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for p in sorted(result.points, key=lambda p: -p.rows_per_second):
        mark = " **(chosen)**" if p == choice else ""
        lines.append(f"| {p.variant}{mark} | {p.threads} | {p.instances} | {p.execution_mode} | {p.batch_size} | "
                     f"{p.p50_ms:.2f} | "
                     f"{p.p90_ms:.2f} | {p.rows_per_second:.1f} | {p.loss:.4f} | {'yes' if p.eligible else 'no'} |")
    lines += ["", f"![latency against throughput]({plot_name})", ""]
    return "\n".join(lines)


def plot(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    for variant in result.variants:
        points = [p for p in result.points if p.variant == variant.name]
        axes.scatter([p.rows_per_second for p in points], [p.p50_ms for p in points],
                     label=f"{variant.name} (loss {variant.comparison.loss:.4f})",
                     marker="o" if variant.comparison.loss <= result.budget else "x")
        for p in points:
            axes.annotate(f"t{p.threads}x{p.instances} b{p.batch_size}", (p.rows_per_second, p.p50_ms), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
    choice = result.choice
    axes.scatter([choice.rows_per_second], [choice.p50_ms], s=220, facecolors="none", edgecolors="black",
                 label="chosen")
    if result.latency_slo_ms:
        axes.axhline(result.latency_slo_ms, linestyle="--", color="grey", label="latency SLO")
    axes.set_xlabel("throughput (rows/s)")
    axes.set_ylabel("p50 latency (ms)")
    axes.set_title(f"{result.model}: accuracy budget {result.budget:g} (x: over budget)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
