"""`ortserve bench` results: one point per load level, as a terminal table, report.json, report.md and plots;
and the comparison of several runs on one plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ortserve.bench.drive import Measured

CDF_POINTS = 101  # latency percentiles kept per point for the CDF plot


@dataclass
class Point:
    throughput_per_s: float  # successful answers per second
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    errors: int  # answers that were not OK, of every kind
    codes: dict[str, int]
    sent: int
    generator_cpu_cores: float  # the generator's processor time over the window, in cores
    generator_saturated: bool  # a process of the generator was near one core busy, or sends left late
    late_sends: int
    latency_percentiles_ms: list[float] = field(default_factory=list)  # 0..100, for the CDF
    concurrency: int | None = None
    rate: float | None = None

    @property
    def x(self) -> float:
        return float(self.concurrency if self.concurrency is not None else self.rate or 0)


def point(measured: Measured, *, concurrency: int | None = None, rate: float | None = None) -> Point:
    latencies_ms = measured.latencies_ns / 1e6
    percentiles = np.percentile(latencies_ms, [50, 90, 99]).tolist() if len(latencies_ms) else [None] * 3
    ok = measured.codes.get("OK", 0)
    sent = sum(measured.codes.values())
    saturated = measured.busiest_process_cpu_share > 0.9 or measured.late_sends > 0.01 * max(sent, 1)
    return Point(
        throughput_per_s=ok / measured.window_s, p50_ms=percentiles[0], p90_ms=percentiles[1],
        p99_ms=percentiles[2], errors=sent - ok, codes=dict(measured.codes), sent=sent,
        generator_cpu_cores=measured.generator_cpu_s / measured.window_s, generator_saturated=saturated,
        late_sends=measured.late_sends,
        latency_percentiles_ms=np.percentile(latencies_ms, np.linspace(0, 100, CDF_POINTS)).tolist()
        if len(latencies_ms) else [],
        concurrency=concurrency, rate=rate)


def table(points: list[Point], title: str) -> Table:
    grid = Table(title=title)
    load_column = "concurrency" if points and points[0].concurrency is not None else "rate /s"
    for name in (load_column, "throughput /s", "p50 ms", "p90 ms", "p99 ms", "errors", "generator"):
        grid.add_column(name, justify="right")
    for entry in points:
        errors = ", ".join(f"{code} {count}" for code, count in sorted(entry.codes.items()) if code != "OK") or "0"
        generator = f"{entry.generator_cpu_cores:.2f} cores" + (" SATURATED" if entry.generator_saturated else "")
        grid.add_row(_number(entry.x), f"{entry.throughput_per_s:,.1f}", _ms(entry.p50_ms), _ms(entry.p90_ms),
                     _ms(entry.p99_ms), errors, generator)
    return grid


def write(out: Path, target: dict[str, Any], points: list[Point], console: Console) -> list[Path]:
    """report.json, report.md and the plots (when matplotlib is installed) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"target": target, "points": [asdict(entry) for entry in points]}
    (out / "report.json").write_text(json.dumps(document, indent=2))
    (out / "report.md").write_text(_markdown(target, points))
    written = [out / "report.json", out / "report.md"]
    plots = _plots(out, [(target.get("label") or target["model"], points)])
    if plots is None:
        console.print("plots need matplotlib: pip install 'ortserve[bench]'")
    else:
        written.extend(plots)
    return written


def load(path: Path) -> tuple[dict[str, Any], list[Point]]:
    document = json.loads(path.read_text())
    return document["target"], [Point(**entry) for entry in document["points"]]


def compare(reports: list[Path], labels: list[str] | None, out: Path) -> list[Path] | None:
    """Several runs (report.json files) on one set of plots; None without matplotlib."""
    runs = []
    for index, path in enumerate(reports):
        target, points = load(path)
        label = labels[index] if labels else target.get("label") or f"{target['model']} ({path.parent.name})"
        runs.append((label, points))
    out.mkdir(parents=True, exist_ok=True)
    return _plots(out, runs)


def _plots(out: Path, runs: list[tuple[str, list[Point]]]) -> list[Path] | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    closed = all(entry.concurrency is not None for _, points in runs for entry in points)
    x_label = "concurrency (closed loop)" if closed else "offered rate, requests/s (open loop)"
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, points in runs:
        xs = [entry.x for entry in points]
        (line,) = left.plot(xs, [entry.throughput_per_s for entry in points], marker="o", label=label)
        for name, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):  # one colour per run
            values = [getattr(entry, name) for entry in points]
            right.plot(xs, [np.nan if value is None else value for value in values], style, marker="o",
                       color=line.get_color(), label=f"{label} {name[:3]}")
    left.set(xlabel=x_label, ylabel="answers/s", title="throughput")
    right.set(xlabel=x_label, ylabel="ms", title="latency percentiles")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        if closed:
            axis.set_xscale("log", base=2)
    figure.tight_layout()
    curves = out / "throughput-latency.png"
    figure.savefig(curves, dpi=120)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, points in runs:
        for entry in points:
            if entry.latency_percentiles_ms:
                axis.plot(entry.latency_percentiles_ms, np.linspace(0, 1, len(entry.latency_percentiles_ms)),
                          label=f"{label} @ {_number(entry.x)}")
    axis.set(xlabel="latency, ms", ylabel="share of answers", title="latency CDF")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    cdf = out / "latency-cdf.png"
    figure.savefig(cdf, dpi=120)
    plt.close(figure)
    return [curves, cdf]


def _markdown(target: dict[str, Any], points: list[Point]) -> str:
    load_column = "concurrency" if points and points[0].concurrency is not None else "rate /s"
    lines = [f"# ortserve bench: {target['model']} over {target['protocol']} at {target['url']}", "",
             f"{target.get('machine', '')}; {target.get('duration_s')} s per point after {target.get('warmup_s')} s "
             "of warmup.", "",
             f"| {load_column} | throughput /s | p50 ms | p90 ms | p99 ms | errors | generator cores |",
             "|---|---|---|---|---|---|---|"]
    for entry in points:
        errors = ", ".join(f"{code} {count}" for code, count in sorted(entry.codes.items()) if code != "OK") or "0"
        saturated = " (saturated)" if entry.generator_saturated else ""
        lines.append(f"| {_number(entry.x)} | {entry.throughput_per_s:,.1f} | {_ms(entry.p50_ms)} | "
                     f"{_ms(entry.p90_ms)} | {_ms(entry.p99_ms)} | {errors} | "
                     f"{entry.generator_cpu_cores:.2f}{saturated} |")
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
