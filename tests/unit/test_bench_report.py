"""The benchmark's arithmetic and report (bench/bench_report.py): no timing, no servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_report as br

SIZES = {
    "read_bytes": 256 << 20,
    "write_bytes": 128 << 20,
    "ls_count": 5000,
    "find_files": 2000,
    "find_dirs": 40,
    "create_count": 300,
    "create_bytes": 4096,
}


def sample(n: int, **figures: float) -> dict:
    usage = {"read": {"wall": 2.0, "server_cpu": 1.9, "client_cpu": 0.5, "other_cpu": 0.0}}
    return {"sample": n, "figures": figures, "usage": usage, "errors": []}


def results(raw: dict) -> dict:
    r = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python3 bench/bench.py",
        "samples": 3,
        "sizes": SIZES,
        "drop_caches": True,
        "backends": {"python": {"available": True}, "s3fs": {"available": True}},
        "machine": {"cpu": "test"},
        "raw": raw,
    }
    br.compute(r)
    r["notes"] = br.server_notes(r)
    return r


def test_median_ignores_missing_samples() -> None:
    assert br.median([3.0, None, 1.0, 2.0]) == 2.0
    assert br.median([None, None]) is None


@pytest.mark.parametrize(
    ("python", "other", "higher", "expected"),
    [
        (120.0, 100.0, True, 1.2),  # MB/s: python faster → > 1
        (1.0, 4.0, False, 4.0),  # seconds: python 4× quicker → 4
        (4.0, 1.0, False, 0.25),  # seconds: python slower → < 1
        (None, 1.0, True, None),
        (0.0, 1.0, True, None),
    ],
)
def test_ratio_is_greater_than_one_when_python_is_better(python, other, higher, expected) -> None:
    got = br.ratio(python, other, higher)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_compute_medians_ratios_and_goals() -> None:
    raw = {
        "python": [
            sample(0, read_mbps=300, ttfb_ms=50, ls_cold_s=2.0, peak_rss_mib=90),
            sample(1, read_mbps=310, ttfb_ms=60, ls_cold_s=2.5, peak_rss_mib=200),
            sample(2, read_mbps=290, ttfb_ms=55, ls_cold_s=3.0, peak_rss_mib=100),
        ],
        "s3fs": [
            sample(0, read_mbps=100, ttfb_ms=50, ls_cold_s=4.0),
            sample(1, read_mbps=100, ttfb_ms=50, ls_cold_s=6.0),
            sample(2, read_mbps=100, ttfb_ms=50, ls_cold_s=5.0),
        ],
        "direct": [sample(0, read_mbps=400, list_head_s=1.0)],
    }
    r = results(raw)
    assert r["median"]["python"]["read_mbps"] == 300
    assert r["median"]["python"]["peak_rss_mib"] == 100
    assert r["ratios"]["python/s3fs"]["read_mbps"] == pytest.approx(3.0)
    assert r["ratios"]["python/s3fs"]["ls_cold_s"] == pytest.approx(2.0)  # 5.0 / 2.5
    assert r["ratios"]["python/s3fs"]["ttfb_ms"] == pytest.approx(50 / 55)
    assert r["ratios"]["python/direct"]["read_mbps"] == pytest.approx(0.75)
    status = {g["goal"]: g["status"] for g in r["goals"]}
    assert status["sequential read ≥ 1.2× s3fs"] == "pass"
    assert status["`ls -l` cold ≥ 2× faster than s3fs"] == "pass"  # exactly at the target
    assert status["time to first byte no slower than s3fs"] == "FAIL"
    assert status["sequential read ≥ 0.9× the direct client"] == "FAIL"
    assert status["peak RSS ≤ 150 MiB while streaming"] == "pass"
    assert status["`find` ≥ 5× faster than s3fs"] == "n/a"  # never measured


def test_goal_absolute_is_an_upper_bound() -> None:
    goal = next(g for g in br.GOALS if g.against == "absolute")
    assert br.goal_status(goal, 150.0) == "pass"
    assert br.goal_status(goal, 151.0) == "FAIL"
    assert br.goal_status(goal, None) == "n/a"


def test_markdown_names_missing_backend_and_server_bound_workloads() -> None:
    raw = {
        "python": [],
        "s3fs": [sample(0, read_mbps=100, ttfb_ms=50)],
        "direct": [sample(0, read_mbps=400, ttfb_ms=10)],
    }
    r = results(raw)
    r["backends"]["python"] = {"available": False, "reason": "No module named run_s3fs.fs"}
    text = br.render_markdown(r)
    assert "python backend missing from this run:** No module named run_s3fs.fs" in text
    assert "| sequential read ≥ 1.2× s3fs | — | n/a |" in text
    assert "`ls -l` of 5,000 objects, cold" in text
    # 1.9 s of moto CPU in 2.0 s of wall time: the server set the pace.
    assert any(n.startswith("read: moto was busy") for n in r["notes"])
