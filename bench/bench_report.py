"""Turning samples into the report: medians, ratios, the targets, Markdown.

Pure functions over plain dicts (the JSON written to bench/results/latest.json), so the
report can be re-rendered from a saved run: `python3 bench/bench.py --render FILE`.

A run holds scenarios (server × network profile, e.g. "rclone/s3like"), each with raw
samples per peer (python, s3fs, rclone, direct). Ratio convention, everywhere: "how many
times better python is", > 1 means python is better whatever the unit. Throughputs:
python ÷ other. Times and memory: other ÷ python.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20
PEERS = ("python", "s3fs", "rclone", "direct")
OTHERS = ("s3fs", "rclone", "direct")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str  # may use the {names} of _labels()
    unit: str
    higher_is_better: bool
    direct: bool = True  # the direct client measures it too


FIGURES = [
    Figure("read_mbps", "Sequential read, {read}", "MB/s", True),
    Figure("big_read_mbps", "Sequential read, {big_read}", "MB/s", True),
    Figure("ttfb_ms", "First byte (open + 1-byte read of the {read} file)", "ms", False),
    Figure("random_ms", "Random reads: {random} × 1 MiB in a {big_read} file, per read", "ms",
           False),
    Figure("write_mbps", "Sequential write, {write}, close included", "MB/s", True),
    Figure("big_write_mbps", "Sequential write, {big_write}, close included", "MB/s", True),
    Figure("ls_cold_s", "`ls -l` of {ls} objects, cold", "s", False),
    Figure("ls_big_s", "`ls` of {big_ls} objects, cold", "s", False),
    Figure("ls_l_big_s", "`ls -l` of {big_ls} objects, cold", "s", False),
    Figure("find_s", "`find` over {find} files in {find_dirs} directories", "s", False),
    Figure("find_big_s", "`find` over {big_find} files in {big_find_dirs} directories", "s",
           False),
    Figure("create_fps", "Create {create} files of 4 KiB, one after the other", "files/s", True),
    Figure("peak_rss_mib", "Peak RSS while streaming", "MiB", False, False),
    Figure("idle_rss_mib", "RSS of the freshly mounted backend", "MiB", False, False),
    Figure("mount_ms", "Mount ready (informational)", "ms", False, False),
]  # fmt: skip
FIGURE_BY_KEY = {f.key: f for f in FIGURES}

DIRECT_NOTES = {
    "read_mbps": "the better of the CRT's parallel ranged GETs (≥ 8 parts of ≤ 8 MiB, 32 "
    "connections) and one GET stream (in the JSON: read_parallel_mbps, read_single_mbps)",
    "ttfb_ms": "HEAD, then a GET of the first MiB",
    "random_ms": "the same ranged GETs, one after the other",
    "write_mbps": "a multipart upload, ≥ 8 parts of 5-8 MiB, 8 in flight",
    "ls_cold_s": "ListObjectsV2 pages + a HEAD per object, 64 in flight",
    "ls_big_s": "ListObjectsV2 pages only",
    "find_s": "one recursive ListObjectsV2 (no delimiter)",
    "create_fps": "PUTs one after the other",
}


@dataclass(frozen=True)
class Target:
    """A goal of the issue, checked in every scenario of `profile` ("any": every one)."""

    text: str
    key: str
    against: str  # "s3fs", "direct" or "absolute"
    target: float
    profile: str  # "s3like", "plain" or "any"

    def check(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.against == "absolute":
            return "pass" if value <= self.target else "FAIL"
        return "pass" if value >= self.target else "FAIL"


TARGETS = [
    Target("sequential read ≥ 2× s3fs", "read_mbps", "s3fs", 2.0, "s3like"),
    Target("random reads ≥ 1.5× s3fs", "random_ms", "s3fs", 1.5, "s3like"),
    Target("write ≥ 1.5× s3fs", "write_mbps", "s3fs", 1.5, "s3like"),
    Target("`ls -l` cold ≥ 2× s3fs", "ls_cold_s", "s3fs", 2.0, "s3like"),
    Target("find ≥ 10× s3fs", "find_s", "s3fs", 10.0, "s3like"),
    Target("find (big tree) ≥ 10× s3fs", "find_big_s", "s3fs", 10.0, "s3like"),
    Target("create ≥ 2× s3fs", "create_fps", "s3fs", 2.0, "s3like"),
    Target("first byte no later than s3fs", "ttfb_ms", "s3fs", 1.0, "s3like"),
    Target("read ≥ 0.8× direct", "read_mbps", "direct", 0.8, "s3like"),
    Target("write ≥ 0.8× direct", "write_mbps", "direct", 0.8, "s3like"),
    Target("`ls -l` cold ≥ 1.5× s3fs", "ls_cold_s", "s3fs", 1.5, "plain"),
    Target("peak RSS ≤ 200 MiB while streaming", "peak_rss_mib", "absolute", 200.0, "any"),
    Target("idle RSS ≤ 80 MiB", "idle_rss_mib", "absolute", 80.0, "any"),
]
# Besides these: on every plain server, no workload below 1.0× s3fs (NO_WORSE_ON_PLAIN).
NO_WORSE_ON_PLAIN = 1.0


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(python: float | None, other: float | None, higher_is_better: bool) -> float | None:
    """How many times better python is than `other` (> 1: python better)."""
    if python is None or other is None or python <= 0 or other <= 0:
        return None
    return python / other if higher_is_better else other / python


def medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Per-figure median over the samples' "figures" dicts (failed samples lack the figure)."""
    keys = sorted({k for s in samples for k in s.get("figures", {})})
    out = {}
    for key in keys:
        m = median([s.get("figures", {}).get(key) for s in samples])
        if m is not None:
            out[key] = m
    return out


