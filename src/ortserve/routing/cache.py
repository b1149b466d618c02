"""A version's response cache, as Triton's: answers keyed by the exact request, least recently used out first."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

Tensors = dict[str, np.ndarray]


def request_key(inputs: Tensors, outputs: list[str] | None) -> bytes:
    """A digest of every input's name, dtype, shape and bytes, and of the outputs asked for."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(inputs):
        array = inputs[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == object:  # BYTES tensors: each element with its length, so that splits differ
            for item in array.ravel():
                value = item if isinstance(item, bytes) else str(item).encode()
                digest.update(len(value).to_bytes(8, "little"))
                digest.update(value)
        else:
            digest.update(np.ascontiguousarray(array).data)
    digest.update(b"\0outputs\0" + ("\0".join(outputs) if outputs else "*").encode())
    return digest.digest()


@dataclass
class CacheCounts:
    hits: int = 0
    misses: int = 0
    bytes: int = 0
    entries: int = 0
    evictions: int = 0


class ResponseCache:
    """Thread-safe LRU of answers within `max_bytes`. Stored arrays are private, read-only copies: an answer
    taken from the cache is bitwise the one computed, and nothing the caller does can change it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.counts = CacheCounts()
        self._entries: OrderedDict[bytes, tuple[Tensors, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Tensors | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.counts.misses += 1
                return None
            self._entries.move_to_end(key)
            self.counts.hits += 1
            return entry[0]

    def put(self, key: bytes, answer: Tensors) -> None:
        size = sum(array.nbytes for array in answer.values())
        if size > self.max_bytes:
            return
        kept = {}
        for name, array in answer.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            kept[name] = copy
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (kept, size)
            self.counts.bytes += size
            while self.counts.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.counts.bytes -= dropped
                self.counts.evictions += 1
            self.counts.entries = len(self._entries)
