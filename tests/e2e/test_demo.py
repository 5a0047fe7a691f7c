"""README command 1 (`make demo`) must keep working: run scripts/demo.py as a user would."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def _demo_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if "/run-s3fs-demo-" in line.split()[1]]


@pytest.mark.parametrize("backend", ["s3fs", "python"])
def test_demo_runs_end_to_end(backend: str, require_fuse: None) -> None:
    if backend == "s3fs" and shutil.which("s3fs") is None:
        pytest.skip("s3fs not installed")
    before = set(_demo_mounts())
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--backend", backend],
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Demo finished: everything worked." in out
    # The implicit directories were listed, the written object carries s3fs's metadata.
    assert re.search(r"^\s+reports/$", out, re.M) and re.search(r"^\s+2024/$", out, re.M)
    assert "x-amz-meta-mode: 33184" in out
    assert "exit status 0; unmounted" in out
    assert "dEmOsEcReT" not in out  # the demo's secret key is shown redacted only
    assert set(_demo_mounts()) <= before  # nothing left mounted
    work = re.search(r"working in (\S+)", out)
    assert work and not Path(work.group(1)).exists()  # temporary directory removed
