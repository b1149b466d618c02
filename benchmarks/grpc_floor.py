"""What a Python gRPC server costs by itself: a bare GRPCInferenceService whose ModelInfer only echoes its input
(or, with --run-mlp, also runs the benchmark's MLP 784-256-10 in ONNX Runtime first, on the calling thread),
served by grpc.aio or by ortserve's completion-queue server, driven by perf_analyzer exactly as the serving
benchmark drives ortserve.

Usage: python benchmarks/grpc_floor.py --perf-analyzer PATH --cuda-lib DIR [--run-mlp] [--server aio|engine]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import uvloop

from ortserve.bench.loadgen import perf_analyzer
from ortserve.bench.server import free_port
from ortserve.examples.models import mlp
from ortserve.protos.inference import grpc_service_pb2 as pb
from ortserve.protos.inference import grpc_service_pb2_grpc
from ortserve.protos.inference import model_config_pb2 as config_pb
from ortserve.server.grpc_engine import Call, GrpcServer

SHAPE = [1, 784]


def _answer(method: str, request: object, session: ort.InferenceSession | None) -> object:
    """Just enough of GRPCInferenceService for perf_analyzer: one FP32 [1, 784] model that echoes its input."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    if method == "ServerLive":
        return pb.ServerLiveResponse(live=True)
    if method == "ServerReady":
        return pb.ServerReadyResponse(ready=True)
    if method == "ServerMetadata":
        return pb.ServerMetadataResponse(name="echo", version="0")
    if method == "ModelReady":
        return pb.ModelReadyResponse(ready=True)
    if method == "ModelMetadata":
        return pb.ModelMetadataResponse(name="echo", versions=["1"], platform="onnxruntime_onnx",
                                        inputs=[tensor(name="x", datatype="FP32", shape=SHAPE)],
                                        outputs=[tensor(name="y", datatype="FP32", shape=SHAPE)])
    if method == "ModelConfig":
        return pb.ModelConfigResponse(config=config_pb.ModelConfig(
            name="echo", platform="onnxruntime_onnx", max_batch_size=0,
            input=[config_pb.ModelInput(name="x", data_type=config_pb.TYPE_FP32, dims=SHAPE)],
            output=[config_pb.ModelOutput(name="y", data_type=config_pb.TYPE_FP32, dims=SHAPE)]))
    assert isinstance(request, pb.ModelInferRequest)
    if session is not None:
        session.run(None, {"input": np.frombuffer(request.raw_input_contents[0], np.float32).reshape(SHAPE)})
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    response.outputs.add(name="y", datatype="FP32", shape=SHAPE)
    response.raw_output_contents.append(request.raw_input_contents[0])
    return response


METHODS = ["ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig", "ModelInfer"]


def _aio_servicer(session: ort.InferenceSession | None) -> object:
    def method(name: str) -> Callable[[object, object, object], Awaitable[object]]:
        async def handle(self: object, request: object, context: object) -> object:
            return _answer(name, request, session)
        return handle

    return type("AioEcho", (grpc_service_pb2_grpc.GRPCInferenceServiceServicer,),
                {name: method(name) for name in METHODS})()


def _engine_servicer(session: ort.InferenceSession | None) -> object:
    def method(name: str) -> Callable[[object, object, Call], None]:
        def handle(self: object, request: object, call: Call) -> None:
            call.reply(_answer(name, request, session))
        return handle

    return type("EngineEcho", (), {name: method(name) for name in METHODS})()


def _serve(port: int, run_mlp: bool, kind: str) -> None:
    session = None
    if run_mlp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(mlp().SerializeToString(), options, providers=["CPUExecutionProvider"])

    async def run_aio() -> None:
        server = grpc.aio.server()
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_aio_servicer(session), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    async def run_engine() -> None:
        server = GrpcServer(f"127.0.0.1:{port}", max_message_bytes=1 << 20)
        server.add_service(pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], _engine_servicer(session),
                           asyncio.get_running_loop())
        server.start()
        await asyncio.Event().wait()

    uvloop.run(run_aio() if kind == "aio" else run_engine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="")
    parser.add_argument("--run-mlp", action="store_true", help="run the MLP's session.run in the handler")
    parser.add_argument("--server", choices=["aio", "engine"], default="engine",
                        help="grpc.aio, or ortserve's completion-queue server (server/grpc_engine.py)")
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=_serve, args=(port, args.run_mlp, args.server), daemon=True)
    server.start()
    grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=60)
    try:
        for concurrency in (1, 8, 32):
            result = perf_analyzer(args.perf_analyzer, "echo", f"127.0.0.1:{port}", concurrency, protocol="grpc",
                                   measurement_ms=5000, library_path=args.cuda_lib)
            handler = "MLP" if args.run_mlp else "echo"
            print(f"bare {args.server} {handler} c={concurrency:<3d} {result.requests_per_s:9.1f} req/s  "
                  f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms", flush=True)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
