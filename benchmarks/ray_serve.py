"""ortserve through Ray Serve against the standalone server, in one run: ResNet50 and the MLP (default configs, no
config.yaml) at c=1 and c=8 over KServe V2 binary tensors (Triton's perf_analyzer), standalone, then through Ray
Serve's HTTP proxy with one replica, then two, then through Ray Serve's HAProxy ingress (direct ingress to the
replicas) with one and two, then standalone again (the two standalone runs bracket the Ray runs: their mean is
what the Ray runs are compared with). The proxy's cost per request is the MLP's p50 at c=1
through Ray less standalone. While the MLP runs at c=8 through one replica, py-spy samples the proxy and the
replica, and the functions where they spend the most time are printed and kept.

Usage: bash benchmarks/run.sh ray_serve.py [--seconds 5]
       bash benchmarks/run.sh ray_serve.py --floor [--repeats 3]   (ResNet50 c=8 only, repeated)
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ortserve.bench.loadgen import LoadResult, perf_analyzer
from ortserve.bench.machine import load_average, machine
from ortserve.bench.server import free_port, start_server
from ortserve.examples.models import mlp, resnet50, save

WORK = Path(__file__).parent / "work"
RESULTS = Path(__file__).parent / "results"
MODELS = {"resnet50": resnet50, "mlp": mlp}
CONCURRENCY = (1, 8)


def _points(host_port: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    found = {}
    for name in MODELS:
        for concurrency in CONCURRENCY:
            result: LoadResult = perf_analyzer(args.perf_analyzer, name, host_port, concurrency,
                                               measurement_ms=args.seconds * 1000, library_path=args.cuda_lib)
            found[f"{name} c={concurrency}"] = {**asdict(result), "load_average": load_average()}
            print(f"  {name:8s} c={concurrency}: {result.requests_per_s:8.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
                  f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}", flush=True)
    return found


def _profile(pids: dict[str, int], seconds: float) -> dict[str, list[tuple[str, float]]]:
    """The functions (leaf frames) where each process spent its samples, busiest first."""
    found = {}
    for role, pid in pids.items():
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            subprocess.run(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                            "--format", "raw", "--output", out.name, "--nonblocking"],
                           capture_output=True, timeout=seconds + 60, check=False)
            leaves: collections.Counter[str] = collections.Counter()
            total = 0
            for line in Path(out.name).read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                frames = stack.split(";")
                total += int(count)
                # the deepest frame of ours, asyncio's or uvicorn's: where the time goes, one level above C
                leaves[_frame(frames[-1])] += int(count)
            found[role] = [(frame, round(count / max(total, 1), 3)) for frame, count in leaves.most_common(12)]
    return found


def _frame(frame: str) -> str:
    name, _, place = frame.partition(" (")
    return f"{name} ({place.rsplit('/', 2)[-1].rstrip(')')})" if place else name


def _pids() -> dict[str, int]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    pids = {}
    for line in listing.splitlines():
        pid, _, command = line.strip().partition(" ")
        if "ray::ProxyActor" in command:
            pids["proxy"] = int(pid)
        elif "ray::ServeReplica:ortserve" in command:
            pids.setdefault("replica", int(pid))
    return pids


def floor(repository: Path, args: argparse.Namespace) -> None:
    """Issue 16's floor alone, repeated: ResNet50 at c=8 over V2 binary, standalone then through the HAProxy
    ingress with one replica, `--repeats` times in turn; the median of the ratios."""
    import ortserve.ray as ortserve_ray

    ratios, runs = [], []
    for _ in range(args.repeats):
        with start_server(repository, WORK / "ray-standalone.log") as server:
            alone = perf_analyzer(args.perf_analyzer, "resnet50", server.host_port, 8,
                                  measurement_ms=args.seconds * 1000, library_path=args.cuda_lib)
        port = free_port()
        ortserve_ray.run(repository, http_port=port, replicas=1, ingress="haproxy")
        time.sleep(2)
        through = perf_analyzer(args.perf_analyzer, "resnet50", f"127.0.0.1:{port}", 8,
                                measurement_ms=args.seconds * 1000, library_path=args.cuda_lib)
        ortserve_ray.shutdown()
        ratios.append(through.requests_per_s / alone.requests_per_s)
        runs.append({"standalone": asdict(alone), "ray_haproxy_1": asdict(through), "load_average": load_average()})
        print(f"  standalone {alone.requests_per_s:.1f} req/s, through Ray {through.requests_per_s:.1f}: "
              f"{ratios[-1]:.3f}", flush=True)
    print(f"median ratio {statistics.median(ratios):.3f} over {len(ratios)} runs", flush=True)
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-ray-serve-floor.json"
    out.write_text(json.dumps({"machine": machine(), "runs": runs, "ratios": ratios,
                               "median": statistics.median(ratios),
                               "command": f"bash benchmarks/run.sh ray_serve.py --floor --repeats {args.repeats} "
                                          f"--seconds {args.seconds}"}, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--floor", action="store_true",
                        help="only ResNet50 c=8, standalone and through HAProxy with one replica, --repeats times")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repository = WORK / "ray-repository"
    for name, build in MODELS.items():
        if not (repository / name / "1" / "model.onnx").exists():
            save(build(), repository, name)
    if args.floor:
        floor(repository, args)
        return
    record: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": f"bash benchmarks/run.sh ray_serve.py --seconds {args.seconds}", "runs": {}}

    def standalone(label: str) -> None:
        print(f"standalone ({label})", flush=True)
        with start_server(repository, WORK / "ray-standalone.log") as server:
            record["runs"][f"standalone {label}"] = _points(server.host_port, args)

    standalone("before")
    import ortserve.ray as ortserve_ray

    port = free_port()
    for ingress, replicas in (("proxy", 1), ("proxy", 2), ("haproxy", 1), ("haproxy", 2)):
        print(f"Ray Serve, {ingress} ingress, {replicas} replica(s)", flush=True)
        if replicas == 1 and ingress == "haproxy":
            ortserve_ray.shutdown()  # the ingress is chosen when the cluster starts
        ortserve_ray.run(repository, http_port=port, replicas=replicas, ingress=ingress)
        time.sleep(2)
        record["runs"][f"ray {ingress} {replicas}"] = _points(f"127.0.0.1:{port}", args)
        if replicas == 1 and ingress == "proxy":  # where the MLP's time goes through Ray's proxy, under c=8
            pids = _pids()
            load = threading.Thread(target=perf_analyzer, args=(args.perf_analyzer, "mlp", f"127.0.0.1:{port}", 8),
                                    kwargs={"measurement_ms": 8000, "library_path": args.cuda_lib})
            load.start()
            time.sleep(3)
            record["profile"] = _profile(pids, 6)
            load.join()
            for role, frames in record["profile"].items():
                print(f"  {role}: " + ", ".join(f"{frame} {share:.0%}" for frame, share in frames[:6]), flush=True)
    ortserve_ray.shutdown()
    standalone("after")

    summary = {}
    for point in record["runs"]["standalone before"]:
        alone = statistics.mean(record["runs"][f"standalone {s}"][point]["requests_per_s"] for s in ("before", "after"))
        alone_p50 = statistics.mean(record["runs"][f"standalone {s}"][point]["p50_ms"] for s in ("before", "after"))
        summary[point] = {"standalone_req_s": alone, "standalone_p50_ms": alone_p50,
                          **{f"{ingress}{r}_ratio": record["runs"][f"ray {ingress} {r}"][point]["requests_per_s"]
                             / alone for ingress in ("proxy", "haproxy") for r in (1, 2)},
                          **{f"{ingress}1_p50_extra_ms": record["runs"][f"ray {ingress} 1"][point]["p50_ms"] - alone_p50
                             for ingress in ("proxy", "haproxy")}}
    record["summary"] = summary
    print(json.dumps(summary, indent=1))
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-ray-serve.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
