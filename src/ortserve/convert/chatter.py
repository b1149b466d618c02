"""The exporters' and quantizer's own output (torch.onnx's progress prints, onnxscript's and onnx_ir's INFO
lines, torch's warnings about optional packages) kept out of sight unless the log level is debug: a conversion
then shows one line per step of ours. What they printed is logged at debug level, so nothing is lost."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)
# Libraries that talk at INFO or WARNING level while they work normally
CHATTY_LOGGERS = ("torch", "torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript", "onnx_ir",
                  "tf2onnx", "onnxruntime", "root")


@contextlib.contextmanager
def hushed() -> Iterator[None]:
    """Within: the libraries' prints captured and their log records below CRITICAL dropped (an exporter logs the
    errors it then raises, and the raised one is what the step reports), unless ortserve logs at debug level.
    Import the framework first: torch sets its loggers' levels when it is imported, and they are restored to
    what they were on entry."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    ours = logging.getLogger("ortserve")
    ours_level = ours.level
    ours.setLevel(ours.getEffectiveLevel())  # ours keep talking while the root logger is turned down
    loggers = [logging.getLogger(name) if name != "root" else logging.getLogger() for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    printed = io.StringIO()
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)  # their errors reach us as exceptions, which the step reports
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        ours.setLevel(ours_level)
        if printed.getvalue():
            log.debug("the exporter printed:\n%s", printed.getvalue().rstrip())
