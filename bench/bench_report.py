"""Turning samples into the report: medians, ratios, the goals table, Markdown and JSON.

Pure functions over plain dicts (the JSON written to bench/results/latest.json), so the
report can be re-rendered from a saved run: `python3 bench/bench.py --render FILE`.

Ratio convention, everywhere: a ratio is "how many times better python is", so > 1 means
python is better whatever the unit. Throughputs: python / other. Times and memory:
other / python.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20


@dataclass(frozen=True)
class Figure:
    key: str
    label: str  # may use {read}, {write}, {ls}, {find_files}, {find_dirs}, {create}
    unit: str
    higher_is_better: bool
    direct_key: str | None = None  # the direct client's comparable figure, if any
    direct_note: str = ""


FIGURES = [
    Figure("read_mbps", "Sequential read, {read}, cold", "MB/s", True, "read_mbps",
           "better of one GET stream and 4 parallel ranged GETs"),
    Figure("ttfb_ms", "Time to first byte of it, cold", "ms", False, "ttfb_ms",
           "HEAD + GET, first byte"),
    Figure("write_mbps", "Sequential write, {write} in 1 MiB writes, close included", "MB/s",
           True, "write_mbps", "better of one PUT and a 4-way multipart upload"),
    Figure("ls_cold_s", "`ls -l` of {ls} objects, cold", "s", False, "list_head_s",
           "ListObjectsV2 pages + a HEAD per object, 8 in flight"),
    Figure("ls_warm_s", "`ls -l` of {ls} objects, warm (same mount)", "s", False, "list_s",
           "ListObjectsV2 pages only"),
    Figure("find_s", "`find` over {find_files} files in {find_dirs} directories, cold", "s",
           False, "tree_list_s", "one recursive ListObjectsV2 of the tree"),
    Figure("create_fps", "Create {create} files of 4 KiB", "files/s", True, "create_fps",
           "PUTs one after the other"),
    Figure("peak_rss_mib", "Peak RSS of the backend during the sequential tests", "MiB", False),
    Figure("start_rss_mib", "RSS of the freshly mounted backend (informational)", "MiB", False),
    Figure("mount_ms", "Mount ready (informational)", "ms", False),
]  # fmt: skip
FIGURE_BY_KEY = {f.key: f for f in FIGURES}


@dataclass(frozen=True)
class Goal:
    text: str
    key: str
    against: str  # "s3fs", "direct" or "absolute"
    target: float

    def value(self, results: dict[str, Any]) -> float | None:
        if self.against == "absolute":
            return results["median"].get("python", {}).get(self.key)
        return results["ratios"].get(f"python/{self.against}", {}).get(self.key)


GOALS = [
    Goal("sequential read ≥ 1.2× s3fs", "read_mbps", "s3fs", 1.2),
    Goal("sequential write ≥ 1.2× s3fs", "write_mbps", "s3fs", 1.2),
    Goal("`ls -l` cold ≥ 2× faster than s3fs", "ls_cold_s", "s3fs", 2.0),
    Goal("`find` ≥ 5× faster than s3fs", "find_s", "s3fs", 5.0),
    Goal("small-file create ≥ 2× s3fs", "create_fps", "s3fs", 2.0),
    Goal("time to first byte no slower than s3fs", "ttfb_ms", "s3fs", 1.0),
    Goal("sequential read ≥ 0.9× the direct client", "read_mbps", "direct", 0.9),
    Goal("peak RSS ≤ 150 MiB while streaming", "peak_rss_mib", "absolute", 150.0),
]


def goal_status(goal: Goal, value: float | None) -> str:
    if value is None:
        return "n/a"
    if goal.against == "absolute":
        return "pass" if value <= goal.target else "FAIL"
    return "pass" if value >= goal.target else "FAIL"


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


def compute(results: dict[str, Any]) -> dict[str, Any]:
    """Fill results["median"], ["ratios"] and ["goals"] from results["raw"]; return results."""
    med = {name: medians(samples) for name, samples in results["raw"].items()}
    results["median"] = med
    py = med.get("python", {})
    s3 = med.get("s3fs", {})
    direct = med.get("direct", {})
    vs_s3fs: dict[str, float] = {}
    vs_direct: dict[str, float] = {}
    for fig in FIGURES:
        r = ratio(py.get(fig.key), s3.get(fig.key), fig.higher_is_better)
        if r is not None:
            vs_s3fs[fig.key] = r
        if fig.direct_key:
            r = ratio(py.get(fig.key), direct.get(fig.direct_key), fig.higher_is_better)
            if r is not None:
                vs_direct[fig.key] = r
    results["ratios"] = {"python/s3fs": vs_s3fs, "python/direct": vs_direct}
    results["goals"] = []
    for goal in GOALS:
        value = goal.value(results)
        results["goals"].append(
            {
                "goal": goal.text,
                "figure": goal.key,
                "against": goal.against,
                "target": goal.target,
                "value": value,
                "status": goal_status(goal, value),
            }
        )
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


def _labels(sizes: dict[str, int]) -> dict[str, str]:
    def size(n: int) -> str:
        return f"{n // MIB} MiB" if n >= MIB else f"{n // 1024} KiB"

    return {
        "read": size(sizes["read_bytes"]),
        "write": size(sizes["write_bytes"]),
        "ls": f"{sizes['ls_count']:,}",
        "find_files": f"{sizes['find_files']:,}",
        "find_dirs": str(sizes["find_dirs"]),
        "create": f"{sizes['create_count']:,}",
    }


def _spread(samples: list[dict[str, Any]], key: str, unit: str) -> str:
    vals = [s["figures"][key] for s in samples if key in s.get("figures", {})]
    if len(vals) < 2:
        return ""
    return f" ({fmt(min(vals), unit)}–{fmt(max(vals), unit)})"


def figures_table(results: dict[str, Any]) -> list[str]:
    labels = _labels(results["sizes"])
    med = results["median"]
    raw = results["raw"]
    py_s3 = results["ratios"]["python/s3fs"]
    py_d = results["ratios"]["python/direct"]
    lines = [
        "| figure | unit | python | s3fs | direct client | python vs s3fs | python vs direct |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for fig in FIGURES:
        cells = [fig.label.format(**labels), fig.unit + (" ↑" if fig.higher_is_better else " ↓")]
        for name in ("python", "s3fs"):
            value = med.get(name, {}).get(fig.key)
            cells.append(fmt(value, fig.unit) + _spread(raw.get(name, []), fig.key, fig.unit))
        dval = med.get("direct", {}).get(fig.direct_key) if fig.direct_key else None
        cells.append(fmt(dval, fig.unit))
        cells.append(fmt_ratio(py_s3.get(fig.key)))
        cells.append(fmt_ratio(py_d.get(fig.key)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def goals_table(results: dict[str, Any]) -> list[str]:
    lines = ["| goal | measured | result |", "|---|--:|---|"]
    for g in results["goals"]:
        if g["against"] == "absolute":
            measured = "—" if g["value"] is None else f"{g['value']:.0f} MiB"
        else:
            measured = fmt_ratio(g["value"])
        lines.append(f"| {g['goal']} | {measured} | {g['status']} |")
    return lines


def usage_table(results: dict[str, Any]) -> list[str]:
    """Median CPU use per workload as a share of one core, for the server and the client side."""
    lines = [
        "| workload | client | wall s | server (moto) CPU | client CPU | benchmark CPU "
        "| other load |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for name in ("python", "s3fs", "direct"):
        samples = results["raw"].get(name, [])
        workloads = sorted({w for s in samples for w in s.get("usage", {})})
        for w in workloads:
            rows = [s["usage"][w] for s in samples if w in s.get("usage", {})]
            wall = median([r["wall"] for r in rows])
            server = median([r["server_cpu"] / r["wall"] for r in rows if r["wall"] > 0])
            client = median([r["client_cpu"] / r["wall"] for r in rows if r["wall"] > 0])
            own = median([r.get("bench_cpu", 0) / r["wall"] for r in rows if r["wall"] > 0])
            other = median([r.get("other_cpu", 0) / r["wall"] for r in rows if r["wall"] > 0])
            lines.append(
                f"| {w} | {name} | {fmt(wall)} | {_pct(server)} | {_pct(client)} "
                f"| {_pct(own)} | {_pct(other)} |"
            )
    return lines


REQUEST_KINDS = ("HEAD", "GET", "LIST", "PUT", "MULTIPART", "DELETE", "POST")


def requests_table(results: dict[str, Any]) -> list[str]:
    """Median requests each client made per workload, from the server's log."""
    lines = [
        "| workload | client | " + " | ".join(REQUEST_KINDS) + " | total |",
        "|---|---|" + "--:|" * (len(REQUEST_KINDS) + 1),
    ]
    for w in ("read", "write", "ls", "find", "create"):
        for name in ("python", "s3fs", "direct"):
            samples = results["raw"].get(name, [])
            rows = [s["requests"][w] for s in samples if w in s.get("requests", {})]
            if not rows:
                continue
            cells = [median([r.get(k, 0) for r in rows]) for k in REQUEST_KINDS]
            total = median([sum(r.values()) for r in rows])
            lines.append(
                f"| {w} | {name} | "
                + " | ".join("" if not c else f"{c:,.0f}" for c in cells)
                + f" | {total:,.0f} |"
            )
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    av = results["backends"]
    out = [
        "# Benchmark: bundled Python backend vs s3fs-fuse vs a direct boto3 client",
        "",
        f"Run {results['date']} with `{results['command']}`: {results['samples']} samples per "
        "backend, medians shown (min–max in brackets). Every sample is a fresh mount after "
        f"dropping the page cache ({'done' if results.get('drop_caches') else 'NOT permitted'}); "
        "the backends alternate. All clients talk to the same local S3 server (moto) in the "
        "same run. 1-minute load average as each sample started: "
        + (", ".join(f"{x:.2f}" for x in results.get("load_average", [])) or "not recorded")
        + ".",
        "",
        "Python backend: "
        + (
            f"commit {results['python_backend_source']}"
            if results.get("python_backend_source", "working tree") != "working tree"
            else "the working tree"
        )
        + ", source fingerprint "
        + (
            ", ".join(
                sorted({s["code"] for s in results["raw"].get("python", []) if s.get("code")})
            )
            or "—"
        )
        + ".",
        "",
        "Ratios say how many times better python is: > 1 means python is better "
        "(throughputs: python ÷ other; times and memory: other ÷ python). ↑ higher is "
        "better, ↓ lower is better.",
        "",
    ]
    for name, info in av.items():
        if not info.get("available", True):
            out.append(f"**{name} backend missing from this run:** {info.get('reason')}")
            out.append("")
    out += figures_table(results)
    out += ["", "Direct-client columns compare with:", ""]
    for fig in FIGURES:
        if fig.direct_key:
            out.append(f"- {fig.key}: `{fig.direct_key}`, {fig.direct_note}")
    d = results["median"].get("direct", {})
    extras = [
        ("one GET stream", "read_single_mbps", "MB/s"),
        ("4 ranged GETs", "read_ranged_mbps", "MB/s"),
        ("one 1 MiB ranged GET of the big object", "range_get_ms", "ms"),
        ("one PUT", "write_single_mbps", "MB/s"),
        ("multipart", "write_mpu_mbps", "MB/s"),
        ("list only", "list_s", "s"),
        ("list + HEADs", "list_head_s", "s"),
    ]
    out.append(
        "- direct details: "
        + ", ".join(f"{label} {fmt(d.get(k), u)} {u}" for label, k, u in extras)
    )
    out += ["", "## Goals (from the issue)", ""]
    out += goals_table(results)
    out += ["", "## Where the time goes (CPU as a share of one core, medians)", ""]
    out += usage_table(results)
    out += ["", "## Requests per workload (from the server's log, medians)", ""]
    out += [
        "`ls` counts both `ls -l` runs; the direct client's `ls` row is its list, HEADs "
        "and tree listing together.",
        "",
    ]
    out += requests_table(results)
    out += ["", "## Notes", ""]
    out += [f"- {n}" for n in results.get("notes", [])]
    out += ["", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in m.items()]
    out += ["", "## Data set", ""]
    out += [
        f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}"
        for k, v in results["sizes"].items()
    ]
    out += [f"- {line}" for line in results.get("data_notes", [])]
    errors = [
        f"{name} sample {s.get('sample')}: {e}"
        for name, samples in results["raw"].items()
        for s in samples
        for e in s.get("errors", [])
    ]
    if errors:
        out += ["", "## Errors during the run", ""] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"


