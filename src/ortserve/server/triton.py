"""Triton's JSON forms for model config, statistics and the repository index, built from served versions."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ortserve.runtime.gpu import GpuMonitor
from ortserve.runtime.model import ServedModel, ServedVersion
from ortserve.runtime.registry import ModelRegistry
from ortserve.runtime.signature import TensorSpec
from ortserve.runtime.stats import Duration

PLATFORM = "onnxruntime_onnx"


def _config_tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {"name": spec.name, "data_type": spec.type.triton_config, "dims": dims}


def model_config(served: ServedVersion) -> dict[str, Any]:
    assert served.interface is not None
    batched = served.max_batch_size > 0
    batcher = served.batcher
    instances = batcher.state().instances if batcher is not None else served.config.instances.min
    config: dict[str, Any] = {
        "name": served.model,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": served.max_batch_size,
        "input": [_config_tensor(spec, batched) for spec in served.interface.inputs],
        "output": [_config_tensor(spec, batched) for spec in served.interface.outputs],
        "instance_group": [{"name": served.model, "count": instances,
                            "kind": "KIND_CPU" if served.gpu is None else "KIND_GPU"}],
        "parameters": {"execution_providers": {"string_value": ",".join(served.providers)}},
    }
    if batched:
        delay_us = served.config.max_queue_delay_us
        if delay_us is None:  # chosen by the scheduler: what it allows now
            delay_us = 0 if batcher is None else int(batcher.choices().max_wait_ns // 1000)
        config["dynamic_batching"] = {
            "preferred_batch_size": served.config.preferred_batch_sizes,
            "max_queue_delay_microseconds": delay_us,
        }
    return config


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def version_stats(served: ServedVersion) -> dict[str, Any]:
    stats = served.stats
    return {
        "name": served.model,
        "version": str(served.version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_rows,
        "execution_count": stats.executions,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.failure),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute),
            "compute_output": _duration(stats.compute_output),
            "cache_hit": _duration(stats.cache_hit),
            "cache_miss": _duration(stats.cache_miss),
        },
        "batch_stats": [
            # per batch size only session.run is timed; input and output carry the count perf_analyzer checks
            {"batch_size": size, "compute_input": {"count": duration.count, "ns": 0},
             "compute_infer": _duration(duration), "compute_output": {"count": duration.count, "ns": 0}}
            for size, duration in sorted(stats.per_batch_size.items())
        ],
    }


def model_stats(model: ServedModel, version: int | None) -> list[dict[str, Any]]:
    """Triton's statistics entries of a model's versions (`version` only, when given); a variant group has one,
    for its version 1."""
    if model.group is not None:
        return [group_stats(model)] if version in (None, 1) else []
    return [version_stats(served) for v, served in sorted(model.versions.items()) if version is None or v == version]


def group_stats(model: ServedModel) -> dict[str, Any]:
    """A variant group's entry: its members' current versions summed. They count the requests the group sent
    them (and any sent to them by name)."""
    assert model.group is not None
    members = [version_stats(served) for served in model.group.member_versions()]
    inference: dict[str, dict[str, int]] = {}
    batches: dict[int, dict[str, dict[str, int]]] = {}
    for entry in members:
        for key, value in entry["inference_stats"].items():
            _add(inference.setdefault(key, {"count": 0, "ns": 0}), value)
        for batch in entry["batch_stats"]:
            into = batches.setdefault(batch["batch_size"], {key: {"count": 0, "ns": 0} for key in batch
                                                            if key != "batch_size"})
            for key, value in batch.items():
                if key != "batch_size":
                    _add(into[key], value)
    return {
        "name": model.name,
        "version": "1",
        "last_inference": max((entry["last_inference"] for entry in members), default=0),
        "inference_count": sum(entry["inference_count"] for entry in members),
        "execution_count": sum(entry["execution_count"] for entry in members),
        "inference_stats": inference or {key: {"count": 0, "ns": 0} for key in _INFERENCE_KEYS},
        "batch_stats": [{"batch_size": size, **value} for size, value in sorted(batches.items())],
    }


_INFERENCE_KEYS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
                   "cache_miss")


def _add(into: dict[str, int], value: dict[str, int]) -> None:
    into["count"] += value["count"]
    into["ns"] += value["ns"]


def scheduling_stats(served: ServedVersion, gpus: GpuMonitor) -> dict[str, Any]:
    """ortserve's own statistics beside Triton's (REST only; Triton's gRPC message has no field for them): the
    scheduler's choices and their measurements, the queue and admission, instance changes, and the GPU."""
    stats = served.stats
    extra: dict[str, Any] = {
        "refused": dict(stats.refusals),
        "dropped": dict(stats.drops),
        "instance_changes": [asdict(event) for event in stats.scalings],
    }
    if served.cache is not None:
        extra["response_cache"] = {"max_bytes": served.cache.max_bytes, **asdict(served.cache.counts)}
    lane = served.shadow
    if lane is not None:  # the model's shadow, seen from each version whose answers it copies (all of them)
        copies = lane.stats
        extra["shadow"] = {
            "target_version": lane.target_version, "fraction": lane.fraction, "offered": copies.offered,
            "compared": copies.compared, "dropped": copies.dropped, "failed": copies.failed,
            "outputs": {name: agreement.summary() for name, agreement in sorted(copies.outputs.items())},
        }
    batcher = served.batcher
    if batcher is not None:
        state, choices = batcher.state(), batcher.choices()
        extra["scheduler"] = {
            "max_batch_size": served.max_batch_size,
            "row_limit": choices.row_limit,
            "delay": "adaptive" if choices.adaptive else "configured",
            "max_wait_us": round(choices.max_wait_ns / 1e3, 1),
            "batch_fixed_cost_us": round(choices.batch_fixed_cost_ns / 1e3, 1),
            "batch_row_cost_us": round(choices.batch_row_cost_ns / 1e3, 2),
            "refill_us": None if choices.refill_ns is None else round(choices.refill_ns / 1e3, 1),
            "hand_over_us": round(choices.dispatch_ns / 1e3, 1),
            "backlog_row_us": None if choices.drain_ns_per_row is None else round(choices.drain_ns_per_row / 1e3, 2),
            "runs_on_caller_thread": choices.runs_on_caller_thread,
        }
        if served.unbatched_reason is not None:
            extra["scheduler"]["unbatched_because"] = served.unbatched_reason
        extra["queue"] = {"rows": state.queued_rows, "requests": state.queued_requests,
                          "bound_rows": state.queue_bound,
                          "admission_correction": round(state.admission_correction, 3)}
        extra["instances"] = {"count": state.instances, "busy": state.busy_instances,
                              "intra_op_threads": served.threads,
                              "by_batch_rows": served.thread_choice.summary() if served.thread_choice else None}
    if served.gpu is not None:
        extra["gpu"] = [asdict(reading) for reading in gpus.read() if reading.index == served.gpu]
    return extra


def repository_index(registry: ModelRegistry) -> list[dict[str, str]]:
    index = []
    for name, model in sorted(registry.models.items()):
        if model.error:
            index.append({"name": name, "state": "UNAVAILABLE", "reason": model.error})
        if model.group is not None:
            ready = model.is_ready()
            index.append({"name": name, "version": "1", "state": "READY" if ready else "UNAVAILABLE",
                          "reason": "" if ready else "no member of the group can serve"})
        for version, served in sorted(model.versions.items()):
            state = "READY" if served.ready else "UNAVAILABLE"
            reason = served.error or model.reload_error  # a failed rollout: these versions still serve
            index.append({"name": name, "version": str(version), "state": state, "reason": reason})
    return index
