"""The committed generated modules are what scripts/generate_protos.sh makes from protos/ today."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "generate_protos.sh"), str(tmp_path)], check=True, timeout=120)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in (tmp_path / "ortserve" / "protos").rglob("*_pb2*.py*")}
    committed_root = ROOT / "src"
    committed = {p.relative_to(committed_root): p.read_text()
                 for p in (committed_root / "ortserve" / "protos").rglob("*_pb2*.py*")}
    assert fresh.keys() == committed.keys()
    stale = [str(path) for path in fresh if fresh[path] != committed[path]]
    assert not stale, f"run scripts/generate_protos.sh: {stale} are out of date"


def test_the_stubs_live_beside_tensorflow_and_tritonclient_in_one_process() -> None:
    import sys

    ours = ("from ortserve.protos.tensorflow_serving.apis import predict_pb2; "
            "from ortserve.protos.inference import grpc_service_pb2")
    theirs = "import tensorflow; from tensorflow_serving.apis import predict_pb2; import tritonclient.grpc"
    for first, second in ((ours, theirs), (theirs, ours)):
        completed = subprocess.run([sys.executable, "-c", f"{first}; {second}; print('both')"], capture_output=True,
                                   text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert completed.stdout.strip().endswith("both")
