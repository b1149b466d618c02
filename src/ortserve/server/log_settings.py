"""Triton's logging extension: the server's log settings read and changed at run time (`/v2/logging`, gRPC
LogSettings), by Triton's names.

- `log_info`, `log_warning`, `log_error` (bool) turn each level on or off, each on its own (a filter on the
  process's log handlers, so they need not nest as Python's levels do);
- `log_verbose_level` (uint): above 0, debug records too;
- `log_format`: `default` (ortserve's own lines) or `ISO8601` (the time as 2026-12-01T05:40:12.627Z);
- `log_file` is reported as "" (standard error) and cannot be changed: a network client naming a file for the
  server to write would be a way to write anywhere the server may.

They apply to the whole process: ortserve's loggers and the libraries' records that reach the same handlers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ortserve.errors import InvalidInput

Setting = bool | int | str
LOGGER = "ortserve"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("default", "ISO8601")
_BOOLEANS = {"log_info": logging.INFO, "log_warning": logging.WARNING, "log_error": logging.ERROR}
_NAMES = ("log_file", *_BOOLEANS, "log_verbose_level", "log_format")


class _Iso8601(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


class LogSettings(logging.Filter):
    """The settings, and the filter that applies them to every handler of the root logger."""

    def __init__(self) -> None:
        super().__init__()
        level = logging.getLogger(LOGGER).getEffectiveLevel()
        self._on = {name: level <= threshold for name, threshold in _BOOLEANS.items()}
        self._verbose = 1 if level <= logging.DEBUG else 0
        self._format = "default"
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return self._verbose > 0
        if record.levelno < logging.WARNING:
            return self._on["log_info"]
        if record.levelno < logging.ERROR:
            return self._on["log_warning"]
        return self._on["log_error"]

    def current(self) -> dict[str, Setting]:
        return {"log_file": "", **self._on, "log_verbose_level": self._verbose, "log_format": self._format}

    def update(self, changes: Mapping[str, object]) -> dict[str, Setting]:
        """Apply `changes` (all checked first: a refused change applies none), then the settings as they are."""
        for name, value in changes.items():
            _check(name, value)
        for name, value in changes.items():
            if name in _BOOLEANS:
                self._on[name] = bool(value)
            elif name == "log_verbose_level":
                self._verbose = int(value)  # type: ignore[call-overload]
            elif name == "log_format":
                self._format = str(value)
        # the filter decides what is shown; the logger must let through all it may show
        lowest = logging.DEBUG if self._verbose else logging.INFO
        logging.getLogger(LOGGER).setLevel(lowest)
        formatter = _Iso8601(FORMAT) if self._format == "ISO8601" else logging.Formatter(FORMAT)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
        return self.current()


def _check(name: str, value: object) -> None:
    if name not in _NAMES:
        raise InvalidInput(f"unknown log setting {name!r}; the settings are {', '.join(_NAMES)}")
    if name == "log_file":
        if value != "":
            raise InvalidInput("log_file cannot be changed over the API: ortserve logs to its standard error, "
                               "which its service manager or shell can send to a file")
    elif name in _BOOLEANS:
        if not isinstance(value, bool):
            raise InvalidInput(f"log setting {name!r} must be true or false, got {value!r:.50}")
    elif name == "log_verbose_level":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput("log setting 'log_verbose_level' must be a whole number of at least 0, "
                               f"got {value!r:.50}")
    elif value not in FORMATS:
        raise InvalidInput(f"log setting 'log_format' must be one of {', '.join(FORMATS)}, got {value!r:.50}")
