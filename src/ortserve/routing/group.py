"""Variant groups: one model name served by several models of one contract (an FP32 model and its INT8 variant),
each request going to the member the policy picks: `least_latency`, `round_robin` or `weighted`.

`least_latency` expects a request sent to a member to take that member's measured cost of one request (its batch
cost line, which its scheduler keeps current as batches run) after the work already in hand on the member's
device: the requests every member on that device has in flight, each at its member's cost per row. Members on
one device share its backlog, so among them the cheapest wins however busy the device; members on different
devices (two GPUs, a GPU and the CPU) are balanced by their backlogs. Counting only each member's own queue
would send requests to the slower member as soon as the faster one had a queue, though both compute on the same
cores (measured: docs/benchmarks.md)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ortserve.errors import NotFound, OrtServeError, Overloaded, Unavailable
from ortserve.repository.config import Group

if TYPE_CHECKING:
    from ortserve.runtime.model import ServedModel, ServedVersion
    from ortserve.runtime.signature import Signature

SMOOTHING = 0.2  # weight of the newest latency in a member's running average (statistics)
FAILURES_TO_REST = 3  # consecutive failures that take a member out ...
REST_NS = 5_000_000_000  # ... for this long


@dataclass
class MemberLoad:
    """What the group knows of one member: its latency, the requests it has in hand, how it has been failing.
    begin() and end() are called from any thread."""

    latency_ns: float = 0.0  # running average of request time; 0 until measured
    in_flight: int = 0
    chosen: int = 0  # requests sent to it
    failed: int = 0
    consecutive_failures: int = 0
    resting_until_ns: int = 0
    request_cost_ns: float = 0.0  # the member's cost of one request alone, at its latest choice
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1

    def end(self, ns: int, error: BaseException | None) -> None:
        with self._lock:
            self.in_flight -= 1
            if error is None or isinstance(error, Overloaded):  # refused for load: a slow member, not a broken one
                self.latency_ns = ns if self.latency_ns == 0 else (1 - SMOOTHING) * self.latency_ns + SMOOTHING * ns
                self.consecutive_failures = 0
                return
            if isinstance(error, Unavailable) or not isinstance(error, OrtServeError):
                self.failed += 1
                self.consecutive_failures += 1
                if self.consecutive_failures >= FAILURES_TO_REST:
                    self.resting_until_ns = time.perf_counter_ns() + REST_NS


class VariantGroup:
    def __init__(self, name: str, config: Group, lookup: Callable[[str], ServedModel | None],
                 signature: Signature) -> None:
        self.name = name
        self.config = config
        self.signature = signature  # the contract every member keeps
        self.loads = {member: MemberLoad() for member in config.members}
        self._lookup = lookup
        self._turns = itertools.cycle(config.members)
        self._views: dict[int, ServedVersion] = {}  # by id of the member version: its view under the group's name

    def resolve(self, count: bool = True) -> ServedVersion:
        """The member version to answer, seen under the group's name (`count`: a request goes there; otherwise
        a status look); Unavailable naming every member's reason when none can."""
        now = time.perf_counter_ns()
        usable, reasons = {}, []
        for member in self.config.members:
            try:
                usable[member] = self._member_version(member, now)
            except OrtServeError as exc:
                reasons.append(f"{member}: {exc}")
        if not usable:
            raise Unavailable(f"group {self.name!r} has no member that can serve: {'; '.join(reasons)}")
        member = self._pick(usable)
        load = self.loads[member]
        if count:
            load.chosen += 1
        return self._view(usable[member], load)

    def member_versions(self) -> list[ServedVersion]:
        """The versions the members would answer with now (those that can)."""
        now, found = time.perf_counter_ns(), []
        for member in self.config.members:
            try:
                found.append(self._member_version(member, now))
            except OrtServeError:
                continue
        return found

    def _member_version(self, member: str, now: int) -> ServedVersion:
        model = self._lookup(member)
        if model is None:
            raise NotFound("not in the repository")
        served = model.resolve()
        if served.interface != self.signature:
            raise Unavailable(f"version {served.version} no longer has the group's inputs and outputs")
        load = self.loads[member]
        if load.resting_until_ns > now:
            raise Unavailable(f"failed {load.consecutive_failures} times in a row; retried in "
                              f"{(load.resting_until_ns - now) / 1e9:.1f} s")
        return served

    def _pick(self, usable: dict[str, ServedVersion]) -> str:
        policy = self.config.policy
        if policy == "round_robin":
            return next(member for member in self._turns if member in usable)
        if policy == "weighted":
            members = list(usable)
            return random.choices(members, [self.config.weights[m] for m in members])[0]
        return self._least_latency(usable)

    def _least_latency(self, usable: dict[str, ServedVersion]) -> str:
        costs = {member: _costs(served) for member, served in usable.items()}
        backlog: dict[object, float] = {}
        for member, served in usable.items():
            device = _device(served)
            backlog[device] = backlog.get(device, 0.0) + self.loads[member].in_flight * costs[member][1]
        for member, (alone, _) in costs.items():
            self.loads[member].request_cost_ns = alone
        return min(usable, key=lambda member: costs[member][0] + backlog[_device(usable[member])])

    def _view(self, served: ServedVersion, load: MemberLoad) -> ServedVersion:
        view = self._views.get(id(served))
        # new, an id reused after a rollout, or a member whose shadow a routing change moved
        if view is None or view.batcher is not served.batcher or view.shadow is not served.shadow:
            view = served.seen_as(self.name, load)
            if len(self._views) >= 2 * len(self.loads):  # views of versions rolled out since
                self._views.clear()
            self._views[id(served)] = view
        return view

    def summary(self) -> dict[str, dict[str, float | int]]:
        return {member: {"chosen": load.chosen, "failed": load.failed, "in_flight": load.in_flight,
                         "latency_ms": round(load.latency_ns / 1e6, 3),
                         "request_cost_ms": round(load.request_cost_ns / 1e6, 3)}
                for member, load in self.loads.items()}


def _costs(served: ServedVersion) -> tuple[float, float]:
    """A member's measured cost of one request alone, and of each further row in a batch (the request's cost
    while batches of one size are all that was measured)."""
    batcher = served.batcher
    if batcher is not None:
        choices = batcher.choices()
        alone = choices.batch_fixed_cost_ns + choices.batch_row_cost_ns
        if alone > 0:
            return alone, choices.batch_row_cost_ns or alone
    calibration = served.calibration
    alone = calibration.cost_ns(1) if calibration is not None else 0.0
    return alone, (calibration.per_row_ns if calibration is not None else 0.0) or alone


def _device(served: ServedVersion) -> object:
    """What a member computes on: its GPU, or the CPU."""
    return ("gpu", served.gpu) if served.gpu is not None else "cpu"
