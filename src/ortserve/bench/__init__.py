"""Load tests and benchmarks: `ortserve bench` (cli, targets, drive, report) and the helpers behind the
project's own benchmarks (a real server, compiled load generators, the in-process ceiling)."""

from typing import Literal, get_args

# What `ortserve bench` speaks; here, so that the command line names them without importing the clients.
Protocol = Literal["v2-rest", "v2-binary", "v2-grpc", "tfs-rest", "tfs-grpc", "image"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
