"""The `ortserve` command line."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop

from ortserve import __version__, ray_cli
from ortserve.bench import cli as bench_cli
from ortserve.digits import is_decimal
from ortserve.errors import ConfigError, OrtServeError
from ortserve.optimize import cli as optimize_cli
from ortserve.protos.tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig
from ortserve.repository.layout import holds_saved_models, misplaced_repository
from ortserve.repository.remote import DEFAULT_CACHE, RemoteRepository, is_remote
from ortserve.repository.single import single_model_repository
from ortserve.repository.tf_model_config import ConfiguredRepository, model_entries, read_config_file
from ortserve.server.app import ServerSettings, serve
from ortserve.server.control import CONTROL_MODES, TOKEN_VARIABLE, admin_token
from ortserve.server.guard import ClientLimits
from ortserve.server.listener import ListenError
from ortserve.server.log_settings import FORMAT as LOG_FORMAT

DEMO_REPOSITORY = Path("demo-repository")


EVENT_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"uvloop": uvloop.new_event_loop,
                                                                    "asyncio": asyncio.new_event_loop}


def _serve(args: argparse.Namespace) -> int:
    if args.model_config_file is not None or args.model_base_path is not None:
        return _serve_model_config(args)
    if args.model_name is not None:
        print("ortserve serve: --model-name goes with --model-base-path", file=sys.stderr)
        return 2
    remote = None
    if args.repository is not None and is_remote(args.repository):
        try:
            remote = RemoteRepository(args.repository, Path(args.cache_dir))
        except OrtServeError as exc:
            print(f"ortserve: {exc}", file=sys.stderr)
            return 2
        repository = remote.path
    else:
        repository = Path(args.repository) if args.repository else DEMO_REPOSITORY
    if repository.is_file() and repository.suffix == ".onnx":
        scratch = single_model_repository(repository, repository.stem)
        try:
            return _run_server(args, scratch, None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.repository is None and not repository.is_dir():
        print(f"ortserve: no repository given and no demo repository in ./{DEMO_REPOSITORY}; build it with "
              f"`python -m ortserve.examples.demo {DEMO_REPOSITORY}` (or `make run`)", file=sys.stderr)
        return 2
    if not repository.is_dir():
        print(f"ortserve: model repository {str(repository)!r} is not a directory (nor an .onnx file)",
              file=sys.stderr)
        return 2
    misplaced = misplaced_repository(repository)
    if misplaced is not None:
        print(f"ortserve: {misplaced}", file=sys.stderr)
        return 2
    return _run_server(args, repository, remote)


def _serve_model_config(args: argparse.Namespace) -> int:
    """Serve what a TF Serving model config lists (--model-config-file), or the one model of
    --model-base-path/--model-name, as tensorflow_model_server takes them."""
    if args.repository is not None:
        print("ortserve serve: give a repository or a model config (--model-config-file, --model-base-path), not "
              "both", file=sys.stderr)
        return 2
    if args.model_config_file is not None and args.model_base_path is not None:
        print("ortserve serve: give --model-config-file or --model-base-path, not both", file=sys.stderr)
        return 2
    try:
        if args.model_config_file is not None:
            config = read_config_file(Path(args.model_config_file))
        else:
            config = ModelServerConfig()
            config.model_config_list.config.add(name=args.model_name or "default", base_path=args.model_base_path)
        entries = model_entries(config)
    except ConfigError as exc:
        print(f"ortserve serve: {exc}", file=sys.stderr)
        return 2
    unconverted = [entry for entry in entries if holds_saved_models(entry.base_path)]
    if unconverted:
        entry = unconverted[0]
        how = (f"`ortserve convert --model_config_file {args.model_config_file} --repository REPOSITORY`, then serve "
               "REPOSITORY/models.config" if args.model_config_file is not None else
               f"`ortserve convert {entry.base_path} --repository REPOSITORY --model {entry.name}`, then serve "
               f"--model_base_path REPOSITORY/{entry.name}")
        print(f"ortserve serve: model {entry.name!r}: base_path {str(entry.base_path)!r} holds TensorFlow "
              f"SavedModels, not ONNX models; convert them with {how}", file=sys.stderr)
        return 2
    configured = ConfiguredRepository()
    try:
        configured.apply(entries)
        config_file = Path(args.model_config_file).absolute() if args.model_config_file is not None else None
        return _run_server(args, configured.path, None, configured, config_file)
    finally:
        configured.close()


def _run_server(args: argparse.Namespace, repository: Path, remote: RemoteRepository | None,
                configured: ConfiguredRepository | None = None, model_config_file: Path | None = None) -> int:
    settings = ServerSettings(
        repository=repository,
        remote=remote,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=args.grpc_port,
        max_body_bytes=args.max_body_bytes,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
        drain_timeout_s=args.drain_timeout,
        model_control=args.model_control,
        poll_interval_s=args.poll_interval,
        admin_token=admin_token(args.admin_token),
        client_limits=ClientLimits(args.max_header_bytes, args.header_timeout, args.body_timeout,
                                   args.max_connections),
        keep_alive_timeout_s=args.keep_alive_timeout,
        grpc_max_streams=args.grpc_max_streams,
        configured=configured,
        model_config_file=model_config_file,
    )
    # a crash in native code (ONNX Runtime, gRPC) leaves every thread's Python stack in the log
    faulthandler.enable()
    # SIGTERM and SIGINT drain the models, then stop (server.app.serve)
    with asyncio.Runner(loop_factory=EVENT_LOOPS[args.event_loop]) as runner:
        try:
            runner.run(serve(settings))
        except ListenError as exc:
            print(f"ortserve serve: {exc}", file=sys.stderr)
            return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ortserve.convert.base_path import convert_versions, migrate, plan_migration, saved_model_versions
    from ortserve.convert.pipeline import ConvertRequest, convert
    from ortserve.convert.spec import InputSpec

    try:
        low, high = (float(v) for v in args.range.split(","))
    except ValueError:  # only the parsing of --range: an error of the conversion is its own
        print(f"ortserve convert: --range {args.range!r} must be LOW,HIGH", file=sys.stderr)
        return 2
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # its own errors are its own: only a module that cannot be found is named here
            print(f"ortserve convert: --import {module}: {exc}", file=sys.stderr)
            return 2
    if args.model_config_file is not None and (args.source is not None or args.model is not None):
        print("ortserve convert: --model-config-file names the sources and models; give no SOURCE or --model",
              file=sys.stderr)
        return 2
    if args.model_config_file is None and (args.source is None or args.model is None):
        print("ortserve convert: give SOURCE and --model (or --model-config-file)", file=sys.stderr)
        return 2
    try:
        request = ConvertRequest(
            source=args.source or "", repository=Path(args.repository), model=args.model or "",
            inputs=[InputSpec.parse(text) for text in args.input], outputs=args.output or None,
            weights=Path(args.weights) if args.weights else None, opset=args.opset, samples=args.samples,
            value_range=(low, high), samples_file=Path(args.samples_file) if args.samples_file else None,
            atol=args.atol, rtol=args.rtol, exporter=args.exporter, version=args.version, signature=args.signature,
            unsafe_deserialization=args.unsafe_deserialization)
        if args.model_config_file is not None:
            plan = plan_migration(args.model_config_file, request.repository)
            results = (result for _, _, result in migrate(plan, request))
        else:
            versions = saved_model_versions(Path(args.source))
            results = (result for _, result in convert_versions(request, versions)) if versions \
                else iter([convert(request)])
        for result in results:
            print(result.parity.text())
            print(f"wrote {result.version_dir / 'model.onnx'} ({result.exporter}); provenance in "
                  f"{result.version_dir / 'provenance.json'}")
    except OrtServeError as exc:
        print(f"ortserve convert: {exc}", file=sys.stderr)
        return 1
    if args.model_config_file is not None:
        print(f"wrote {plan.config_out}: serve it with `ortserve serve --model_config_file {plan.config_out}`")
    return 0


def _export_tf(args: argparse.Namespace) -> int:
    from ortserve.convert import export_tf
    from ortserve.optimize.commands import samples_for
    from ortserve.optimize.source import resolve

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.install_tool:
        print(f"onnx2tf is in {export_tf.ensure_tool(progress)}")
        return 0
    if args.model is None or args.export_dir is None:
        print("ortserve export-tf: give MODEL and --export-dir (or --install-tool)", file=sys.stderr)
        return 2
    source = resolve(args.model, args.repository, args.version)
    samples = samples_for(source, args.data, args.samples, seed=0)
    result = export_tf.export(source, args.export_dir, samples, args.keep_nchw, args.atol, args.rtol, progress)
    print(result.parity.text())
    print(f"wrote {result.version_dir} (SavedModel, serving_default, {result.layout.upper()} inputs)")
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _positive_int(text: str) -> int:
    if not is_decimal(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ortserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ortserve {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser(
        "serve", help="serve a model repository over REST and gRPC (TF Serving, KServe V2)")
    serve_parser.add_argument(
        "repository", nargs="?",
        help=f"model repository: REPO/<model>/<version>/model.onnx (default: ./{DEMO_REPOSITORY}); or a URL "
             "(s3://bucket/prefix, gs://, az://, file://), mirrored into --cache-dir; or one .onnx file, served "
             "as the model named by its file name (resnet.onnx: model 'resnet', version 1), with every default")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--rest-port", "--rest_api_port", type=int, default=8501,
                              help="REST port (default 8501)")
    serve_parser.add_argument("--grpc-port", "--port", type=int, default=8500, help="gRPC port (default 8500)")
    serve_parser.add_argument(
        "--model-config-file", "--model_config_file",
        help="serve the models a TF Serving model config lists (a ModelServerConfig in text format: name, "
             "base_path, model_version_policy, version_labels), instead of a repository; under poll the file is "
             "read again when it changes, and ModelService.HandleReloadConfigRequest replaces it at run time")
    serve_parser.add_argument("--model-base-path", "--model_base_path",
                              help="serve the one model in this directory (<dir>/<version>/model.onnx), as "
                                   "tensorflow_model_server --model_base_path does")
    serve_parser.add_argument("--model-name", "--model_name",
                              help="the name of the --model-base-path model (default 'default', as TF Serving's)")
    serve_parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024,
                              help="largest request body accepted, in bytes (default 64 MiB)")
    serve_parser.add_argument("--grpc-max-message-bytes", type=int, default=64 * 1024 * 1024,
                              help="largest gRPC message sent or received, in bytes (default 64 MiB)")
    serve_parser.add_argument("--max-header-bytes", type=int, default=64 * 1024,
                              help="largest request line and headers together; more is answered 431 "
                                   "(default 64 KiB)")
    serve_parser.add_argument("--header-timeout", type=_positive_seconds, default=10.0,
                              help="seconds a request's headers may take to arrive; then 408 and the connection is "
                                   "closed (default 10)")
    serve_parser.add_argument("--body-timeout", type=_positive_seconds, default=30.0,
                              help="seconds allowed between two chunks of a request body (default 30)")
    serve_parser.add_argument("--keep-alive-timeout", type=_positive_seconds, default=60.0,
                              help="seconds an idle keep-alive connection stays open (default 60)")
    serve_parser.add_argument("--max-connections", type=int, default=0,
                              help="open HTTP connections; a new one past it is answered 503 and closed (default: "
                                   "the open-file limit less 256)")
    serve_parser.add_argument(
        "--event-loop", choices=sorted(EVENT_LOOPS), default="uvloop",
        help="the HTTP front end's event loop. uvloop (default): the most requests per second, and at 256 "
             "connections the shorter tail too; asyncio: the standard library's (docs/benchmarks.md)")
    serve_parser.add_argument("--grpc-max-streams", type=int, default=100,
                              help="concurrent calls on one gRPC connection (default 100)")
    serve_parser.add_argument("--drain-timeout", type=float, default=30.0,
                              help="on SIGTERM or SIGINT, seconds to answer what is queued before refusing the rest "
                                   "(default 30)")
    serve_parser.add_argument(
        "--model-control", choices=CONTROL_MODES, default="poll",
        help="poll: follow the repository's new, changed and removed versions, configs and models; explicit: only "
             "the repository API loads and unloads; none: load once at start (default poll)")
    serve_parser.add_argument("--poll-interval", type=_positive_seconds, default=2.0,
                              help="seconds between two looks at the repository under poll (default 2)")
    serve_parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                              help="where a repository on object storage is mirrored, its files kept by content "
                                   f"and reused across restarts (default {DEFAULT_CACHE})")
    serve_parser.add_argument(
        "--admin-token",
        help=f"token the repository API (index, load, unload) requires as 'Authorization: Bearer TOKEN' (default: "
             f"${TOKEN_VARIABLE}); without one, that API answers only on a loopback address")
    serve_parser.set_defaults(handler=_serve)

    convert_parser = commands.add_parser(
        "convert", help="convert a PyTorch, TensorFlow/Keras, Hugging Face or scikit-learn model to ONNX, prove "
                        "parity, add it as a new version")
    convert_parser.add_argument(
        "source", nargs="?",
        help="package.module:factory or a .pt/.pt2 file (PyTorch), a SavedModel directory or .keras/.h5 file "
             "(TensorFlow), a TF Serving model base path (numbered SavedModel versions, each converted into the same "
             "version), a Hugging Face directory (save_pretrained), or a .pkl/.joblib file (scikit-learn)")
    convert_parser.add_argument("--repository", required=True, help="model repository to write into")
    convert_parser.add_argument("--model", help="model name in the repository (required with a source)")
    convert_parser.add_argument(
        "--model-config-file", "--model_config_file", type=Path,
        help="instead of a source: TF Serving's model config; every entry's base path is converted into the model "
             "of its name in --repository, keeping version numbers, and REPOSITORY/models.config lists them")
    convert_parser.add_argument("--input", action="append", default=[],
                                help="name:dtype:dims, dims with names for dynamic ones (input:float32:batch,784)")
    convert_parser.add_argument("--output", action="append", help="output names, in order")
    convert_parser.add_argument("--weights", help="state dict to load into the PyTorch module")
    convert_parser.add_argument("--exporter", choices=["auto", "torch.export", "torchscript"], default="auto",
                                help="PyTorch exporter: auto tries torch.export, then TorchScript; TorchScript "
                                     "graphs fuse and quantize better for transformers (default auto)")
    convert_parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    convert_parser.add_argument("--samples", type=int, default=8, help="generated parity samples (default 8)")
    convert_parser.add_argument("--range", default="-1,1", help="LOW,HIGH of generated sample values")
    convert_parser.add_argument("--samples-file", help=".npz with one array per input, instead of generated ones")
    convert_parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    convert_parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    convert_parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="a Python module to import first (on PYTHONPATH): one that registers a Keras model's custom layers "
             "(keras.saving.register_keras_serializable), or defines what a pickle refers to; repeatable")
    convert_parser.add_argument(
        "--unsafe-deserialization", action="store_true",
        help="let a Keras file run the Python code it holds as it loads (Lambda layers of Python functions), "
             "which Keras refuses by default: only for files you trust")
    convert_parser.add_argument("--signature", help="a SavedModel's signature to convert (default: serving_default, "
                                                    "or the only one it has)")
    convert_parser.add_argument("--version", type=_positive_int,
                                help="the version number to write, which must not exist yet (default: the next)")
    convert_parser.set_defaults(handler=_convert)
    export_parser = commands.add_parser(
        "export-tf", help="convert an ONNX model to a TF SavedModel for TF Serving, with parity proven")
    export_parser.add_argument("model", nargs="?", help="a model name in --repository, or an .onnx file")
    export_parser.add_argument("--repository", type=Path, help="model repository holding MODEL")
    export_parser.add_argument("--version", type=int, help="the version to export (default: the newest)")
    export_parser.add_argument("--export-dir", type=Path,
                               help="TF Serving base directory: the SavedModel goes to DIR/<model>/<next version>")
    export_parser.add_argument("--keep-nchw", action="store_true",
                               help="keep channels-first 4-D inputs (default: onnx2tf's NHWC, as TF models take)")
    export_parser.add_argument("--data", help="parity samples, as for quantize (default: built-in photographs for "
                                              "image models, random values otherwise)")
    export_parser.add_argument("--samples", type=int, default=8, help="parity samples (default 8)")
    export_parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    export_parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    export_parser.add_argument("--install-tool", action="store_true",
                               help="only install onnx2tf into $ORTSERVE_HOME (done on first use otherwise)")
    export_parser.set_defaults(handler=optimize_cli.guarded(_export_tf, "export-tf"))
    optimize_cli.register(commands)
    bench_cli.register(commands)
    ray_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level.upper()
    # libraries (torch, tf2onnx, onnxruntime's quantizer) speak below WARNING only at debug level
    logging.basicConfig(level=level if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level)),
                        format=LOG_FORMAT)
    logging.getLogger("ortserve").setLevel(level)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
