"""Start the real ortserve server in a subprocess on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(repository: Path | str | None, log_path: Path, *extra: str, timeout_s: float = 120,
                 env: dict[str, str] | None = None, wait_ready: bool = True) -> RunningServer:
    """Start `ortserve serve` on free loopback ports; return once it is ready (or only live: `wait_ready`).
    No repository: `extra` names what to serve (--model-config-file, say)."""
    rest_port, grpc_port = free_port(), free_port()
    served = [] if repository is None else [str(repository)]
    command = [sys.executable, "-m", "ortserve", "serve", *served, "--host", "127.0.0.1",
               "--rest-port", str(rest_port), "--grpc-port", str(grpc_port), *extra]
    log_file = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                               env=None if env is None else {**os.environ, **env})
    server = RunningServer(process, rest_port, grpc_port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ortserve exited with {process.returncode}:\n{server.log()}")
        try:
            health = "ready" if wait_ready else "live"
            with urllib.request.urlopen(f"{server.url}/v2/health/{health}", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError):  # not listening yet, or 503 while loading
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"ortserve did not become ready in {timeout_s}s:\n{server.log()}")


def metric_samples(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape /metrics into {(sample name, labels): value}."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
