"""Assembles the core and the front ends, and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from ortserve.errors import ConfigError
from ortserve.protos.health import health_pb2
from ortserve.protos.inference import grpc_service_pb2
from ortserve.protos.tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
from ortserve.repository.remote import RemoteRepository, redacted
from ortserve.repository.tf_model_config import ConfiguredRepository, model_entries, read_config_file
from ortserve.runtime.gpu import GpuMonitor
from ortserve.runtime.registry import ModelRegistry
from ortserve.server.control import ControlMode, ModelControl, is_loopback
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import GrpcServer
from ortserve.server.grpc_health import HealthService
from ortserve.server.grpc_reflection import reflection_servicers
from ortserve.server.grpc_tfserving import ModelService, PredictionService
from ortserve.server.grpc_v2 import InferenceService
from ortserve.server.guard import ClientLimits, guarded
from ortserve.server.http import HttpApp, Router
from ortserve.server.listener import Listener, bind, host_port
from ortserve.server.metrics import Metrics
from ortserve.server.rest_image import ImageRest
from ortserve.server.rest_shared_memory import SharedMemoryRest
from ortserve.server.rest_text import TextRest
from ortserve.server.rest_tfserving import TfServingRest
from ortserve.server.rest_v2 import V2Rest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    repository: Path  # a local repository, or the mirror of `remote`
    remote: RemoteRepository | None = None  # a repository on object storage, mirrored into `repository`
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    max_body_bytes: int = 64 * 1024 * 1024
    grpc_max_message_bytes: int = 64 * 1024 * 1024  # a batch of 32 FP32 224x224 images is 19 MiB
    drain_timeout_s: float = 30.0
    model_control: ControlMode = "poll"
    poll_interval_s: float = 2.0
    admin_token: str | None = None
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    keep_alive_timeout_s: float = 60.0  # an idle keep-alive HTTP connection is closed after this
    grpc_max_streams: int = 100  # concurrent calls on one gRPC connection
    # a TF Serving model config: `repository` is then its scratch repository (repository.tf_model_config), and
    # under poll the file is read again when it changes
    configured: ConfiguredRepository | None = None
    model_config_file: Path | None = None


def build_http_app(plane: DataPlane, settings: ServerSettings) -> HttpApp:
    router = Router()
    V2Rest(plane).routes(router)
    SharedMemoryRest(plane).routes(router)
    TfServingRest(plane).routes(router)
    ImageRest(plane).routes(router)
    TextRest(plane).routes(router)
    Metrics(plane).routes(router)
    return HttpApp(router, settings.max_body_bytes)


def build_grpc_server(plane: DataPlane, settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> GrpcServer:
    server = GrpcServer(host_port(settings.host, settings.grpc_port), max_message_bytes=settings.grpc_max_message_bytes,
                        max_streams=settings.grpc_max_streams)
    services = {
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]: PredictionService(plane),
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]: ModelService(plane),
        grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]: InferenceService(plane),
    }
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    services[health] = HealthService(plane, [descriptor.full_name for descriptor in (*services, health)])
    services.update(reflection_servicers([descriptor.full_name for descriptor in services]))
    for descriptor, servicer in services.items():
        server.add_service(descriptor, servicer, loop)
    return server


async def _follow_config_file(plane: DataPlane, path: Path, interval_s: float) -> None:
    """Apply the TF Serving model config at `path` again each time the file changes (as TF Serving does with
    --model_config_file_poll_wait_seconds); a file that does not read as one is logged and the models stay as they
    are. Runs until cancelled."""
    seen = await asyncio.to_thread(_file_stamp, path)
    while True:
        await asyncio.sleep(interval_s)
        stamp = await asyncio.to_thread(_file_stamp, path)
        if stamp == seen:
            continue
        seen = stamp
        try:
            entries = model_entries(await asyncio.to_thread(read_config_file, path))
        except ConfigError as exc:
            log.error("the model config file changed, but is not applied: %s", exc)
            continue
        log.info("the model config file %s changed: serving the %d models it lists", path, len(entries))
        for failure in await plane.reconfigure(entries):
            log.error("%s", failure)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def _load_then_watch(plane: DataPlane, settings: ServerSettings) -> None:
    """Load the repository (a remote one mirrored first); then, under `--model-control poll`, follow its changes
    (and those of a TF Serving model config file) until cancelled."""
    registry = plane.registry
    if settings.remote is not None:
        try:
            await registry.refresh()
        except (ConfigError, OSError) as exc:  # the store is unreachable or the prefix missing: polls try again
            log.error("reading the model repository %s failed: %s", redacted(settings.remote.url), exc)
    await registry.load_all()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    source = settings.repository if settings.model_config_file is None else settings.model_config_file
    log.info("repository %s loaded; REST on http://%s:%d, gRPC on %s:%d; model control %s; event loop %s",
             source, settings.host, settings.rest_port, settings.host, settings.grpc_port,
             settings.model_control, loop)
    if settings.model_control == "poll":
        watches = [registry.watch(settings.poll_interval_s)]
        if settings.model_config_file is not None:
            watches.append(_follow_config_file(plane, settings.model_config_file, settings.poll_interval_s))
        await asyncio.gather(*watches)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling (`serve` drains the models before the HTTP server stops) and with
    a listener that accepts every waiting connection at once (server.listener), not uvloop's one per iteration."""

    listener: Listener | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                              app_state=self.lifespan.state)

        self.servers = []
        self.listener = Listener(bind(config.host, config.port, config.backlog), create_protocol, config.backlog)
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.listener is not None:
            self.listener.close()
        await super().shutdown(sockets)
        if self.listener is not None:
            await self.listener.wait_closed()