OTHER_LOAD = 0.2  # share of a core used by processes outside the benchmark
SERVER_BOUND = 0.85  # moto is one Python process: near one full core is as fast as it goes


def server_notes(results: dict[str, Any]) -> list[str]:
    """Where the local server, not the client, sets the pace (from CPU shares and the ceiling)."""
    notes = [
        "moto is a single Python process (one GIL), so it cannot use much more than one "
        "core; the client under test and moto share the machine's cores.",
    ]
    raw = results["raw"]
    med = results["median"]
    for fig in FIGURES:
        if not fig.direct_key:
            continue
        ceiling = med.get("direct", {}).get(fig.direct_key)
        if ceiling is None:
            continue
        parts = []
        for name in ("python", "s3fs"):
            value = med.get(name, {}).get(fig.key)
            r = ratio(value, ceiling, fig.higher_is_better)
            if r is not None:
                parts.append(f"{name} {r * 100:.0f}%")
        if parts:
            notes.append(
                f"{fig.key}: direct client {fmt(ceiling, fig.unit)} {fig.unit}; "
                f"backends reach {', '.join(parts)} of it"
            )
    workload_of = {"read": "read", "write": "write", "ls": "ls", "find": "find", "create": "create"}
    for w in workload_of:
        busy = []
        for name in ("python", "s3fs", "direct"):
            rows = [s["usage"][w] for s in raw.get(name, []) if w in s.get("usage", {})]
            share = median([r["server_cpu"] / r["wall"] for r in rows if r["wall"] > 0])
            if share is not None and share >= SERVER_BOUND:
                busy.append(f"{name} ({share * 100:.0f}%)")
        if busy:
            notes.append(
                f"{w}: moto was busy ≥ {SERVER_BOUND * 100:.0f}% of a core with "
                + ", ".join(busy)
                + ": there the server is the bottleneck, not the client"
            )
    codes = sorted({s["code"] for s in raw.get("python", []) if s.get("code")})
    if len(codes) > 1:
        notes.append(
            "WARNING: the python backend's source changed during this run "
            f"(fingerprints {', '.join(codes)}): its samples mix versions"
        )
    noisy = []
    for name, samples in raw.items():
        for s in samples:
            for w, u in s.get("usage", {}).items():
                if u["wall"] > 0 and u.get("other_cpu", 0) / u["wall"] >= OTHER_LOAD:
                    noisy.append(f"{name} {w} #{s['sample']} ({u['other_cpu'] / u['wall']:.0%})")
    if noisy:
        notes.append(
            "other processes on the machine used a noticeable share of a core during: "
            + ", ".join(noisy)
            + "; those samples are slower than a quiet machine would give"
        )
    return notes
