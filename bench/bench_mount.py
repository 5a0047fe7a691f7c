"""Mounting for the benchmark: start a backend in the foreground, watch it, tear it down.

Mirrors tests/conftest.py (same command line for both backends, same readiness test) but
adds what a benchmark needs: a registry so that every mount is undone on any exit, a
watchdog that bounds each measured operation, and a monitor for the daemon's memory and
CPU while it works.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BACKENDS = ("python", "s3fs", "rclone")


def is_mounted(mountpoint: Path) -> bool:
    """Exact match against the kernel's mount table (octal escapes decoded).

    Read from /proc/self/mountinfo, never by touching the mount: even an os.listdir of
    its root while waiting would start a backend's caches (s3fs HEADs every entry in
    the background) before its sample."""
    target = str(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if "\\" in point:
                point = point.encode().decode("unicode_escape")
            if point == target:
                return True
    return False


def unmount(mountpoint: Path) -> None:
    """Lazy unmount, so a busy or dead mount goes too; "not mounted" is not an error."""
    for tool in ("fusermount3", "fusermount"):
        try:
            done = subprocess.run([tool, "-uz", str(mountpoint)], capture_output=True, timeout=20)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=20)


def backend_argv(backend: str, bucket: str, mountpoint: Path, options: list[str]) -> list[str]:
    """The foreground command line of `backend`: s3fs syntax for python and s3fs; for
    rclone, `options` are its flags (the remote itself is defined by rclone_env)."""
    opts = ",".join(options)
    if backend == "s3fs":
        return ["s3fs", bucket, str(mountpoint), "-f", "-o", opts]
    if backend == "python":
        return [sys.executable, "-m", "run_s3fs.fs", bucket, str(mountpoint), "-f", "-o", opts]
    if backend == "rclone":
        from bench_servers import rclone_binary

        binary = rclone_binary() or "rclone"
        return [binary, "mount", f"{RCLONE_REMOTE}:{bucket}", str(mountpoint), *options]
    raise ValueError(backend)


RCLONE_REMOTE = "bench"


def rclone_env(url: str, access_key: str, secret_key: str, config: Path) -> dict[str, str]:
    """An rclone s3 remote named RCLONE_REMOTE, defined in the environment only: the
    keys never appear on a command line, and no user config file is read."""
    prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
    return {
        "RCLONE_CONFIG": str(config),  # does not exist: nothing but the environment
        prefix + "TYPE": "s3",
        prefix + "PROVIDER": "Other",
        prefix + "ENDPOINT": url,
        prefix + "REGION": "us-east-1",
        prefix + "FORCE_PATH_STYLE": "true",
        prefix + "ACCESS_KEY_ID": access_key,
        prefix + "SECRET_ACCESS_KEY": secret_key,
    }


def rclone_flags(cache_dir: Path) -> list[str]:
    """rclone mount as users run it for read-write use: --vfs-cache-mode writes (its
    close() returns before the upload), a fresh cache directory per mount."""
    return ["--vfs-cache-mode", "writes", "--cache-dir", str(cache_dir)]


class MountError(RuntimeError):
    """The backend did not come up; the message ends with the tail of its log."""


@dataclass
class Mount:
    backend: str
    path: Path
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Abort: SIGKILL the daemon so that any blocked file operation fails with ENOTCONN."""
        if self.alive():
            self.process.kill()
        unmount(self.path)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, as a supervisor would; SIGKILL if it does not go; then make sure it's gone."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if is_mounted(self.path):
            unmount(self.path)
        _LIVE.discard(self)

    def __hash__(self) -> int:
        return id(self)


# Every mount not yet stopped; bench.py stops them all from finally/atexit/signal handlers.
_LIVE: set[Mount] = set()


def kill_all() -> None:
    """Abort every mount at once (SIGKILL + lazy unmount): a file operation blocked in
    one (its server gone, say) then fails instead of hanging the benchmark's exit."""
    for mount in list(_LIVE):
        with contextlib.suppress(Exception):
            mount.kill()


def stop_all() -> None:
    for mount in list(_LIVE):
        try:
            mount.stop(timeout=10)
        except Exception as exc:  # cleanup must go on with the others
            print(
                f"warning: could not stop {mount.backend} at {mount.path}: {exc}",
                file=sys.stderr,
            )


