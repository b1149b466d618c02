"""Every Python block of docs/python-api.md runs, in order, as a reader would paste them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "python-api.md"


def test_the_python_api_page_runs(demo_repository: Path, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) >= 5
    (tmp_path / "demo-repository").symlink_to(demo_repository)  # as `make run` leaves it
    completed = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[:3] == ["(2, 10)", "['classifier']", "16"]
    assert "1000" in lines and "[(1, 10), (1, 10)]" in lines
    assert any("cat" in line.lower() for line in lines)
    assert "cosine 0.7553" in lines  # the two sentences of the README's curl, as sentence-transformers has them
    assert any("'input'" in line and "784" in line for line in lines), lines  # the error names the input
