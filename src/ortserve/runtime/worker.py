"""A thread that runs blocking calls (session.run) one after another, off the event loop."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class Worker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, loop: asyncio.AbstractEventLoop, job: Callable[[], Any],
               done: Callable[[Any], None]) -> None:
        """Run `job()` on the thread, then `done(result)` on `loop`; `job` must not raise."""
        self._jobs.put((loop, job, done))

    def close(self) -> None:
        self._jobs.put(_STOP)

    def _loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            loop, job, done = item
            result = job()
            try:
                loop.call_soon_threadsafe(done, result)
            except RuntimeError:  # the loop closed while the job ran: nobody is waiting any more
                return
