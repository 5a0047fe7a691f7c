"""The benchmark's arithmetic and report (bench/bench_report.py): no timing, no servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_report as br

SIZES = {
    "read_bytes": 64 << 20,
    "big_read_bytes": 256 << 20,
    "random_count": 64,
    "write_bytes": 32 << 20,
    "big_write_bytes": 128 << 20,
    "ls_count": 1000,
    "big_ls_count": 20000,
    "find_files": 480,
    "find_dirs": 40,
    "big_find_files": 20000,
    "big_find_dirs": 200,
    "create_count": 100,
    "create_bytes": 4096,
}


def sample(n: int, **figures: float) -> dict:
    usage = {"read": {"wall": 2.0, "server_cpu": 1.9, "client_cpu": 0.5, "proxy_cpu": 0.1}}
    return {"sample": n, "figures": figures, "usage": usage, "requests": {}, "errors": []}


def scenario(server: str, profile: str, raw: dict) -> dict:
    net = {"latency_ms": 20.0, "conn_mbps": 80.0} if profile == "s3like" else None
    return {"server": server, "profile": profile, "network": net, "raw": raw}


def results(scenarios: dict) -> dict:
    r = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python3 bench/bench.py",
        "samples": 3,
        "sizes": SIZES,
        "drop_caches": True,
        "backends": {"python": {"available": True}, "s3fs": {"available": True}},
        "machine": {"cpu": "test"},
        "scenarios": scenarios,
    }
    return br.compute(r)


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


def s3like_raw() -> dict:
    return {
        "python": [
            sample(0, read_mbps=300, ttfb_ms=50, random_ms=20, peak_rss_mib=90, idle_rss_mib=40),
            sample(1, read_mbps=310, ttfb_ms=60, random_ms=30, peak_rss_mib=250, idle_rss_mib=90),
            sample(2, read_mbps=290, ttfb_ms=55, random_ms=25, peak_rss_mib=100, idle_rss_mib=95),
        ],
        "s3fs": [sample(n, read_mbps=100, ttfb_ms=50, random_ms=50) for n in range(3)],
        "rclone": [sample(n, read_mbps=150, ttfb_ms=110, random_ms=25) for n in range(3)],
        "direct": [sample(0, read_mbps=400, ttfb_ms=40, random_ms=20, peak_rss_mib=1)],
    }


def test_ratios_against_every_peer_per_scenario() -> None:
    r = results({"moto/s3like": scenario("moto", "s3like", s3like_raw())})
    sc = r["scenarios"]["moto/s3like"]
    assert sc["median"]["python"]["read_mbps"] == 300
    assert sc["median"]["python"]["peak_rss_mib"] == 100
    assert sc["ratios"]["python/s3fs"]["read_mbps"] == pytest.approx(3.0)
    assert sc["ratios"]["python/rclone"]["read_mbps"] == pytest.approx(2.0)
    assert sc["ratios"]["python/direct"]["read_mbps"] == pytest.approx(0.75)
    assert sc["ratios"]["python/s3fs"]["random_ms"] == pytest.approx(2.0)  # 50 / 25
    assert sc["ratios"]["python/rclone"]["ttfb_ms"] == pytest.approx(2.0)  # 110 / 55
    # Memory is the backend's own: no ratio against the direct client (the bench process).
    assert "peak_rss_mib" not in sc["ratios"]["python/direct"]


def test_targets_apply_by_profile() -> None:
    plain = {
        "python": [sample(0, read_mbps=90, ls_cold_s=1.0, idle_rss_mib=50)],
        "s3fs": [sample(0, read_mbps=100, ls_cold_s=2.0)],
    }
    r = results(
        {
            "moto/s3like": scenario("moto", "s3like", s3like_raw()),
            "rclone/plain": scenario("rclone", "plain", plain),
        }
    )
    rows = {(t["scenario"], t["target"]): t["status"] for t in r["targets"]}
    assert rows[("moto/s3like", "sequential read ≥ 2× s3fs")] == "pass"
    assert rows[("moto/s3like", "random reads ≥ 1.5× s3fs")] == "pass"
    assert rows[("moto/s3like", "first byte no later than s3fs")] == "FAIL"  # 55 vs 50 ms
    assert rows[("moto/s3like", "read ≥ 0.8× direct")] == "FAIL"  # 0.75
    assert rows[("moto/s3like", "find ≥ 10× s3fs")] == "n/a"  # never measured
    assert rows[("moto/s3like", "peak RSS ≤ 200 MiB while streaming")] == "pass"
    assert rows[("moto/s3like", "idle RSS ≤ 80 MiB")] == "FAIL"  # median 90
    assert ("rclone/plain", "sequential read ≥ 2× s3fs") not in rows  # s3like only
    assert rows[("rclone/plain", "`ls -l` cold ≥ 1.5× s3fs")] == "pass"  # 2.0
    assert rows[("rclone/plain", "no workload below 1.0× s3fs (lowest: read_mbps)")] == "FAIL"


def test_absolute_target_is_an_upper_bound() -> None:
    target = next(t for t in br.TARGETS if t.key == "peak_rss_mib")
    assert target.check(200.0) == "pass"
    assert target.check(201.0) == "FAIL"
    assert target.check(None) == "n/a"


def test_markdown_has_every_scenario_the_summary_and_the_rclone_note() -> None:
    r = results(
        {
            "moto/plain": scenario("moto", "plain", {"python": [sample(0, read_mbps=1)]}),
            "moto/s3like": scenario("moto", "s3like", s3like_raw()),
        }
    )
    r["backends"]["rclone"] = {"available": False, "reason": "rclone not found"}
    text = br.render_markdown(r)
    assert "| python ÷ s3fs | moto/plain | moto/s3like |" in text
    assert "| Sequential read, 64 MiB | — | 3.00× |" in text
    assert "## moto/s3like: moto behind the S3-like network (20 ms before each" in text
    assert "## moto/plain: moto on loopback, no shaping" in text
    assert "**rclone missing from this run:** rclone not found" in text
    assert "close() returns before the upload" in text
    assert "- cpu: test" in text  # the machine
    assert "Run 2026-01-01 00:00 UTC" in text  # and the date
    # the per-scenario table: every peer and python's three ratios
    header = "| figure | unit | python | s3fs | rclone | direct | ÷ s3fs | ÷ rclone | ÷ direct |"
    assert header in text
    assert "| Sequential read, 64 MiB | MB/s ↑ | 300 (290–310) | 100 (100–100) | 150" in text


def test_render_is_stable_when_recomputed() -> None:
    r = results({"moto/s3like": scenario("moto", "s3like", s3like_raw())})
    first = br.render_markdown(r)
    assert br.render_markdown(br.compute(r)) == first


def test_a_rerendered_run_goes_to_results_md_only_when_asked(tmp_path) -> None:
    import bench

    saved = tmp_path / "partial.json"
    assert bench.parse_args(["--render", str(saved)]).markdown is None
    out = tmp_path / "r.md"
    assert bench.parse_args(["--render", str(saved), "--markdown", str(out)]).markdown == out
    assert bench.parse_args([]).markdown == bench.HERE / "RESULTS.md"  # a full run's own