def start_mount(
    backend: str,
    bucket: str,
    mountpoint: Path,
    url: str,
    passwd_file: Path,
    log: Path,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    extra_options: list[str] | None = None,
    keys: tuple[str, str] = ("", ""),
) -> Mount:
    """Mount `bucket` with `backend` and wait until the kernel lists the mount."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if is_mounted(mountpoint):
        unmount(mountpoint)
    env = dict(env or {})
    if backend == "rclone":
        cache = mountpoint.parent / (mountpoint.name + ".rclone-cache")
        options = rclone_flags(cache)
        env.update(rclone_env(url, keys[0], keys[1], mountpoint.parent / "rclone.conf"))
    else:
        options = [f"passwd_file={passwd_file}", f"url={url}", "use_path_request_style"]
    options += extra_options or []
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            backend_argv(backend, bucket, mountpoint, options),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C at the terminal reaches bench.py, which stops it
            # Not the repository: `python -m` would import the working tree from there.
            cwd=mountpoint.parent,
            env={**os.environ, **env},
        )
    mount = Mount(backend, mountpoint, proc, log)
    _LIVE.add(mount)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not is_mounted(mountpoint):
        time.sleep(0.02)
    if proc.poll() is not None or not is_mounted(mountpoint):
        mount.stop(timeout=5)
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        why = f"exited with {proc.returncode}" if proc.returncode is not None else "timed out"
        raise MountError(f"{backend} did not mount ({why}): " + " | ".join(tail))
    return mount


class Watchdog:
    """Bounds one measured operation: on expiry the mount is killed, which unblocks the caller."""

    def __init__(self, mount: Mount | None, seconds: float) -> None:
        self.expired = False
        self._mount = mount
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.expired = True
        if self._mount is not None:
            self._mount.kill()

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def held_memory(pid: int) -> int:
    """The memory a process holds: its RSS, plus the pages of the memfds it has open
    and does not map (the python backend's read-ahead blocks are memfds spliced to the
    kernel, never mapped, so RSS alone would miss them); mapped shmem is counted once.
    Raises psutil.NoSuchProcess once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    shmem = int(fields.get("RssShmem", "0 kB").split()[0]) * 1024
    memfds: dict[int, int] = {}  # inode → bytes: one memfd may be open as several fds
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}").startswith("/memfd:"):
                    st = os.stat(f"{fd_dir}/{fd}")
                    memfds[st.st_ino] = st.st_blocks * 512
    return rss - shmem + sum(memfds.values()) if memfds else rss


@dataclass
class Usage:
    """What a process used during one measured operation."""

    peak_rss: int = 0  # bytes
    start_rss: int = 0  # bytes, as the operation began
    cpu_seconds: float = 0.0


@dataclass
class Monitor:
    """Samples the RSS of some processes in a thread and takes their CPU time at both ends.

    Memory (held_memory: RSS and unmapped memfds) is summed over each process and the
    children it has when the monitor starts
    (neither backend forks today, but a helper process would count against its footprint).
    Sampling is kept cheap: on two cores the monitor's own CPU would show in the figures.
    """

    pids: dict[str, int]
    interval: float = 0.05
    usage: dict[str, Usage] = field(default_factory=dict)
    # CPU seconds the whole machine was busy, and this process with its reaped children
    # (`ls`, `find`): what is left over is load from elsewhere, which skews the figures.
    machine_busy: float = 0.0
    own_cpu: float = 0.0

    def __post_init__(self) -> None:
        self._procs = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self._procs[name] = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0: dict[str, float] = {}
        self._children: dict[int, list[psutil.Process]] = {}
        for proc in self._procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                self._children[proc.pid] = proc.children(recursive=True)

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return t.user + t.system

    def _rss(self, proc: psutil.Process) -> int:
        total = held_memory(proc.pid)
        for child in self._children.get(proc.pid, []):
            with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                total += held_memory(child.pid)
        return total

    def _sample(self) -> None:
        for name, proc in self._procs.items():
            try:
                rss = self._rss(proc)
            except psutil.NoSuchProcess:
                continue
            use = self.usage[name]
            use.peak_rss = max(use.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @staticmethod
    def _machine_busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> Monitor:
        self._busy0 = self._machine_busy()
        self._own0 = self._own()
        for name, proc in self._procs.items():
            self.usage[name] = Usage()
            try:
                self._cpu0[name] = self._cpu(proc)
            except psutil.NoSuchProcess:
                self._cpu0[name] = 0.0
        self._sample()
        for use in self.usage.values():
            use.start_rss = use.peak_rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.usage[name].cpu_seconds = self._cpu(proc) - self._cpu0[name]
        self.machine_busy = self._machine_busy() - self._busy0
        self.own_cpu = self._own() - self._own0


def drop_caches() -> bool:
    """Flush dirty pages and drop the page/dentry/inode caches; False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


# werkzeug (moto's server) colours the request line by status when it logs to a pipe
# that it takes for a terminal: "\x1b[33mHEAD /bkt/x HTTP/1.1\x1b[0m" for a 404.
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ServerLog:
    """Counts the requests the S3 server logged since a mark, by kind (HEAD, GET, LIST…).

    moto logs one line per request (`"HEAD /bucket/key HTTP/1.1" 200 -`): request counts
    per workload say what each backend asked of the server, independent of its speed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size

    def count(self, since: int, bucket: str) -> dict[str, int]:
        with open(self.path, "rb") as f:
            f.seek(since)
            text = ANSI.sub("", f.read().decode(errors="replace"))
        counts: dict[str, int] = {}
        for line in text.splitlines():
            try:
                request = line.split('"')[1]
                method, target, _ = request.split(" ")
            except (IndexError, ValueError):
                continue
            kind = method
            rest = target.split(f"/{bucket}", 1)[-1]
            if method == "GET" and rest.split("?")[0] in ("", "/"):
                kind = "LIST"
            elif method == "POST" and "?delete" in rest:
                kind = "DELETE"
            elif method in ("PUT", "POST") and ("uploadId=" in rest or "?uploads" in rest):
                kind = "MULTIPART"
            counts[kind] = counts.get(kind, 0) + 1
        return counts
