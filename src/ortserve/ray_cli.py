"""`ortserve serve-ray`: deploy a model repository on Ray Serve (ortserve.ray, imported only when it runs)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ortserve.repository.remote import DEFAULT_CACHE


def _autoscale(text: str) -> tuple[int, int]:
    low, _, high = text.partition(",")
    if not (low.strip().isdigit() and high.strip().isdigit()) or not 1 <= int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"{text!r} must be MIN,MAX replicas with 1 <= MIN <= MAX")
    return int(low), int(high)


def _serve_ray(args: argparse.Namespace) -> int:
    try:
        from ortserve import ray as ortserve_ray
    except ImportError as exc:
        print(f"ortserve serve-ray needs Ray Serve (pip install 'ortserve[ray]'): {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "model_control": args.model_control,
        "poll_interval_s": args.poll_interval, "cache_dir": args.cache_dir,
    }
    if args.autoscale is not None:
        options["autoscale"] = args.autoscale
    else:
        options["replicas"] = args.replicas
    ingress = args.ingress or ("proxy" if args.grpc_port else "haproxy")
    ortserve_ray.connect(args.address, args.host, ingress)
    # after Ray's own handlers (ray.init installs them), before the deployment, which may take a while
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        ortserve_ray.deploy(args.repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            ingress=ingress, **options)
    except (RuntimeError, ValueError) as exc:  # the deployment failed (its reason), or the options conflict
        print(f"ortserve serve-ray: {exc}", file=sys.stderr)
        ortserve_ray.shutdown()
        return 1
    print(f"serving {args.repository} on Ray Serve ({ingress} ingress): HTTP on http://{args.host}:"
          f"{args.http_port}" + (f", gRPC on {args.host}:{args.grpc_port}" if args.grpc_port else ""), flush=True)
    stop.wait()
    ortserve_ray.shutdown()
    return 0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve-ray", help="serve a model repository on Ray Serve: replicas across a Ray cluster, behind its proxy")
    parser.add_argument("repository", help="model repository: a directory every node sees, or a URL (s3://...)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: auto, or ray://HOST:PORT (default: start a local one)")
    parser.add_argument("--host", default="127.0.0.1", help="address Ray Serve's proxies listen on")
    parser.add_argument("--http-port", type=int, default=8000, help="Ray Serve's HTTP proxy port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="Ray Serve's gRPC proxy port, for TF Serving and KServe V2 gRPC clients (default: off)")
    parser.add_argument("--ingress", choices=["haproxy", "proxy"], default=None,
                        help="haproxy: Ray Serve's HAProxy in front of replicas that take HTTP themselves (several "
                             "times faster per request; HTTP only); proxy: Ray Serve's Python proxy (HTTP and "
                             "gRPC). Default: haproxy, or proxy when --grpc-port is given")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1, help="a fixed number of replicas (default 1)")
    scale.add_argument("--autoscale", type=_autoscale, default=None, metavar="MIN,MAX",
                       help="replicas follow the requests in flight, from MIN to MAX")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs each replica reserves (default 0)")
    parser.add_argument("--model-control", choices=["poll", "none"], default="poll",
                        help="poll: every replica follows the repository's changes (default); none: load once")
    parser.add_argument("--poll-interval", type=float, default=2.0,
                        help="seconds between two looks at the repository (default 2)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                        help="where a repository on object storage is mirrored on each node")
    parser.set_defaults(handler=_serve_ray)
