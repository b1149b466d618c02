"""Assembles the core and the front ends, and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from ortserve.runtime.registry import ModelRegistry
from ortserve.server.dataplane import DataPlane
from ortserve.server.http import HttpApp, Router
from ortserve.server.metrics import Metrics
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


def build_http_app(plane: DataPlane, settings: ServerSettings) -> HttpApp:
    router = Router()
    V2Rest(plane).routes(router)
    TfServingRest(plane).routes(router)
    Metrics(plane.registry).routes(router)
    return HttpApp(router, settings.max_body_bytes)


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
    )
    http_server = uvicorn.Server(config)
    http_task = asyncio.create_task(http_server.serve())
    try:
        await registry.load_all()
        log.info("repository %s loaded; REST on http://%s:%d", settings.repository, settings.host,
                 settings.rest_port)
        await http_task
    finally:
        http_server.should_exit = True
        registry.stop()
