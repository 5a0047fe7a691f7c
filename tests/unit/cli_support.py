"""The CLI run as a user runs it, in a sandbox, for test_cli and test_cli_matrix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(name="sandbox")
def sandbox_fixture(tmp_path: Path) -> Path:
    """tmp_path with home/, cwd/, a private (0700) private/ directory and an empty
    environment.json (`{}`)."""
    for d in ("home", "cwd", "private"):
        (tmp_path / d).mkdir()
    (tmp_path / "private").chmod(0o700)
    (tmp_path / "environment.json").write_text("{}")
    return tmp_path


def run_cli(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m run_s3fs ARGS` with exactly `env`, in the sandbox's cwd/."""
    return subprocess.run(
        [sys.executable, "-m", "run_s3fs", *args],
        env=env,
        cwd=tmp / "cwd",
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Mode, size and mtime of everything under `root`: equal snapshots, nothing changed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found
