"""`ortserve bench URL ...` (measure a server under load) and `ortserve bench compare A.json B.json ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ortserve.bench import PROTOCOLS
from ortserve.errors import OrtServeError
from ortserve.optimize.evaluate import TASKS

if TYPE_CHECKING:
    from rich.console import Console



def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "bench", help="measure a server (ortserve, TF Serving, Triton) under load: throughput, latency, errors",
        description="ortserve bench URL --model M --protocol P [--concurrency 1,8,32 | --rate 50,100]; "
                    "ortserve bench compare A/report.json B/report.json --out DIR; or "
                    "ortserve bench runtimes SOURCE [--input name:dtype:dims] [--out DIR] (the source framework "
                    "against ONNX Runtime FP32 and static INT8, in process)")
    parser.add_argument("target", help="http://host:port for REST protocols, host:port for gRPC; 'compare'; or "
                                       "'runtimes'")
    parser.add_argument("rest", nargs="*", metavar="REPORT|SOURCE",
                        help="with 'compare': report.json files to draw together; with 'runtimes': the model, as "
                             "`ortserve convert` takes it")
    parser.add_argument("--model", help="the model to call; with 'runtimes': its name in --repository")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="v2-binary",
                        help="v2-rest (JSON), v2-binary, v2-grpc, tfs-rest, tfs-grpc, image (default v2-binary)")
    parser.add_argument("--concurrency", type=_numbers(int), help="closed loop: callers, e.g. 1,8,32 (default 1,8)")
    parser.add_argument("--rate", type=_numbers(float), help="open loop: requests per second, e.g. 50,100,200")
    parser.add_argument("--deadline", type=float, help="seconds each request may take (gRPC deadline, V2 timeout "
                                                       "parameter, HTTP timeout); later ones count as errors")
    parser.add_argument("--duration", type=float,
                        help="measured seconds per point (default 10; with 'runtimes', per runtime and batch size, "
                             "default 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    parser.add_argument("--data", default="random", help="random (default), zeros, or an .npz with an array per input")
    parser.add_argument("--image", type=Path, help="the photo to upload, for --protocol image")
    parser.add_argument("--batch-size", type=int, default=1, help="rows per request, for a dynamic batch dimension")
    parser.add_argument("--shape", action="append", default=[],
                        help="NAME:D1,D2,...: an input's whole shape, for other dynamic dimensions")
    parser.add_argument("--processes", type=int, help="load generator processes (default: the usable cores)")
    parser.add_argument("--label", help="this run's name in reports and comparisons")
    parser.add_argument("--labels", help="with 'compare': names for the runs, comma separated")
    parser.add_argument("--out", type=Path, help="write report.json, report.md and plots here")
    runtimes = parser.add_argument_group("runtimes")
    runtimes.add_argument("--input", action="append", default=[], metavar="NAME:DTYPE:DIMS",
                          help="a PyTorch model's input, as `ortserve convert --input` takes it (repeatable)")
    runtimes.add_argument("--weights", type=Path, help="a PyTorch state_dict for the entry point")
    runtimes.add_argument("--batch-sizes", type=_numbers(int), default=[1, 8], help="default 1,8")
    runtimes.add_argument("--calibration-data", default="random",
                          help="static INT8 calibration samples, as `ortserve quantize` takes them (default random)")
    runtimes.add_argument("--calibration-samples", type=int, default=128)
    runtimes.add_argument("--task", choices=TASKS, default="auto",
                          help="how INT8 is compared with FP32: classification (top-1 agreement), embedding "
                               "(cosine), regression (relative error); auto: embedding for float scores")
    runtimes.add_argument("--repository", type=Path,
                          help="keep the FP32 and INT8 versions in this repository (default: nothing is kept)")
    parser.set_defaults(handler=_run)


def _numbers(kind: type) -> argparse._ActionType:  # type: ignore[name-defined]
    def parse(text: str) -> list:
        try:
            values = [kind(item) for item in text.split(",") if item]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        if not values or any(value <= 0 for value in values):
            raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers")
        return values

    return parse


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console  # the rest of the command line does without these imports

    console = Console()
    try:
        if args.target == "compare":
            return _compare(args, console)
        if args.target == "runtimes":
            return _runtimes(args, console)
        return _measure(args, console)
    except OrtServeError as exc:
        print(f"ortserve bench: {exc}", file=sys.stderr)
        return 2


def _compare(args: argparse.Namespace, console: Console) -> int:
    from ortserve.bench import report

    reports = [Path(text) for text in args.rest]
    if not reports or args.out is None:
        print("ortserve bench compare: give report.json files and --out DIR", file=sys.stderr)
        return 2
    missing = [str(path) for path in reports if not path.is_file()]
    if missing:
        print(f"ortserve bench compare: no such report: {', '.join(missing)}", file=sys.stderr)
        return 2
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(reports):
        print(f"ortserve bench compare: {len(labels)} labels for {len(reports)} reports", file=sys.stderr)
        return 2
    written = report.compare(reports, labels, args.out)
    if written is None:
        print("ortserve bench compare: plots need matplotlib: pip install 'ortserve[bench]'", file=sys.stderr)
        return 2
    console.print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _runtimes(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from ortserve.bench import runtimes
    from ortserve.bench.machine import machine
    from ortserve.convert.spec import InputSpec

    if len(args.rest) != 1:
        print("ortserve bench runtimes: give one SOURCE (package.module:factory, or a model file or directory)",
              file=sys.stderr)
        return 2
    source = args.rest[0]
    request = runtimes.RuntimesRequest(
        source=source, inputs=[InputSpec.parse(text) for text in args.input],
        model=args.model or _model_name(source), weights=args.weights, calibration=args.calibration_data,
        calibration_samples=args.calibration_samples, evaluation=None if args.data == "random" else args.data,
        task=args.task, batch_sizes=tuple(args.batch_sizes), seconds=args.duration or 3.0,
        repository=args.repository)
    result = runtimes.measure(request, progress=lambda text: console.print(f"[dim]{text}[/dim]"))
    table = Table(title=f"{source} ({result.framework}), in process")
    for column in ("runtime", "batch", "p50 ms", "p90 ms", "items/s", "vs source"):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for row in result.rows:
        table.add_row(row.runtime, str(row.batch_size), f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}",
                      f"{row.items_per_s:,.1f}", f"{row.speedup:.2f}x")
    console.print(table)
    console.print(result.int8_text())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        written = [args.out / "runtimes.json", args.out / "runtimes.md"]
        written[0].write_text(json.dumps({**result.as_dict(), "machine": machine(),
                                          "seconds_per_point": request.seconds}, indent=2) + "\n")
        written[1].write_text(runtimes.markdown(result))
        if runtimes.plot(result, args.out / "runtimes.png"):
            written.append(args.out / "runtimes.png")
        else:
            console.print("[yellow]no plot: it needs matplotlib (pip install 'ortserve[bench]')[/yellow]")
        console.print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _model_name(source: str) -> str:
    """A repository name for the source: the entry point's factory, or the file's stem."""
    stem = source.rpartition(":")[2] if ":" in source and not Path(source).exists() else Path(source).stem
    return "".join(char if char.isalnum() or char in "-_" else "_" for char in stem) or "model"


def _measure(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from ortserve.bench import Protocol, report
    from ortserve.bench.drive import Load, closed_loop, open_loop
    from ortserve.bench.machine import machine
    from ortserve.bench.targets import build, metadata, sample_inputs
    from ortserve.runtime.cores import usable_cores

    if args.model is None:
        print("ortserve bench: give --model", file=sys.stderr)
        return 2
    if args.concurrency and args.rate:
        print("ortserve bench: give --concurrency (closed loop) or --rate (open loop), not both", file=sys.stderr)
        return 2
    protocol: Protocol = args.protocol
    shapes = dict(_shape(text) for text in args.shape)
    if protocol == "image":
        if args.image is None or not args.image.is_file():
            print("ortserve bench: --protocol image needs --image with a photo file", file=sys.stderr)
            return 2
        request = build(args.target, protocol, args.model, image=args.image)
    else:
        inputs = metadata(args.target, protocol, args.model)
        arrays = sample_inputs(inputs, args.data, args.batch_size, shapes)
        request = build(args.target, protocol, args.model, arrays, deadline_s=args.deadline)
    load = Load(args.duration or 10.0, args.warmup, args.deadline or 60.0, args.processes or usable_cores())
    levels = [("concurrency", level) for level in args.concurrency or ([] if args.rate else [1, 8])] + \
        [("rate", level) for level in args.rate or []]
    points = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{args.model} over {protocol}", total=len(levels))
        for kind, level in levels:
            progress.update(task, description=f"{args.model} over {protocol}: {kind} {level:g}")
            if kind == "concurrency":
                points.append(report.point(closed_loop(request, int(level), load), concurrency=int(level)))
            else:
                points.append(report.point(open_loop(request, float(level), load), rate=float(level)))
            progress.advance(task)
    console.print(report.table(points, f"{args.model} over {protocol} at {args.target}"))
    if any(entry.generator_saturated for entry in points):
        console.print("[yellow]the load generator was itself saturated at the points marked: the server may do "
                      "more than measured (add --processes, or run the generator on another machine)[/yellow]")
    if args.out is not None:
        target = {"url": args.target, "model": args.model, "protocol": protocol, "label": args.label,
                  "machine": machine(), "duration_s": args.duration or 10.0, "warmup_s": args.warmup,
                  "batch_size": args.batch_size, "deadline_s": args.deadline}
        written = report.write(args.out, target, points, console)
        console.print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.rpartition(":")
    try:
        shape = [int(dim) for dim in dims.split(",")]
    except ValueError:
        shape = []
    if not name or not shape or any(dim < 1 for dim in shape):
        raise OrtServeError(f"--shape {text!r} must be NAME:D1,D2,... with positive sizes")
    return name, shape
