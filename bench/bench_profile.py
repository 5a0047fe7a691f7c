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


def available() -> bool:
    return shutil.which("py-spy") is not None


class Profiler:
    """py-spy record on `pid` for the duration of a `with` block.

    idle=True also samples threads blocked in system calls (waiting for S3, for
    /dev/fuse): wall-clock time, which is what latency-bound workloads need.
    """

    def __init__(self, pid: int, out: Path, idle: bool = True, rate: int = 100) -> None:
        self.out = out
        self.argv = ["py-spy", "record", "--pid", str(pid), "--rate", str(rate)]
        self.argv += ["--format", "raw", "--output", str(out), "--threads", "--nonblocking"]
        if idle:
            self.argv.append("--idle")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on ^C
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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
        ("_worker (concurrent", "wait (threading", "FUSE.__init__", "select (selectors"),
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


def summarize(path: Path, top: int = 15) -> str:
    """Where the samples are: by activity, thread, leaf (self) and run_s3fs function (inclusive).

    Sampled with --idle, so percentages are of thread wall-clock time summed over threads.
    """
    stacks = parse(path)
    total = sum(c for _, c in stacks) or 1
    kinds: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    cpu_ours: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        names = [_name(f) for f in frames[1:]]
        if not names:
            continue
        kind = category(names[-1])
        kinds[kind] += count
        threads[_thread(frames[0])] += count
        leaf[names[-1]] += count
        for n in set(names):
            if "(run_s3fs/" in n:
                ours[n] += count
                if kind == CPU:
                    cpu_ours[n] += count

    def pct(n: int) -> str:
        return f"{n * 100 / total:5.1f}%"

    out = [f"{path.name}: {total} samples (all threads, wall-clock)", "", "activity:"]
    out += [f"  {pct(c)}  {k}" for k, c in kinds.most_common()]
    out.append("threads:")
    out += [f"  {pct(c)}  {t}" for t, c in threads.most_common(6)]
    out.append("innermost frames:")
    out += [f"  {pct(c)}  {name}" for name, c in leaf.most_common(top)]
    out.append("run_s3fs functions (inclusive, any activity):")
    out += [f"  {pct(c)}  {name}" for name, c in ours.most_common(top)]
    out.append("run_s3fs functions (inclusive, CPU only):")
    out += [f"  {pct(c)}  {name}" for name, c in cpu_ours.most_common(top)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarize(Path(arg)))
