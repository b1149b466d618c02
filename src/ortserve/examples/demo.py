"""Build the demo model repository on first run; a second run reuses it.

Usage: python -m ortserve.examples.demo REPOSITORY
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ortserve.examples.models import mlp, save


def build(repository: Path) -> bool:
    """Write the demo models unless they are there already; True when something was built."""
    if (repository / "mlp" / "1" / "model.onnx").exists():
        return False
    save(mlp(), repository, "mlp")
    (repository / "mlp" / "config.yaml").write_text(yaml.safe_dump({"max_batch_size": 32, "max_queue_delay_us": 100}))
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    repository = Path(argv[0])
    if build(repository):
        print(f"built the demo repository in {repository}")
    else:
        print(f"using the demo repository in {repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
