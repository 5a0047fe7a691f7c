#!/usr/bin/env python3
"""Benchmark: the bundled Python FUSE backend vs s3fs-fuse vs a direct boto3 client.

One local S3 server (moto) for everything; one bucket filled once with boto3; then, for
every sample, each workload on a FRESH mount of each backend (alternating which goes
first), after dropping the page cache, plus the direct client as the ceiling. Medians,
ratios and the goals table go to bench/results/latest.json and bench/RESULTS.md.

    python3 bench/bench.py                 # full run, 3 samples (~15 min on 2 cores)
    python3 bench/bench.py --quick         # smoke run, small sizes, 1 sample (~1-2 min)
    python3 bench/bench.py --backends s3fs # leave the other backend out
    python3 bench/bench.py --render bench/results/latest.json   # re-render the Markdown

Runs as root (drop_caches); needs /dev/fuse, s3fs, fusermount and moto[server].
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
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
sys.path.insert(0, str(ROOT))  # run_s3fs.devserver, without needing an install

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
    start_mount,
    stop_all,
)

from run_s3fs.devserver import S3Server, start_moto, stop_moto  # noqa: E402

ACCESS_KEY = "AKIABENCHBENCHBENCH1"
SECRET_KEY = "bEnChSeCrEt/0123456789abcdefghijklmnopq"
BUCKET = "run-s3fs-bench"
RESULTS = HERE / "results"

# Keep every object in moto's memory: by default it spools objects over ~5 MiB to temporary
# files, and dropping the page cache between samples would then cool the server's storage
# too, not only the clients'.
MOTO_ENV = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30)}

# Per-operation bounds (seconds); generous, they only stop a hung or pathological backend.
TIMEOUTS = {"read": 300, "write": 300, "ls": 600, "find": 300, "create": 300}
WORKLOADS = tuple(TIMEOUTS)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = wl.QUICK_SIZES if args.quick else wl.DEFAULT_SIZES
        self.work = Path(tempfile.mkdtemp(prefix="run-s3fs-bench-"))
        self.logs = RESULTS / "logs"
        self.server: S3Server | None = None
        self.client: Any = None
        self.read_data = b""
        self.write_data = b""
        self.raw: dict[str, list[dict[str, Any]]] = {"direct": []}
        self.available: dict[str, dict[str, Any]] = {}
        self.mount_failures: dict[str, int] = {}
        self.dropped = True
        self.passwd = self.work / "passwd-s3fs"
        self.load: list[float] = []  # 1-minute load average as each sample starts
        self.src = ROOT  # where the python backend is imported from
        self.backend_env: dict[str, str] = {}

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
        where = subprocess.run(
            [sys.executable, "-c", "import run_s3fs.fs, sys; print(run_s3fs.fs.__file__)"],
            cwd=self.work,
            env={**os.environ, **self.backend_env},
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        if not where.startswith(str(self.src)):
            raise SystemExit(f"--commit: the backend would be imported from {where!r}")
        say(f"python backend from commit {rev} ({where})")

    def setup(self) -> None:
        if self.args.commit:
            self.export_commit(self.args.commit)
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        fd = os.open(self.passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        self.server = start_moto(self.logs, MOTO_ENV)
        self.client = self.server.client(ACCESS_KEY, SECRET_KEY)
        self.server_log = ServerLog(self.server.log)
        say(f"moto server at {self.server.url} (log: {self.server.log})")
        self.read_data = os.urandom(self.sizes.read_bytes)
        self.write_data = os.urandom(self.sizes.write_bytes)
        seconds = wl.fill_bucket(self.client, BUCKET, self.sizes, self.read_data)
        say(f"bucket filled in {seconds:.1f}s")
        for backend in self.args.backends:
            self.raw[backend] = []
            self.available[backend] = {"available": True, "reason": None}

    def teardown(self) -> None:
        stop_all()
        if self.server is not None:
            stop_moto(self.server)
            self.server = None
        for p in sorted(self.work.glob("**/*"), reverse=True):
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()
        with contextlib.suppress(OSError):
            self.work.rmdir()

    # --- one measured operation -----------------------------------------------------------------

    def _monitor(self, client_pid: int) -> Monitor:
        assert self.server is not None
        return Monitor({"client": client_pid, "server": self.server.process.pid})

    @staticmethod
    def _usage(mon: Monitor, wall: float, client_is_self: bool = False) -> dict[str, float]:
        server = mon.usage["server"].cpu_seconds
        client = mon.usage["client"].cpu_seconds
        own = 0.0 if client_is_self else mon.own_cpu
        return {
            "wall": wall,
            "server_cpu": server,
            "client_cpu": client,
            "bench_cpu": own,
            "other_cpu": max(0.0, mon.machine_busy - server - client - own),
            "peak_rss_mib": mon.usage["client"].peak_rss / bench_report.MIB,
            "start_rss_mib": mon.usage["client"].start_rss / bench_report.MIB,
        }

    def mounted(
        self, backend: str, sample: dict[str, Any], name: str, body: Callable[[Path], dict]
    ) -> None:
        """Fresh mount, cold caches, run `body(mountpoint)` under a watchdog, unmount."""
        if not self.available[backend]["available"]:
            return
        self.dropped &= drop_caches()
        mnt = self.work / f"mnt-{backend}-{name}-{sample['sample']}"
        log = self.logs / f"{backend}.log"
        t0 = time.perf_counter()
        try:
            mount: Mount = start_mount(
                backend,
                BUCKET,
                mnt,
                self.server.url,
                self.passwd,
                log,
                env=self.backend_env,
                extra_options=self.args.options.get(backend),
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
        try:
            profile = contextlib.nullcontext()
            if self.args.profile and backend == "python":
                out = RESULTS / "profile" / f"{name}-{sample['sample']}.txt"
                profile = bench_profile.Profiler(mount.process.pid, out)
            with (
                Watchdog(mount, TIMEOUTS[name]) as dog,
                self._monitor(mount.process.pid) as mon,
                profile,
            ):
                mark = self.server_log.mark()
                t1 = time.perf_counter()
                try:
                    figures = body(mnt)
                except Exception as exc:
                    why = "timed out" if dog.expired else f"{type(exc).__name__}: {exc}"
                    sample["errors"].append(f"{name}: {why}")
                    say(f"{backend} {name}: {why}")
                    figures = {}
                wall = time.perf_counter() - t1
            sample["figures"].update(figures)
            sample["usage"][name] = self._usage(mon, wall)
            sample["requests"][name] = self.server_log.count(mark, BUCKET)
            if not mount.alive():
                sample["errors"].append(f"{name}: the {backend} process died during the test")
        finally:
            mount.stop()
        if isinstance(profile, bench_profile.Profiler) and profile.out.exists():
            summary = bench_profile.summarize(profile.out)
            profile.out.with_suffix(".summary.txt").write_text(summary)
        say(f"{backend:6} {name:6} " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()))

    def direct(self, sample: dict[str, Any], name: str, body: Callable[[], dict]) -> None:
        self.dropped &= drop_caches()
        with self._monitor(os.getpid()) as mon:
            mark = self.server_log.mark()
            t1 = time.perf_counter()
            try:
                figures = body()
            except Exception as exc:
                sample["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                figures = {}
            wall = time.perf_counter() - t1
        sample["figures"].update(figures)
        usage = self._usage(mon, wall, client_is_self=True)
        usage.pop("peak_rss_mib")  # the benchmark's own memory, not a backend's
        usage.pop("start_rss_mib")
        sample["usage"][name] = usage
        sample["requests"][name] = self.server_log.count(mark, BUCKET)
        say(f"direct {name:6} " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()))

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        for n in range(self.args.samples):
            wait_quiet(self.args.wait_quiet)
            say(f"--- sample {n + 1}/{self.args.samples} (load average {load():.2f})")
            self.load.append(load())
            self.run_direct(n)
            self.run_mounted(n)
        return self.results()

    def run_direct(self, n: int) -> None:
        sizes, c, d = self.sizes, self.client, new_sample(n)
        jobs = {
            "read": lambda: wl.direct_read(c, BUCKET, sizes, self.read_data),
            "write": lambda: wl.direct_write(c, BUCKET, f"d{n}", self.write_data),
            "ls": lambda: wl.direct_list(c, BUCKET, sizes),
            "create": lambda: wl.direct_create(c, BUCKET, f"d{n}", sizes),
        }
        for name, job in jobs.items():
            # `ls` also covers `find` (one listing of the tree)
            if name in self.args.workloads or (name == "ls" and "find" in self.args.workloads):
                self.direct(d, name, job)
        self.raw["direct"].append(d)
        self.cleanup()

    def run_mounted(self, n: int) -> None:
        sizes = self.sizes
        samples = {b: new_sample(n) for b in self.args.backends}

        def job(name: str, backend: str) -> Callable[[Path], dict]:
            tag = f"{backend}{n}"
            return {
                "read": lambda m: wl.fs_read(m, sizes, self.read_data),
                "write": lambda m: wl.fs_write(m, tag, self.write_data),
                "ls": lambda m: wl.fs_ls(m, sizes, TIMEOUTS["ls"] / 2),
                "find": lambda m: wl.fs_find(m, sizes, TIMEOUTS["find"]),
                "create": lambda m: wl.fs_create(m, tag, sizes),
            }[name]

        for j, name in enumerate(self.args.workloads):
            order = list(self.args.backends)
            if (n + j) % 2:
                order.reverse()  # alternate who goes first, so drift hits both alike
            for backend in order:
                self.mounted(backend, samples[backend], name, job(name, backend))
                self.cleanup()
        for backend, s in samples.items():
            streaming = [s["usage"][w] for w in ("read", "write") if w in s["usage"]]
            if streaming:
                s["figures"]["peak_rss_mib"] = max(u["peak_rss_mib"] for u in streaming)
                s["figures"]["start_rss_mib"] = min(u["start_rss_mib"] for u in streaming)
            self.raw[backend].append(s)

    def cleanup(self) -> None:
        """Remove what the write and create workloads made, so every sample starts alike."""
        wl.delete_prefix(self.client, BUCKET, wl.WRITE_DIR)
        wl.delete_prefix(self.client, BUCKET, wl.CREATE_DIR)

    def results(self) -> dict[str, Any]:
        results: dict[str, Any] = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python3 bench/bench.py", *sys.argv[1:]]),
            "samples": self.args.samples,
            "quick": self.args.quick,
            "sizes": self.sizes.as_dict(),
            "drop_caches": self.dropped,
            "load_average": [round(x, 2) for x in self.load],
            "backends": self.available,
            "machine": bench_machine.describe(),
            "python_backend_source": self.args.commit_resolved or "working tree",
            "data_notes": [
                "every small object (the `ls` directory, the `find` tree) was written with "
                "boto3 carrying s3fs's metadata headers (x-amz-meta-mode/uid/gid/mtime), and "
                "every directory has an s3fs-style `dir/` marker (application/x-directory): "
                "a bucket as s3fs would have written it, so a backend cannot answer `stat` "
                "from the listing alone and must fetch each object's metadata",
                "the read object is random data uploaded as a 16 MiB-part multipart upload",
                "moto runs with MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=1 GiB (objects held in memory)",
                "both backends mount with the same options: passwd_file, url, "
                "use_path_request_style"
                + (
                    f"; extra options: {self.args.options}"
                    if any(self.args.options.values())
                    else " (no cache or tuning options)"
                ),
            ],
            "raw": self.raw,
        }
        bench_report.compute(results)
        results["notes"] = bench_report.server_notes(results)
        return results


def new_sample(n: int) -> dict[str, Any]:
    return {"sample": n, "figures": {}, "usage": {}, "requests": {}, "errors": []}


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
    print("\n".join(bench_report.figures_table(results)))
    print()
    print("\n".join(bench_report.goals_table(results)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, help="samples per backend (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated subset of: " + ", ".join(BACKENDS),
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the python backend during each workload "
        "(bench/results/profile/); its figures are then skewed",
    )
    p.add_argument(
        "--json",
        type=Path,
        help="where the JSON goes (default bench/results/latest.json; partial.json for "
        "--quick, --profile or a subset of workloads)",
    )
    p.add_argument(
        "--markdown",
        type=Path,
        help="where the Markdown goes (default bench/RESULTS.md for a full run, else none)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help=f"before each sample, wait up to this long for the load average to drop "
        f"below {QUIET_LOAD}",
    )
    p.add_argument(
        "--commit",
        metavar="REV",
        help="benchmark the python backend as of this commit (git archive), not the working tree",
    )
    p.add_argument(
        "--python-options",
        default="",
        metavar="OPTS",
        help="extra -o options for the python backend (experiments; recorded in the results)",
    )
    p.add_argument("--s3fs-options", default="", metavar="OPTS", help="extra -o options for s3fs")
    p.add_argument("--render", type=Path, metavar="JSON", help="only re-render a saved run")
    args = p.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        p.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    args.workloads = [w for w in WORKLOADS if w in args.workloads.split(",")]
    if args.profile and not bench_profile.available():
        p.error("--profile needs py-spy (pip install py-spy)")
    args.commit_resolved = None
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
        args.commit_resolved = args.commit = rev.stdout.strip()
    if args.samples is None:
        args.samples = 1 if args.quick else 3
    if args.samples < 1:
        p.error("--samples must be at least 1")
    args.options = {
        "python": [o for o in args.python_options.split(",") if o],
        "s3fs": [o for o in args.s3fs_options.split(",") if o],
    }
    # Only a full, unprofiled run with default options replaces latest.json and RESULTS.md.
    partial = args.quick or args.profile or len(args.workloads) < len(WORKLOADS)
    partial = partial or any(args.options.values())
    if args.json is None:
        args.json = RESULTS / ("partial.json" if partial else "latest.json")
    if args.markdown is None and not partial:
        args.markdown = HERE / "RESULTS.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        bench_report.compute(results)
        results["notes"] = bench_report.server_notes(results)
        write_outputs(results, args.render, args.markdown)
        return 0
    if os.geteuid() != 0:
        say("warning: not root: the page cache cannot be dropped between samples")
    bench = Bench(args)

    def on_signal(signum: int, _frame: object) -> None:
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
