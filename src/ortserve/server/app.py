"""Assembles the core and the front ends, and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn

from ortserve.protos.inference import grpc_service_pb2_grpc
from ortserve.protos.tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from ortserve.runtime.registry import ModelRegistry
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_tfserving import ModelService, PredictionService
from ortserve.server.grpc_v2 import InferenceService
from ortserve.server.http import HttpApp, Router
from ortserve.server.metrics import Metrics
from ortserve.server.rest_image import ImageRest
from ortserve.server.rest_tfserving import TfServingRest
from ortserve.server.rest_v2 import V2Rest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    repository: Path
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    max_body_bytes: int = 64 * 1024 * 1024
    grpc_max_message_bytes: int = 64 * 1024 * 1024  # a batch of 32 FP32 224x224 images is 19 MiB


def build_http_app(plane: DataPlane, settings: ServerSettings) -> HttpApp:
    router = Router()
    V2Rest(plane).routes(router)
    TfServingRest(plane).routes(router)
    ImageRest(plane).routes(router)
    Metrics(plane.registry).routes(router)
    return HttpApp(router, settings.max_body_bytes)


def build_grpc_server(plane: DataPlane, settings: ServerSettings) -> grpc.aio.Server:
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(plane), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(plane), server)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    return server


async def serve(settings: ServerSettings) -> None:
    """Start listening at once (live, not ready), load the repository, then serve until cancelled."""
    registry = ModelRegistry(settings.repository)
    plane = DataPlane(registry)
    config = uvicorn.Config(
        build_http_app(plane, settings),
        host=settings.host,
        port=settings.rest_port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=60,
        proxy_headers=False,
    )
    http_server = uvicorn.Server(config)
    grpc_server = build_grpc_server(plane, settings)
    await grpc_server.start()
    http_task = asyncio.create_task(http_server.serve())
    try:
        await registry.load_all()
        log.info("repository %s loaded; REST on http://%s:%d, gRPC on %s:%d", settings.repository, settings.host,
                 settings.rest_port, settings.host, settings.grpc_port)
        await http_task
    finally:
        http_server.should_exit = True
        await grpc_server.stop(grace=2)
        registry.stop()
