"""Triton's system shared memory extension: a client on the same machine registers a POSIX shared memory object
(`/dev/shm/<key>`) under a region name, then names the region, an offset and a size in place of an input's
data or an output's answer, so that tensors cross no socket (tritonclient.utils.shared_memory,
perf_analyzer --shared-memory system).

An input read from a region is a view of it until its batch has run (a batch of several requests copies it, as
any input); an output is written into its region before the answer goes back. Mappings are never closed while a
request still holds a view: unregistering drops the manager's reference, and the mapping goes when the last
view does. Only clients on this machine (loopback) may register: a region maps memory of this machine, which a
client elsewhere could not share, and a name under /dev/shm should not be reachable from the network.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ortserve.errors import InvalidInput, NotFound, PermissionDenied

SHM_ROOT = Path("/dev/shm")
_KEY = re.compile(r"/?[A-Za-z0-9_.\-]+")
REGION = "shared_memory_region"  # the parameter that places a tensor in shared memory
NO_CUDA = ("CUDA shared memory is not supported: ortserve shares no GPU memory with clients; use system shared "
           "memory, or send the tensors in the request")


def is_local(host: str | None) -> bool:
    """Whether a client address is this machine's loopback."""
    return host is not None and (host == "::1" or host.startswith("127.") or host == "localhost")


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    memory: mmap.mmap

    def status(self) -> dict[str, object]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def view(self, offset: int, byte_size: int, what: str) -> memoryview:
        """`byte_size` bytes at `offset` within the region (offsets are the region's, past its own offset)."""
        if offset < 0 or byte_size < 0 or offset + byte_size > self.byte_size:
            raise InvalidInput(f"{what}: {byte_size} bytes at offset {offset} do not fit in shared memory region "
                               f"{self.name!r} of {self.byte_size} bytes")
        start = self.offset + offset
        return memoryview(self.memory)[start:start + byte_size]


class SharedMemoryRegions:
    """The regions registered with this server, by name; thread-safe."""

    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int, *, local_client: bool) -> None:
        if not local_client:
            raise PermissionDenied("shared memory can be registered only by a client on this machine (loopback)")
        if not name:
            raise InvalidInput("a shared memory region needs a name")
        if not _KEY.fullmatch(key) or key.strip("/") in ("", ".", ".."):
            raise InvalidInput(f"shared memory key {key!r} is not a POSIX shared memory name (like '/input_data')")
        if offset < 0 or byte_size <= 0:
            raise InvalidInput(f"shared memory region {name!r}: offset {offset} and byte_size {byte_size} must be "
                               "a non-negative offset and a positive size")
        path = SHM_ROOT / key.strip("/")
        try:
            descriptor = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise NotFound(f"no shared memory object {key!r} on this machine ({path} does not exist)") from None
        except OSError as exc:
            raise InvalidInput(f"cannot open shared memory object {key!r}: {exc.strerror}") from None
        try:
            size = os.fstat(descriptor).st_size
            if offset + byte_size > size:
                raise InvalidInput(f"shared memory region {name!r}: {byte_size} bytes at offset {offset} exceed the "
                                   f"{size} bytes of {key!r}")
            memory = mmap.mmap(descriptor, size)
        finally:
            os.close(descriptor)
        with self._lock:
            if name in self._regions:
                memory.close()
                raise InvalidInput(f"shared memory region {name!r} is already registered; unregister it first")
            self._regions[name] = Region(name, key, offset, byte_size, memory)

    def unregister(self, name: str | None = None) -> None:
        """One region (unknown names are fine, as in Triton), or every region."""
        with self._lock:
            if name is None:
                self._regions.clear()
            else:
                self._regions.pop(name, None)

    def status(self, name: str | None = None) -> list[dict[str, object]]:
        with self._lock:
            if name is None:
                return [region.status() for region in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise NotFound(f"no shared memory region {name!r} is registered")
        return [region.status()]

    def region(self, name: str) -> Region:
        with self._lock:
            region = self._regions.get(name)
        if region is None:
            raise InvalidInput(f"shared memory region {name!r} is not registered")
        return region


@dataclass(frozen=True)
class Placement:
    """Where a tensor is in shared memory: the region, the offset within it and the size."""

    region: Region
    offset: int
    byte_size: int

    def view(self, what: str) -> memoryview:
        return self.region.view(self.offset, self.byte_size, what)

    def write(self, name: str, data: bytes | memoryview) -> None:
        """Put an output's bytes at the placement (the answer then names the output, its type and shape, with no
        data, as Triton's does)."""
        if len(data) > self.byte_size:
            raise InvalidInput(f"output {name!r} has {len(data)} bytes, more than the {self.byte_size} bytes given "
                               f"for it in shared memory region {self.region.name!r}")
        target = self.view(f"output {name!r}")
        target[:len(data)] = data


def placement(regions: SharedMemoryRegions, what: str, region: object, byte_size: object, offset: object
              ) -> Placement:
    """A tensor's placement from its parameters (region name, byte size, optional offset), checked."""
    if not isinstance(region, str):
        raise InvalidInput(f"{what}: 'shared_memory_region' must be a region name, got {region!r}")
    for field, value in (("shared_memory_byte_size", byte_size), ("shared_memory_offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{what}: {field!r} must be a non-negative whole number, got {value!r}")
    assert isinstance(byte_size, int) and isinstance(offset, int)
    found = regions.region(region)
    found.view(offset, byte_size, what)  # fits, or says why not
    return Placement(found, offset, byte_size)

