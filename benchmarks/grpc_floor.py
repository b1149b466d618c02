"""What grpcio's Python asyncio server costs by itself: a bare GRPCInferenceService whose ModelInfer only echoes
its input (or, with --run-mlp, also runs the benchmark's MLP 784-256-10 in ONNX Runtime first), driven by
perf_analyzer exactly as the serving benchmark drives ortserve. Whatever ortserve reaches over gRPC is bounded by
this.

Usage: python benchmarks/grpc_floor.py --perf-analyzer PATH --cuda-lib DIR [--run-mlp]
"""

from __future__ import annotations

import argparse
import multiprocessing
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

SHAPE = [1, 784]


class EchoService(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Just enough of the service for perf_analyzer: metadata and config of one FP32 [1, 784] model."""

    def __init__(self, session: ort.InferenceSession | None) -> None:
        self._session = session

    async def ServerLive(self, request: pb.ServerLiveRequest, context: object) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: object) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="echo", version="0")

    async def ModelReady(self, request: pb.ModelReadyRequest, context: object) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(name="echo", versions=["1"], platform="onnxruntime_onnx",
                                        inputs=[tensor(name="x", datatype="FP32", shape=SHAPE)],
                                        outputs=[tensor(name="y", datatype="FP32", shape=SHAPE)])

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: object) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=config_pb.ModelConfig(
            name="echo", platform="onnxruntime_onnx", max_batch_size=0,
            input=[config_pb.ModelInput(name="x", data_type=config_pb.TYPE_FP32, dims=SHAPE)],
            output=[config_pb.ModelOutput(name="y", data_type=config_pb.TYPE_FP32, dims=SHAPE)]))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        if self._session is not None:
            self._session.run(None, {"input": np.frombuffer(request.raw_input_contents[0], np.float32).reshape(SHAPE)})
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.outputs.add(name="y", datatype="FP32", shape=SHAPE)
        response.raw_output_contents.append(request.raw_input_contents[0])
        return response


def _serve(port: int, run_mlp: bool) -> None:
    session = None
    if run_mlp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(mlp().SerializeToString(), options, providers=["CPUExecutionProvider"])

    async def run() -> None:
        server = grpc.aio.server()
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(EchoService(session), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="")
    parser.add_argument("--run-mlp", action="store_true", help="run the MLP's session.run in the handler")
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=_serve, args=(port, args.run_mlp), daemon=True)
    server.start()
    grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=60)
    try:
        for concurrency in (1, 8, 32):
            result = perf_analyzer(args.perf_analyzer, "echo", f"127.0.0.1:{port}", concurrency, protocol="grpc",
                                   measurement_ms=5000, library_path=args.cuda_lib)
            handler = "MLP" if args.run_mlp else "echo"
            print(f"bare grpc.aio {handler} c={concurrency:<3d} {result.requests_per_s:9.1f} req/s  "
                  f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms", flush=True)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
