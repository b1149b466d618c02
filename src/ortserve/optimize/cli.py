"""`ortserve optimize | quantize | evaluate | tune`: argument parsing and printing around optimize.commands."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ortserve.errors import OrtServeError
from ortserve.optimize import commands, graph, quantize
from ortserve.optimize.evaluate import TASKS
from ortserve.optimize.source import resolve, runnable
from ortserve.repository.layout import version_paths

BUDGET_NOT_MET = 3


def _csv(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(kind(item) for item in text.split(",") if item)

    return parse


def _model_arguments(parser: argparse.ArgumentParser, output: bool = True,
                     version_help: str = "the version to start from (default: the newest)") -> None:
    parser.add_argument("model", help="a model name in --repository, or an .onnx file")
    parser.add_argument("--repository", type=Path, help="model repository holding MODEL")
    parser.add_argument("--version", type=int, help=version_help)
    if output:
        parser.add_argument("--output", type=Path,
                            help="write the result to this .onnx file instead of as the model's next version")
    parser.add_argument("--data", help="evaluation samples: an .npz (one array per input, optional 'labels'), a "
                                       "folder of images, 'samples' (built-in photographs, cropped and flipped) or "
                                       "'random' (default: samples for image models, random otherwise)")
    parser.add_argument("--samples", type=int, default=64, help="evaluation samples to draw (default 64)")
    parser.add_argument("--output-name", help="the output to compare (default: the image output or the first)")
    parser.add_argument("--task", choices=TASKS, default="auto",
                        help="how to compare: classification (top-1/top-5), embedding (cosine), regression")


def _judging(args: argparse.Namespace) -> commands.Judging:
    return commands.Judging(args.data, args.samples, args.output_name, args.task)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_optimize(args: argparse.Namespace) -> int:
    source = resolve(args.model, args.repository, args.version)
    outcome = commands.optimize(source, args.kind, args.output, _judging(args), args.level, args.simplifier,
                                not args.fp16_io)
    print(f"{args.kind}: nodes {outcome.step['nodes']['before']} -> {outcome.step['nodes']['after']}")
    print(outcome.comparison.text())
    print(f"wrote {outcome.path}")
    return 0


def _static_options(args: argparse.Namespace) -> quantize.StaticOptions:
    defaults = quantize.StaticOptions()
    return quantize.StaticOptions(
        method=args.method, per_channel=args.per_channel, activation_type=args.activation_type,
        weight_type=args.weight_type,
        reduce_range=defaults.reduce_range if args.reduce_range is None else args.reduce_range,
        exclude=tuple(args.exclude))


def _run_quantize(args: argparse.Namespace) -> int:
    source = resolve(args.model, args.repository, args.version)
    try:
        request = commands.QuantizeRequest(args.mode, args.calibration_data, args.calibration_samples,
                                           _static_options(args), args.op_types, args.accuracy_budget)
        outcome, search = commands.quantize_model(source, request, args.output, _judging(args), _progress)
    except commands.BudgetNotMet as exc:
        print(f"ortserve quantize: {exc}", file=sys.stderr)
        return BUDGET_NOT_MET
    if search is not None:
        print(search.text())
    print(outcome.comparison.text())
    print(f"wrote {outcome.path}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    version = args.version
    if version is None and args.repository is not None and (args.repository / args.model).is_dir():
        version = min(version_paths(args.repository / args.model))  # the original, not the newest variant
    reference = resolve(args.model, args.repository, version)
    if (args.variant is None) == (args.variant_version is None):
        print("ortserve evaluate: give exactly one of --variant FILE or --variant-version N", file=sys.stderr)
        return 2
    variant = (runnable(args.variant) if args.variant is not None
               else resolve(args.model, args.repository, args.variant_version).path)
    comparison = commands.evaluate(reference, variant, _judging(args))
    print(comparison.text())
    if args.accuracy_budget is not None and comparison.loss > args.accuracy_budget:
        print(f"accuracy loss {comparison.loss:.4f} is over the budget {args.accuracy_budget:g}", file=sys.stderr)
        return BUDGET_NOT_MET
    return 0


def _run_tune(args: argparse.Namespace) -> int:
    from ortserve.optimize import report, tune

    source = resolve(args.model, args.repository, args.version)
    space = tune.SearchSpace(args.variants or tune.ALL_VARIANTS, args.threads, args.execution_modes, args.batch_sizes,
                             args.seconds_per_point, args.instances)
    result = tune.tune(source, args.accuracy_budget, _judging(args), space, args.latency_slo,
                       args.calibration_data, args.calibration_samples, args.output, _progress)
    report_dir = args.report or Path(f"tune-{source.name}")
    written = report.write(result, report_dir)
    choice = result.choice
    print(f"chose {choice.variant} with {choice.threads} threads x {choice.instances} instances, "
          f"{choice.execution_mode}, batch {choice.batch_size}: "
          f"p50 {choice.p50_ms:.2f} ms, {choice.rows_per_second:.1f} rows/s, loss {choice.loss:.4f}")
    if result.published:
        print(f"wrote {result.published}")
    print(f"report: {', '.join(str(path) for path in written)}")
    return 0


def register(commands_parser: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    optimize = commands_parser.add_parser("optimize", help="rewrite a model's graph (ORT optimization, "
                                                           "simplification, transformer fusion, FP16)")
    _model_arguments(optimize)
    optimize.add_argument("--kind", choices=["ort", "simplify", "transformer", "fp16"], default="ort")
    optimize.add_argument("--level", choices=list(graph.LEVELS), default=graph.PORTABLE_LEVEL,
                          help="ORT optimization level; 'layout' ties the file to this CPU (default extended)")
    optimize.add_argument("--simplifier", choices=["onnxslim", "onnxsim"], default="onnxslim")
    optimize.add_argument("--fp16-io", action="store_true", help="with --kind fp16: FP16 inputs and outputs too")
    optimize.set_defaults(handler=guarded(_run_optimize, "optimize"))

    quant = commands_parser.add_parser("quantize", help="INT8 quantization (static QDQ with calibration, or "
                                                        "dynamic), judged against the FP32 model")
    _model_arguments(quant)
    _quantization_arguments(quant)
    quant.add_argument("--mode", choices=["static", "dynamic"], default="static")
    quant.add_argument("--op-types", type=_csv(str), default=quantize.DYNAMIC_OP_TYPES,
                       help=f"with --mode dynamic: operators to quantize ({','.join(quantize.DYNAMIC_OP_TYPES)})")
    quant.add_argument("--method", choices=list(quantize.METHODS), default="minmax", help="calibration method")
    quant.add_argument("--activation-type", choices=list(quantize.TYPES), default="uint8")
    quant.add_argument("--weight-type", choices=list(quantize.TYPES), default="int8")
    quant.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True)
    quant.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                       help="7-bit weights (default: on only for CPUs without VNNI)")
    quant.add_argument("--exclude", action="append", default=[], help="a node to keep in FP32 (repeatable)")
    quant.add_argument("--accuracy-budget", type=float,
                       help="largest accepted loss; static mode keeps the noisiest spots in FP32 until it holds")
    quant.set_defaults(handler=guarded(_run_quantize, "quantize"))

    evaluate = commands_parser.add_parser("evaluate", help="compare a variant with its reference model")
    _model_arguments(evaluate, output=False, version_help="the reference version (default: the first)")
    evaluate.add_argument("--variant", type=Path, help="the variant's .onnx file")
    evaluate.add_argument("--variant-version", type=int, help="the variant as a version of MODEL")
    evaluate.add_argument("--accuracy-budget", type=float, help=f"exit {BUDGET_NOT_MET} when the loss is over it")
    evaluate.set_defaults(handler=guarded(_run_evaluate, "evaluate"))

    tune_parser = commands_parser.add_parser("tune", help="search variants and session settings on this machine; "
                                                          "publish the fastest within the accuracy budget")
    _model_arguments(tune_parser)
    _quantization_arguments(tune_parser)
    tune_parser.add_argument("--accuracy-budget", type=float, required=True, help="largest accepted loss")
    tune_parser.add_argument("--latency-slo", type=float, help="largest accepted p50 latency, in ms")
    tune_parser.add_argument("--variants", type=_csv(str), default=None,
                             help="comma-separated subset of fp32,optimized,simplified,int8-static,int8-dynamic,"
                                  "fused-int8-dynamic,fp16 (default: all that apply)")
    tune_parser.add_argument("--threads", type=_csv(int), default=(), help="intra-op threads to try (default 1,cores)")
    tune_parser.add_argument("--instances", type=_csv(int), default=(),
                             help="instance counts to try at each thread count, each instance a session running "
                                  "beside the others (default 1 and as many as fill the cores)")
    tune_parser.add_argument("--execution-modes", type=_csv(str), default=("sequential",))
    tune_parser.add_argument("--batch-sizes", type=_csv(int), default=(1, 8))
    tune_parser.add_argument("--seconds-per-point", type=float, default=0.7)
    tune_parser.add_argument("--report", type=Path, help="report directory (default ./tune-MODEL)")
    tune_parser.set_defaults(handler=guarded(_run_tune, "tune"))


def _quantization_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration-data", help="calibration samples, in the same forms as --data")
    parser.add_argument("--calibration-samples", type=int, default=128, help="calibration samples to draw")


def guarded(handler: Any, name: str) -> Any:
    """Run a command's handler: its errors become one `ortserve NAME: ...` line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        # ONNX Runtime's quantizer (every weight scale) and TensorFlow's savers (every capture) log at INFO
        if args.log_level == "info":
            logging.getLogger().setLevel(logging.WARNING)
        try:
            return int(handler(args))
        except OrtServeError as exc:
            print(f"ortserve {name}: {exc}", file=sys.stderr)
            return 1

    return run
