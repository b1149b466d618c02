"""What changed in a model repository since it was last read: the poll of `--model-control poll`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from ortserve.repository.layout import Fingerprint, fingerprint, model_names


@dataclass(frozen=True)
class Changes:
    changed: list[str] = field(default_factory=list)  # new models, and models whose files changed, now still
    removed: list[str] = field(default_factory=list)  # model directories that are gone


def scan(repository: Path) -> dict[str, Fingerprint]:
    return {name: fingerprint(repository / name) for name in model_names(repository)}


async def changes(repository: Path, known: dict[str, Fingerprint], settle_s: float) -> Changes:
    """Models whose directory differs from `known` and then stays the same for `settle_s`: a version still being
    copied in changes in between and waits for the next poll (if a copy pauses longer, the half-written version
    fails to load, serving nothing, and loads once its files change again). Reads the disk off the event loop."""
    seen = await asyncio.to_thread(scan, repository)
    removed = sorted(name for name in known if name not in seen)
    moved = [name for name, stamp in seen.items() if known.get(name) != stamp]
    if not moved:
        return Changes([], removed)
    await asyncio.sleep(settle_s)
    again = await asyncio.to_thread(lambda: {name: fingerprint(repository / name) for name in moved})
    return Changes(sorted(name for name in moved if again[name] == seen[name]), removed)