def compute_scenario(scenario: dict[str, Any]) -> dict[str, Any]:
    """Fill scenario["median"] and ["ratios"] ("python/s3fs", …) from its raw samples."""
    med = {name: medians(samples) for name, samples in scenario["raw"].items()}
    scenario["median"] = med
    py = med.get("python", {})
    ratios: dict[str, dict[str, float]] = {}
    for other in OTHERS:
        theirs = med.get(other, {})
        row = {}
        for fig in FIGURES:
            if other == "direct" and not fig.direct:
                continue
            r = ratio(py.get(fig.key), theirs.get(fig.key), fig.higher_is_better)
            if r is not None:
                row[fig.key] = r
        ratios[f"python/{other}"] = row
    scenario["ratios"] = ratios
    return scenario


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target and scenario it applies to, plus the plain-server floor."""
    rows = []
    for key, sc in results["scenarios"].items():
        for t in TARGETS:
            if t.profile not in ("any", sc["profile"]):
                continue
            if t.against == "absolute":
                value = sc["median"].get("python", {}).get(t.key)
            else:
                value = sc["ratios"].get(f"python/{t.against}", {}).get(t.key)
            rows.append(
                {"scenario": key, "target": t.text, "value": value, "status": t.check(value),
                 "absolute": t.against == "absolute"}
            )  # fmt: skip
        if sc["profile"] == "plain":
            vs = sc["ratios"].get("python/s3fs", {})
            measured = {k: v for k, v in vs.items() if FIGURE_BY_KEY[k].direct}
            worst = min(measured.items(), key=lambda kv: kv[1]) if measured else None
            rows.append(
                {
                    "scenario": key,
                    "target": "no workload below 1.0× s3fs"
                    + (f" (lowest: {worst[0]})" if worst else ""),
                    "value": worst[1] if worst else None,
                    "status": "n/a"
                    if worst is None
                    else ("pass" if worst[1] >= NO_WORSE_ON_PLAIN else "FAIL"),
                    "absolute": False,
                }
            )
    return rows


def compute(results: dict[str, Any]) -> dict[str, Any]:
    for sc in results["scenarios"].values():
        compute_scenario(sc)
    results["targets"] = evaluate_targets(results)
    return results


# --- rendering ------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit in ("MB/s", "files/s", "MiB", "ms") or abs(value) >= 100:
        return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _tree_files(files: int, dirs: int) -> int:
    return (files // dirs) * dirs  # as many in each directory


def _labels(sizes: dict[str, int]) -> dict[str, str]:
    def size(n: int) -> str:
        return f"{n // MIB} MiB" if n >= MIB else f"{n // 1024} KiB"

    return {
        "read": size(sizes["read_bytes"]),
        "big_read": size(sizes["big_read_bytes"]),
        "random": str(sizes["random_count"]),
        "write": size(sizes["write_bytes"]),
        "big_write": size(sizes["big_write_bytes"]),
        "ls": f"{sizes['ls_count']:,}",
        "big_ls": f"{sizes['big_ls_count']:,}",
        "find": f"{_tree_files(sizes['find_files'], sizes['find_dirs']):,}",
        "find_dirs": str(sizes["find_dirs"]),
        "big_find": f"{_tree_files(sizes['big_find_files'], sizes['big_find_dirs']):,}",
        "big_find_dirs": str(sizes["big_find_dirs"]),
        "create": f"{sizes['create_count']:,}",
    }


def _spread(samples: list[dict[str, Any]], key: str, unit: str) -> str:
    vals = [s["figures"][key] for s in samples if key in s.get("figures", {})]
    if len(vals) < 2:
        return ""
    return f" ({fmt(min(vals), unit)}–{fmt(max(vals), unit)})"


def _present(results: dict[str, Any], sc: dict[str, Any]) -> list[Figure]:
    """The figures some peer measured in this scenario, in FIGURES order."""
    seen = {k for m in sc["median"].values() for k in m}
    return [f for f in FIGURES if f.key in seen]


def scenario_table(results: dict[str, Any], key: str) -> list[str]:
    """Every figure of one scenario: each peer's median (min–max) and python's ratios."""
    sc = results["scenarios"][key]
    labels = _labels(results["sizes"])
    lines = [
        "| figure | unit | python | s3fs | rclone | direct | ÷ s3fs | ÷ rclone | ÷ direct |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for fig in _present(results, sc):
        cells = [fig.label.format(**labels), fig.unit + (" ↑" if fig.higher_is_better else " ↓")]
        for peer in PEERS:
            value = sc["median"].get(peer, {}).get(fig.key)
            cells.append(fmt(value, fig.unit) + _spread(sc["raw"].get(peer, []), fig.key, fig.unit))
        for other in OTHERS:
            cells.append(fmt_ratio(sc["ratios"].get(f"python/{other}", {}).get(fig.key)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_table(results: dict[str, Any], other: str = "s3fs") -> list[str]:
    """python ÷ `other` for every figure (rows) and scenario (columns): the issue's table."""
    keys = list(results["scenarios"])
    labels = _labels(results["sizes"])
    lines = [
        f"| python ÷ {other} | " + " | ".join(keys) + " |",
        "|---|" + "--:|" * len(keys),
    ]
    for fig in FIGURES:
        if fig.key == "mount_ms" or (other == "direct" and not fig.direct):
            continue
        cells = [
            fmt_ratio(results["scenarios"][k]["ratios"].get(f"python/{other}", {}).get(fig.key))
            for k in keys
        ]
        if all(c == "—" for c in cells):
            continue
        lines.append(f"| {fig.label.format(**labels)} | " + " | ".join(cells) + " |")
    return lines


