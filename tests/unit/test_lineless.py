"""tests/lineless.py: a failure in a frame with no line number fails that test only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent

# Two failures in frames without line numbers (a raise, and a pytest-timeout expiry like
# the one CI hit), then a test that must still run.
INNER = """
import time

import pytest


def _without_line_numbers(func):
    code = func.__code__
    units, table = len(code.co_code) // 2, bytearray()
    while units:  # Python 3.11+ location table: entries of "no location" (code 15)
        n = min(8, units)
        table.append(0x80 | (15 << 3) | (n - 1))
        units -= n
    func.__code__ = code.replace(co_linetable=bytes(table))
    return func


@_without_line_numbers
def boom():
    raise ValueError("boom")


@_without_line_numbers
def hang():
    time.sleep(30)


def test_raises():
    boom()


@pytest.mark.timeout(1)
def test_times_out():
    hang()


def test_still_runs():
    pass
"""


def run_inner(tmp_path: Path, *plugin: str) -> str:
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin, "test_inner.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout + proc.stderr


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the location table format is 3.11's")
def test_lineless_frames_fail_their_test_and_the_session_goes_on(tmp_path: Path) -> None:
    without = run_inner(tmp_path)
    if "INTERNALERROR" not in without:
        pytest.skip("this pytest renders frames without line numbers: tests/lineless.py can go")
    out = run_inner(tmp_path, "-p", "lineless")
    assert "INTERNALERROR" not in out, out[-3000:]
    assert "2 failed, 1 passed" in out, out[-3000:]
    assert "ValueError: boom" in out
    assert "Timeout" in out
