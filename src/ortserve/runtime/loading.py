"""Building a version's sessions: create, read the signature, bind preprocessing, warm up and calibrate, and the
instance pool. Blocking: the registry runs it off the event loop."""

from __future__ import annotations

import logging

import onnxruntime as ort

from ortserve.errors import ConfigError
from ortserve.repository.config import DEFAULT_MAX_BATCH_SIZE
from ortserve.runtime.contract import check_contract
from ortserve.runtime.cores import usable_cores
from ortserve.runtime.gpu import device_of
from ortserve.runtime.image import bind_image_classifier
from ortserve.runtime.instances import SessionPool, threads_per_instance
from ortserve.runtime.model import ServedVersion
from ortserve.runtime.rows import batching_problem
from ortserve.runtime.samples import read_samples, samples_path
from ortserve.runtime.session import class_labels_of, create_session
from ortserve.runtime.signature import read_signature
from ortserve.runtime.sizing import describe, size_batches
from ortserve.runtime.text import bind_text_model
from ortserve.runtime.warmup import (
    FEW_THREADS_BELOW_NS,
    calibrate,
    one_thread_wins,
    prime,
    settle_warmup,
    unbatched_shapes,
    warm_up,
)

log = logging.getLogger(__name__)


def _effective_max_batch_size(served: ServedVersion) -> int:
    """config.yaml's max_batch_size; unset, DEFAULT_MAX_BATCH_SIZE when the model's shapes allow batching (and
    then its outputs are checked when run: _unbatch_if_rowless)."""
    assert served.signature is not None
    batchable = served.signature.batch_dimension_is_dynamic
    wanted = served.config.max_batch_size
    if wanted is None:
        return DEFAULT_MAX_BATCH_SIZE if batchable else 0
    if wanted > 0 and not batchable:
        raise ConfigError(
            f"model {served.model!r}: field 'max_batch_size' is {wanted}, but the model has no dynamic first "
            "dimension on every input and output; set max_batch_size: 0 to serve it unbatched"
        )
    return wanted


def _unbatch_if_rowless(served: ServedVersion, session: ort.InferenceSession) -> None:
    """Batching inferred from the shapes is kept only if, run, every output has a row per input row (runtime.rows);
    else the version is served unbatched, the reason kept for the statistics."""
    assert served.signature is not None and served.warmup is not None
    served.unbatched_reason = batching_problem(session, served.signature, served.warmup.shapes)
    if served.unbatched_reason is not None:
        log.info("model %r version %d is served unbatched: %s", served.model, served.version, served.unbatched_reason)
        served.max_batch_size = 0
        served.warmup = served.warmup.model_copy(
            update={"shapes": unbatched_shapes(served.signature, served.warmup.shapes)})


def _may_prefer_one_thread(served: ServedVersion, configured_threads: int) -> bool:
    """A small CPU model with threads left to ONNX Runtime, one instance first, on a machine of several cores."""
    calibration = served.calibration
    return (configured_threads == 0 and served.config.instances.min == 1 and usable_cores() > 1
            and served.providers[0] == "CPUExecutionProvider" and calibration is not None and calibration.measured
            and calibration.cost_ns(1) < FEW_THREADS_BELOW_NS)


def _one_thread_if_faster(served: ServedVersion, session: ort.InferenceSession
                          ) -> tuple[ort.InferenceSession, int, ort.InferenceSession | None]:
    """Time a one-thread session beside the default one; keep the faster (and its batch costs). Returns the
    session to serve with, the intra-op threads for every instance (0: ONNX Runtime's default), and the default
    session when the one-thread one won (large batches may still run faster on it: runtime.sizing)."""
    single = create_session(served.model, served.path, served.config, 1)
    assert served.signature is not None and served.warmup is not None
    default_costs, single_costs = calibrate(served.model, [session, single], served.signature,
                                            served.warmup.shapes, served.max_batch_size, served.samples)
    wins = one_thread_wins(default_costs, single_costs)
    log.info("model %r version %d runs on %s (one row: %.0f us on one thread, %.0f us on ONNX Runtime's default "
             "thread pool)", served.model, served.version, "one thread" if wins else "the default thread pool",
             single_costs.cost_ns(1) / 1e3, default_costs.cost_ns(1) / 1e3)
    if not wins:
        served.calibration = default_costs
        return session, 0, None
    served.session, served.calibration = single, single_costs
    return single, 1, session


def load_sessions(served: ServedVersion) -> None:
    """Blocking part of a load: sessions, signature, batch limit, warmup. Runs off the event loop."""
    config = served.config
    configured_threads = config.session.intra_op_threads
    first_count = config.instances.min
    session = create_session(served.model, served.path, config, threads_per_instance(configured_threads, first_count))
    served.session = session
    served.signature = signature = read_signature(session)
    check_contract(served.model, served.version, config, signature)
    served.providers = session.get_providers()
    served.class_labels = class_labels_of(served.path)
    served.gpu = device_of(served.providers, session.get_provider_options())
    served.max_batch_size = _effective_max_batch_size(served)
    samples_file = samples_path(served.model, served.path.parent, config.warmup.data)
    if samples_file is not None:
        served.samples = read_samples(served.model, samples_file, signature, served.max_batch_size > 0)
    served.warmup = warmup = settle_warmup(served.model, session, signature, config.warmup, served.max_batch_size > 0,
                                           served.samples)
    if config.max_batch_size is None and served.max_batch_size > 0:
        _unbatch_if_rowless(served, session)
        warmup = served.warmup
    if config.image is not None:
        served.image = bind_image_classifier(served.model, served.path.parent.parent, config.image, signature,
                                             served.path.parent)
    if config.text is not None:
        if served.max_batch_size == 0:
            raise ConfigError(f"model {served.model!r}: field 'text': texts are batched, so the model needs a dynamic "
                              "first dimension on every input and output and max_batch_size above 0"
                              + (f" ({served.unbatched_reason})" if served.unbatched_reason else ""))
        served.text = bind_text_model(served.model, served.path.parent, config.text, signature)
    served.calibration = warm_up(served.model, session, signature, warmup, served.max_batch_size, served.samples)
    wide = None
    if _may_prefer_one_thread(served, configured_threads):
        session, configured_threads, wide = _one_thread_if_faster(served, session)
    if served.max_batch_size > 0 and served.calibration is not None:
        sizing = size_batches(served.model, session, wide, signature, warmup.shapes, served.max_batch_size,
                              grow=config.max_batch_size is None, costs=served.calibration, samples=served.samples)
        served.max_batch_size = sizing.max_batch_size
        if wide is not None and sizing.both:
            served.pool_session, served.pool_timings = wide, sizing.both
        log.info("model %r version %d: %s", served.model, served.version, describe(sizing, served.calibration))
    served.threads = threads_per_instance(configured_threads, first_count)

    def build(threads: int) -> ort.InferenceSession:
        extra = create_session(served.model, served.path, config, threads)
        prime(served.model, extra, signature, warmup, served.max_batch_size > 0, served.samples)
        return extra

    served.sessions = SessionPool(build, configured_threads)
    served.sessions.adopt(session, first_count)
    served.sessions.sessions(first_count)