def targets_table(results: dict[str, Any]) -> list[str]:
    lines = ["| scenario | target | measured | result |", "|---|---|--:|---|"]
    for row in results.get("targets", []):
        if row["absolute"]:
            measured = "—" if row["value"] is None else f"{row['value']:.0f} MiB"
        else:
            measured = fmt_ratio(row["value"])
        lines.append(f"| {row['scenario']} | {row['target']} | {measured} | {row['status']} |")
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def usage_table(results: dict[str, Any], key: str) -> list[str]:
    """Median CPU per workload as a share of one core: server, proxy, client, others."""
    sc = results["scenarios"][key]
    lines = [
        "| workload | client | wall s | server CPU | proxy CPU | client CPU | other load |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for peer in PEERS:
        samples = sc["raw"].get(peer, [])
        workloads = [w for w in dict.fromkeys(w for s in samples for w in s.get("usage", {}))]
        for w in workloads:
            rows = [s["usage"][w] for s in samples if w in s.get("usage", {})]
            ok = [r for r in rows if r["wall"] > 0]

            def share(field: str, rows: list[dict[str, float]] = ok) -> float | None:
                return median([r.get(field, 0.0) / r["wall"] for r in rows])

            lines.append(
                f"| {w} | {peer} | {fmt(median([r['wall'] for r in rows]))} "
                f"| {_pct(share('server_cpu'))} | {_pct(share('proxy_cpu'))} "
                f"| {_pct(share('client_cpu'))} | {_pct(share('other_cpu'))} |"
            )
    return lines


REQUEST_KINDS = ("HEAD", "GET", "LIST", "PUT", "MULTIPART", "DELETE", "POST")


def requests_table(results: dict[str, Any], key: str) -> list[str]:
    """Median requests each client made per workload (where the server logs them)."""
    sc = results["scenarios"][key]
    lines = [
        "| workload | client | " + " | ".join(REQUEST_KINDS) + " | total |",
        "|---|---|" + "--:|" * (len(REQUEST_KINDS) + 1),
    ]
    workloads = list(
        dict.fromkeys(w for ss in sc["raw"].values() for s in ss for w in s.get("requests", {}))
    )
    for w in workloads:
        for peer in PEERS:
            rows = [
                s["requests"][w] for s in sc["raw"].get(peer, []) if s.get("requests", {}).get(w)
            ]
            if not rows:
                continue
            cells = [median([r.get(k, 0) for r in rows]) for k in REQUEST_KINDS]
            total = median([sum(r.values()) for r in rows])
            lines.append(
                f"| {w} | {peer} | "
                + " | ".join("" if not c else f"{c:,.0f}" for c in cells)
                + f" | {total:,.0f} |"
            )
    return lines if len(lines) > 2 else []


def scenario_title(key: str, sc: dict[str, Any]) -> str:
    server = {"moto": "moto", "rclone": "rclone serve s3"}.get(sc["server"], sc["server"])
    net = sc.get("network")
    if sc["profile"] == "s3like" and net:
        return (
            f"{key}: {server} behind the S3-like network "
            f"({net['latency_ms']:g} ms before each response, {net['conn_mbps']:g} MB/s per "
            "connection)"
        )
    return f"{key}: {server} on loopback, no shaping"


NOTES = [
    "rclone mount runs with `--vfs-cache-mode writes`: its close() returns before the "
    "upload (the file is uploaded from its cache afterwards), so its write and create "
    "figures measure the local cache, not S3, and are not comparable with python's or "
    "s3fs's, whose close() returns once the data is in S3.",
    "The direct client is the benchmark's own awscrt client (bench/crt_client.py), no FUSE: "
    "the ceiling a server and network allow. Its `ls` figures are the least requests a "
    "file system must make (listing pages, and for `ls -l` a HEAD per object, because "
    "every object carries s3fs's metadata headers).",
    "moto copies the whole object for every GET, whatever the range, and closes every "
    "connection after one response; rclone serve s3 keeps connections alive and serves "
    "ranges from the file. rclone serve s3 keeps directories, not s3fs's `dir/` marker "
    "objects, and keeps x-amz-meta-* headers other than mtime in memory only.",
]


def render_markdown(results: dict[str, Any]) -> str:
    av = results.get("backends", {})
    loads = ", ".join(f"{x:.2f}" for x in results.get("load_average", [])) or "not recorded"
    out = [
        "# Benchmark: the bundled Python backend vs s3fs-fuse vs rclone mount vs a direct client",
        "",
        f"Run {results['date']} with `{results['command']}`: {results['samples']} sample(s) "
        "per peer and scenario, medians shown (min–max in brackets). Every sample is a fresh "
        "mount after dropping the page cache "
        f"({'done' if results.get('drop_caches') else 'NOT permitted'}); the peers' order "
        "rotates from workload to workload and sample to sample. 1-minute load average as "
        f"each sample started: {loads}.",
        "",
        "Python backend: "
        + (
            f"commit {results['python_backend_source']}"
            if results.get("python_backend_source", "working tree") != "working tree"
            else "the working tree"
        )
        + ". Ratios say how many times better python is: > 1 means python is better "
        "(throughputs: python ÷ other; times and memory: other ÷ python). "
        "↑ higher is better, ↓ lower is better.",
        "",
    ]
    if results.get("quick"):
        out += ["**A --quick run: small data sets, not the benchmark's figures.**", ""]
    for name, info in av.items():
        if not info.get("available", True):
            out += [f"**{name} missing from this run:** {info.get('reason')}", ""]
    out += ["## Summary: python ÷ s3fs", "", *summary_table(results, "s3fs")]
    out += ["", "## Summary: python ÷ rclone mount", "", *summary_table(results, "rclone")]
    out += ["", "## Summary: python ÷ direct client", "", *summary_table(results, "direct")]
    out += ["", "## Targets (issue 8)", "", *targets_table(results)]
    for key, sc in results["scenarios"].items():
        out += ["", f"## {scenario_title(key, sc)}", "", *scenario_table(results, key)]
        out += ["", "CPU as a share of one core (medians):", "", *usage_table(results, key)]
        req = requests_table(results, key)
        if req:
            source = "the proxy's log" if sc["profile"] == "s3like" else "moto's log"
            out += ["", f"Requests per workload (from {source}, medians):", "", *req]
    out += ["", "## Notes", ""] + [f"- {n}" for n in NOTES]
    out.append("- direct client: " + "; ".join(f"{k}: {v}" for k, v in DIRECT_NOTES.items()))
    for name, seed in results.get("seeding", {}).items():
        out.append(
            f"- {name} filled with {seed['objects']:,} objects in {seed['seconds']:.0f} s "
            "(awscrt, 64 requests in flight)"
        )
    out += [f"- {line}" for line in results.get("skipped", [])]
    if results.get("wall_seconds"):
        out.append(f"- the whole run took {results['wall_seconds'] / 60:.0f} min")
    out += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in results["machine"].items()]
    out += ["", "## Data set", ""]
    out += [f"- {k}: {v:,}" for k, v in results["sizes"].items()]
    out.append(
        "- every small object carries s3fs's metadata headers (x-amz-meta-mode/uid/gid/mtime) "
        "and every directory an s3fs-style `dir/` marker where the server keeps one"
    )
    errors = [
        f"{key} {peer} sample {s.get('sample')}: {e}"
        for key, sc in results["scenarios"].items()
        for peer, samples in sc["raw"].items()
        for s in samples
        for e in s.get("errors", [])
    ]
    if errors:
        out += ["", "## Errors during the run", ""] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"