async def serve(settings: ServerSettings) -> None:
    """Start listening at once (live, not ready), load the repository, then serve until SIGTERM or SIGINT; then
    drain: readiness goes false and new requests are refused, what is queued and running is answered within
    `drain_timeout_s`, what is left is refused, and the servers stop. A second signal stops the wait."""
    remote = settings.remote
    configured = settings.configured
    registry = ModelRegistry(settings.repository,
                             None if remote is None else functools.partial(asyncio.to_thread, remote.sync),
                             None if configured is None else configured.overrides)
    control = ModelControl(settings.model_control, settings.admin_token, loopback_only=is_loopback(settings.host))
    plane = DataPlane(registry, GpuMonitor.open(), control, configured)
    config = uvicorn.Config(
        build_http_app(plane, settings),
        host=settings.host,
        port=settings.rest_port,
        loop="none",
        http=guarded(settings.client_limits),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=settings.keep_alive_timeout_s,
        proxy_headers=False,
    )
    http_server = _HttpServer(config)
    loop = asyncio.get_running_loop()
    grpc_server = build_grpc_server(plane, settings, loop)
    grpc_server.start()
    http_task = asyncio.create_task(http_server.serve())
    signals = asyncio.Queue[int]()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, signals.put_nowait, number)
    try:
        loading = asyncio.create_task(_load_then_watch(plane, settings))
        signalled = asyncio.create_task(signals.get())
        await asyncio.wait((signalled, http_task), return_when=asyncio.FIRST_COMPLETED)
        if not signalled.done():  # the HTTP server ended by itself: it could not start (the port is taken)
            signalled.cancel()
            loading.cancel()
            await http_task
            raise OSError(f"the REST server on {host_port(settings.host, settings.rest_port)} stopped")
        received = signalled.result()
        log.info("%s: draining (up to %.0f s), then stopping", signal.Signals(received).name, settings.drain_timeout_s)
        drain = asyncio.create_task(plane.drain(settings.drain_timeout_s))
        second = asyncio.create_task(signals.get())
        await asyncio.wait((drain, second), return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.warning("second signal: refusing what is still queued")
            registry.refuse_queued()
        refused = await drain
        second.cancel()
        loading.cancel()
        if refused:
            log.warning("%d queued requests were refused: the drain ran out of time", refused)
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)
        http_server.should_exit = True
        await http_task
        await asyncio.to_thread(grpc_server.stop, 2)
        registry.stop()
        plane.gpus.close()
    log.info("stopped")
