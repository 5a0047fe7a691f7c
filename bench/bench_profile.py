"""Profiling the Python backend while a workload runs: py-spy attached to the daemon.

`python3 bench/bench.py --profile` records every python-backend workload into
bench/results/profile/<workload>-<sample>.txt (py-spy's collapsed stacks) and writes a
summary next to it. py-spy takes CPU itself, so a profiled run's figures are not the
benchmark's: use it to find where the time goes, then measure without it.

    pip install py-spy    # not a dependency of the project; only for this
    python3 bench/bench_profile.py bench/results/profile/ls-0.txt   # summarise again
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str | None:
    """py-spy on PATH, or in the venv this runs from (`.venv/bin/python bench/bench.py`
    does not put .venv/bin on PATH)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def available() -> bool:
    return _py_spy() is not None


RATE = 100  # samples per second and thread


class Profiler:
    """Two py-spy recordings of `pid` for the duration of a `with` block: `out` with
    --idle (every thread, blocked or not: wall-clock time, what latency-bound workloads
    need) and `out.cpu.txt` without (threads on a CPU only)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.cpu_out = out.with_suffix(".cpu.txt")
        base = [
            _py_spy() or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(RATE),
            "--format",
            "raw",
        ]
        base += ["--threads", "--nonblocking"]
        self.argvs = [
            [*base, "--idle", "--output", str(out)],
            [*base, "--output", str(self.cpu_out)],
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for argv in self.argvs:
            self.procs.append(
                subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
                )
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on ^C
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _name(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "lib/python3.11/", "run_s3fs/"):
        if marker in file:
            file = ("run_s3fs/" if marker == "run_s3fs/" else "") + file.split(marker, 1)[1]
            break
    return f"{m['func']} ({file})"


# What a sampled thread was doing, judged by its innermost frame.
CATEGORIES = (
    ("waiting for the S3 server (socket reads)", ("readinto (socket", "recv", "_ssl")),
    (
        "opening/closing connections",
        ("getaddrinfo", "create_connection", "socket.__init__", "_real_close", "connect ("),
    ),
    (
        "parked (idle pool workers, the FUSE loop, lock waits)",
        (
            "_worker (concurrent",
            "wait (threading",
            "FUSE.__init__",
            "select (selectors",
            "GracefulStop._watch",
        ),
    ),
)
CPU = "running Python (CPU, under the GIL)"


def category(leaf: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in leaf for n in needles):
            return name
    return CPU


def _thread(frame: str) -> str:
    """`thread (1234): s3-head_7` → `s3-head_N`."""
    name = frame.split("): ", 1)[-1]
    return re.sub(r"_\d+$", "_N", name)


def summarize(path: Path, top: int = 12) -> str:
    """Thread-seconds by activity, thread, innermost frame and run_s3fs function (from the
    --idle recording), and CPU-seconds per function (from the .cpu.txt one, if present)."""
    stacks = parse(path)
    kinds: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        names = [_name(f) for f in frames[1:]]
        if not names:
            continue
        kind = category(names[-1])
        kinds[kind] += count
        if kind.startswith("parked"):
            continue  # idle pool workers would swamp everything else
        threads[_thread(frames[0])] += count
        leaf[names[-1]] += count
        for n in set(names):
            if "(run_s3fs/" in n:
                ours[n] += count

    def sec(n: int) -> str:
        return f"{n / RATE:8.1f}s"

    out = [f"{path.name}: thread-seconds (wall-clock, all threads; {RATE} Hz)", "activity:"]
    out += [f"  {sec(c)}  {k}" for k, c in kinds.most_common()]
    out.append("threads (not parked):")
    out += [f"  {sec(c)}  {t}" for t, c in threads.most_common(6)]
    out.append("innermost frames (not parked):")
    out += [f"  {sec(c)}  {name}" for name, c in leaf.most_common(top)]
    out.append("run_s3fs functions, inclusive (not parked):")
    out += [f"  {sec(c)}  {name}" for name, c in ours.most_common(top)]
    cpu_path = path.with_suffix(".cpu.txt")
    if cpu_path.exists():
        cpu_total: collections.Counter[str] = collections.Counter()
        cpu_leaf: collections.Counter[str] = collections.Counter()
        cpu_ours: collections.Counter[str] = collections.Counter()
        for frames, count in parse(cpu_path):
            names = [_name(f) for f in frames[1:]]
            if not names:
                continue
            cpu_total["all"] += count
            cpu_leaf[names[-1]] += count
            for n in set(names):
                if "(run_s3fs/" in n or "(botocore/" in n.split(" ", 1)[-1][:12]:
                    cpu_ours[n] += count
        out.append(f"on-CPU samples ({cpu_path.name}): {sec(cpu_total['all']).strip()} in all")
        out.append("  innermost frames:")
        out += [f"  {sec(c)}  {name}" for name, c in cpu_leaf.most_common(top)]
        out.append("  run_s3fs/botocore functions, inclusive:")
        out += [f"  {sec(c)}  {name}" for name, c in cpu_ours.most_common(top)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarize(Path(arg)))
