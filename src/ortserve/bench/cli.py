"""`ortserve bench URL ...` (measure a server under load) and `ortserve bench compare A.json B.json ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ortserve.bench import PROTOCOLS
from ortserve.errors import OrtServeError

if TYPE_CHECKING:
    from rich.console import Console



def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "bench", help="measure a server (ortserve, TF Serving, Triton) under load: throughput, latency, errors",
        description="ortserve bench URL --model M --protocol P [--concurrency 1,8,32 | --rate 50,100]; or "
                    "ortserve bench compare A/report.json B/report.json --out DIR")
    parser.add_argument("target", help="http://host:port for REST protocols, host:port for gRPC; or 'compare'")
    parser.add_argument("reports", nargs="*", type=Path, help="with 'compare': report.json files to draw together")
    parser.add_argument("--model", help="the model to call")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="v2-binary",
                        help="v2-rest (JSON), v2-binary, v2-grpc, tfs-rest, tfs-grpc, image (default v2-binary)")
    parser.add_argument("--concurrency", type=_numbers(int), help="closed loop: callers, e.g. 1,8,32 (default 1,8)")
    parser.add_argument("--rate", type=_numbers(float), help="open loop: requests per second, e.g. 50,100,200")
    parser.add_argument("--deadline", type=float, help="seconds each request may take (gRPC deadline, V2 timeout "
                                                       "parameter, HTTP timeout); later ones count as errors")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point (default 10)")
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
        return _measure(args, console)
    except OrtServeError as exc:
        print(f"ortserve bench: {exc}", file=sys.stderr)
        return 2


def _compare(args: argparse.Namespace, console: Console) -> int:
    from ortserve.bench import report

    if not args.reports or args.out is None:
        print("ortserve bench compare: give report.json files and --out DIR", file=sys.stderr)
        return 2
    missing = [str(path) for path in args.reports if not path.is_file()]
    if missing:
        print(f"ortserve bench compare: no such report: {', '.join(missing)}", file=sys.stderr)
        return 2
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.reports):
        print(f"ortserve bench compare: {len(labels)} labels for {len(args.reports)} reports", file=sys.stderr)
        return 2
    written = report.compare(args.reports, labels, args.out)
    if written is None:
        print("ortserve bench compare: plots need matplotlib: pip install 'ortserve[bench]'", file=sys.stderr)
        return 2
    console.print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _measure(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from ortserve.bench import Protocol, report
    from ortserve.bench.drive import Load, closed_loop, open_loop
    from ortserve.bench.machine import machine
    from ortserve.bench.targets import build, metadata, sample_inputs
    from ortserve.runtime.instances import usable_cores

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
    load = Load(args.duration, args.warmup, args.deadline or 60.0, args.processes or usable_cores())
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
                  "machine": machine(), "duration_s": args.duration, "warmup_s": args.warmup,
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
