"""Compiled load generators (Triton's perf_analyzer, wrk), run as subprocesses and parsed into one result type."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_WRK_SCRIPT = r"""
local f = io.open(os.getenv("ORTSERVE_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
for name, value in string.gmatch(os.getenv("ORTSERVE_HEADERS") or "", "([^:\n]+):([^\n]+)") do
  wrk.headers[name] = value
end
if os.getenv("ORTSERVE_ROTATE") == "1" then  -- one body per line, taken in turn
  local bodies, next_body = {}, 0
  for line in string.gmatch(wrk.body, "[^\n]+") do bodies[#bodies + 1] = line end
  request = function()
    next_body = next_body % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[next_body])
  end
end
"""
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def perf_analyzer(binary: Path, model: str, url: str, concurrency: int, *, protocol: str = "http",
                  service_kind: str = "triton", measurement_ms: int = 5000, library_path: str = "",
                  extra: tuple[str, ...] = ()) -> LoadResult:
    """One concurrency level, bounded as the environment notes advise."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.csv"
        command = [str(binary), "-m", model, "-u", url, "-i", protocol, "--service-kind", service_kind,
                   "--concurrency-range", str(concurrency), "--measurement-interval", str(measurement_ms),
                   "--max-trials", "3", "--stability-percentage", "1000", "--input-data", "zero",
                   "-f", str(report), *extra]
        environment = dict(os.environ, LD_LIBRARY_PATH=library_path)
        completed = subprocess.run(command, capture_output=True, text=True, env=environment,
                                   timeout=measurement_ms / 1000 * 6 + 60)
        if completed.returncode != 0 or not report.exists():
            raise RuntimeError(f"perf_analyzer failed ({completed.returncode}):\n{completed.stdout[-3000:]}"
                               f"\n{completed.stderr[-3000:]}")
        (row,) = list(csv.DictReader(report.open()))
    return LoadResult(float(row["Inferences/Second"]), float(row["p50 latency"]) / 1e3,
                      float(row["p99 latency"]) / 1e3)


def _latency_us(text: str, percentile: str) -> float:
    found = re.search(rf"^\s*{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no {percentile} latency:\n{text}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def wrk(url: str, body: Path, concurrency: int, *, headers: dict[str, str], duration_s: int = 5,
        rotate: bool = False) -> LoadResult:
    """POST the same body over `concurrency` keep-alive connections from one wrk thread; with `rotate`, the file
    holds one body per line, sent in turn."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        environment = dict(os.environ, ORTSERVE_BODY=str(body), ORTSERVE_ROTATE="1" if rotate else "0",
                           ORTSERVE_HEADERS="\n".join(f"{k}:{v}" for k, v in headers.items()))
        completed = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency", "--timeout", "30s", "-s",
             script.name, url],
            capture_output=True, text=True, env=environment, timeout=duration_s + 60)
    text = completed.stdout
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{text}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return LoadResult(float(rate.group(1)), _latency_us(text, "50%") / 1e3, _latency_us(text, "99%") / 1e3,
                      int(errors.group(1)) if errors else 0)
