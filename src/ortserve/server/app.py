"""Assembles the core and the front ends, and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from ortserve.protos.inference import grpc_service_pb2
from ortserve.protos.tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
from ortserve.runtime.registry import ModelRegistry
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import GrpcServer
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


def build_grpc_server(plane: DataPlane, settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> GrpcServer:
    server = GrpcServer(f"{settings.host}:{settings.grpc_port}", max_message_bytes=settings.grpc_max_message_bytes)
    services = {
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]: PredictionService(plane),
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]: ModelService(plane),
        grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]: InferenceService(plane),
    }
    for descriptor, servicer in services.items():
        server.add_service(descriptor, servicer, loop)
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
    grpc_server = build_grpc_server(plane, settings, asyncio.get_running_loop())
    grpc_server.start()
    http_task = asyncio.create_task(http_server.serve())
    try:
        await registry.load_all()
        log.info("repository %s loaded; REST on http://%s:%d, gRPC on %s:%d", settings.repository, settings.host,
                 settings.rest_port, settings.host, settings.grpc_port)
        await http_task
    finally:
        http_server.should_exit = True
        await asyncio.to_thread(grpc_server.stop, 2)
        registry.stop()
