#!/usr/bin/env python3
"""Soak test of the bundled backend: a long mixed workload, watching for leaks.

    python3 scripts/soak.py --minutes 60 --sample-seconds 60

Starts a local S3 server (moto), mounts a fresh bucket with `python -m run_s3fs.fs`, and
runs a mixed workload (creates, appends, overwrites, partial rewrites, renames, deletes,
directory listings and whole-file reads, now and then a 30 MiB multipart file) from a few
threads for `--minutes`. Every `--sample-seconds` it samples the backend's resident memory
(RSS), open file descriptors and threads, and prints a row. At the end it checks every
file the workload left against its model, through the mount and through the S3 API,
stops everything, prints a table and a JSON summary, and exits 1 if something is wrong:
a data mismatch, a failed operation, the backend gone, or memory or descriptors that
keep growing (a least-squares slope over the samples after the warm-up, the first
quarter of the run, above --max-rss-slope MiB/hour or --max-fd-slope per hour).

Needs FUSE and moto (the `test` extra). Not part of the test suite: it takes an hour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run_s3fs.devserver import start_moto, stop_moto

ACCESS_KEY = "AKIASOAKSOAKSOAK1234"
SECRET_KEY = "sOaKsEcReT/0123456789abcdefghijklmnopqrs"
MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


class Worker(threading.Thread):
    """Random operations in its own directory; `model` is what each file must hold."""

    MAX_FILES = 150  # the directory stays bounded: deletes win once it is this full

    def __init__(self, mnt: Path, number: int, stop: threading.Event, big_every: int) -> None:
        super().__init__(daemon=True, name=f"soak-{number}")
        self.dir = mnt / f"w{number}"
        self.rng = random.Random(number)
        self.stop = stop
        self.big_every = big_every
        self.model: dict[str, bytes] = {}
        self.ops = 0
        self.errors: list[str] = []
        self.counter = 0

    def run(self) -> None:
        self.dir.mkdir()
        while not self.stop.is_set():
            try:
                self.step()
            except OSError as e:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {e}")
                if len(self.errors) > 100:
                    return
            self.ops += 1
            time.sleep(0.005)

    def _new_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}.bin"

    def step(self) -> None:
        rng, names = self.rng, sorted(self.model)
        if self.big_every and self.ops % self.big_every == self.big_every - 1:
            name = self._new_name("big")
            data = rng.randbytes(30 * MIB + rng.randrange(MIB))
            (self.dir / name).write_bytes(data)
            self.model[name] = data
            return
        full = len(names) >= self.MAX_FILES
        ops = ["create", "append", "overwrite", "patch", "rename", "delete", "read", "list"]
        weights = [0 if full else 5, 2, 2, 2, 1, 6 if full else 2, 4, 1]
        op = rng.choices(ops, weights)[0] if names else "create"
        name = rng.choice(names) if names else ""
        if op == "create":
            name = self._new_name("f")
            data = rng.randbytes(rng.choice([0, 100, 4096, 60_000, 700_000]))
            (self.dir / name).write_bytes(data)
            self.model[name] = data
        elif op == "append":
            extra = rng.randbytes(rng.randrange(1, 30_000))
            with open(self.dir / name, "ab") as f:
                f.write(extra)
            self.model[name] += extra
        elif op == "overwrite":
            data = rng.randbytes(rng.randrange(0, 300_000))
            (self.dir / name).write_bytes(data)
            self.model[name] = data
        elif op == "patch":
            old = self.model[name]
            at = rng.randrange(len(old) + 1)
            piece = rng.randbytes(rng.randrange(1, 5000))
            with open(self.dir / name, "r+b") as f:
                f.seek(at)
                f.write(piece)
            self.model[name] = old[:at] + piece + old[at + len(piece) :]
        elif op == "rename":
            target = self._new_name("r")
            os.rename(self.dir / name, self.dir / target)
            self.model[target] = self.model.pop(name)
        elif op == "delete":
            os.unlink(self.dir / name)
            del self.model[name]
        elif op == "read":
            data = (self.dir / name).read_bytes()
            if data != self.model[name]:
                self.errors.append(f"read {self.dir.name}/{name}: content differs")
        elif op == "list":
            listed = set(os.listdir(self.dir))
            if listed != set(self.model):
                self.errors.append(f"list {self.dir.name}: {len(listed)} != {len(self.model)}")


@dataclass
class Sample:
    minute: float
    rss_mib: float
    fds: int
    threads: int
    ops: int


def slope_per_hour(samples: list[Sample], field: str) -> float:
    """Least-squares slope of `field` against time, per hour (0 for fewer than 2 points)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.minute / 60 for s in samples]
    ys = [float(getattr(s, field)) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def verify(workers: list[Worker], mnt: Path, client, bucket: str) -> tuple[int, list[str]]:
    problems, checked = [], 0
    for w in workers:
        on_disk = set(os.listdir(w.dir))
        if on_disk != set(w.model):
            problems.append(f"{w.dir.name}: listing differs from the model")
        for name, data in w.model.items():
            key = f"{w.dir.name}/{name}"
            if sha((w.dir / name).read_bytes()) != sha(data):
                problems.append(f"{key}: wrong content through the mount")
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            if sha(body) != sha(data):
                problems.append(f"{key}: wrong content in S3")
            checked += 1
    return checked, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--sample-seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument(
        "--big-every", type=int, default=400, help="a 30 MiB file every N ops (0: none)"
    )
    ap.add_argument("--max-rss-slope", type=float, default=20.0, help="MiB per hour")
    ap.add_argument("--max-fd-slope", type=float, default=10.0, help="descriptors per hour")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--backend-options", default="", help="extra -o options, comma-separated")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="run-s3fs-soak-"))
    server = start_moto(work)
    mnt = work / "mnt"
    mnt.mkdir()
    backend: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    workers: list[Worker] = []
    samples: list[Sample] = []
    summary: dict = {}
    try:
        client = server.client(ACCESS_KEY, SECRET_KEY)
        bucket = f"soak-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        passwd = work / "passwd"
        passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        passwd.chmod(0o600)
        log = work / "backend.log"
        opts = f"passwd_file={passwd},url={server.url},use_path_request_style"
        if args.backend_options:
            opts += f",{args.backend_options}"
        with open(log, "wb") as out:
            backend = subprocess.Popen(
                [sys.executable, "-m", "run_s3fs.fs", bucket, str(mnt), "-f", "-o", opts],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not is_mounted(mnt) and backend.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not is_mounted(mnt):
            print(f"the backend did not mount: {log.read_text()[-2000:]}", file=sys.stderr)
            return 1
        proc = psutil.Process(backend.pid)
        workers = [Worker(mnt, n, stop, args.big_every) for n in range(args.workers)]
        started = time.monotonic()
        for w in workers:
            w.start()
        end = started + args.minutes * 60
        print(f"{'minute':>7} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'ops':>8}", flush=True)
        while True:
            now = time.monotonic()
            if backend.poll() is not None:
                print("the backend exited", file=sys.stderr)
                break
            s = Sample(
                minute=round((now - started) / 60, 2),
                rss_mib=round(proc.memory_info().rss / MIB, 1),
                fds=proc.num_fds(),
                threads=proc.num_threads(),
                ops=sum(w.ops for w in workers),
            )
            samples.append(s)
            print(
                f"{s.minute:7.2f} {s.rss_mib:8.1f} {s.fds:5d} {s.threads:7d} {s.ops:8d}", flush=True
            )
            if now >= end:
                break
            time.sleep(min(args.sample_seconds, max(end - now, 0.1)))
        stop.set()
        for w in workers:
            w.join(300)
        errors = [e for w in workers for e in w.errors]
        checked, problems = (
            verify(workers, mnt, client, bucket)
            if backend.poll() is None
            else (
                0,
                ["backend gone"],
            )
        )
        steady = samples[len(samples) // 4 :]
        summary = {
            "minutes": args.minutes,
            "samples": len(samples),
            "operations": sum(w.ops for w in workers),
            "operation_errors": len(errors),
            "first_errors": errors[:5],
            "files_verified": checked,
            "problems": problems[:20],
            "rss_mib": {
                "start": samples[0].rss_mib if samples else None,
                "min": min(s.rss_mib for s in steady) if steady else None,
                "max": max(s.rss_mib for s in samples) if samples else None,
                "end": samples[-1].rss_mib if samples else None,
                "slope_per_hour_after_warmup": round(slope_per_hour(steady, "rss_mib"), 2),
            },
            "fds": {
                "min": min(s.fds for s in steady) if steady else None,
                "max": max(s.fds for s in samples) if samples else None,
                "end": samples[-1].fds if samples else None,
                "slope_per_hour_after_warmup": round(slope_per_hour(steady, "fds"), 2),
            },
            "threads_max": max(s.threads for s in samples) if samples else None,
            "backend_alive": backend.poll() is None,
            "tracebacks_in_log": log.read_text(errors="replace").count("Traceback"),
            "table": [asdict(s) for s in samples],
        }
        rss_ok = summary["rss_mib"]["slope_per_hour_after_warmup"] <= args.max_rss_slope
        fd_ok = summary["fds"]["slope_per_hour_after_warmup"] <= args.max_fd_slope
        summary["ok"] = bool(
            rss_ok
            and fd_ok
            and not errors
            and not problems
            and summary["backend_alive"]
            and not summary["tracebacks_in_log"]
        )
    finally:
        stop.set()
        if backend is not None and backend.poll() is None:
            backend.send_signal(signal.SIGTERM)
            try:
                backend.wait(60)
            except subprocess.TimeoutExpired:
                backend.kill()
                backend.wait()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        stop_moto(server)
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
