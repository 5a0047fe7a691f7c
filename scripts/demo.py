"""`make demo`: run-s3fs end to end against a local S3 server, step by step.

1. start a local S3 server (moto) on 127.0.0.1 and fill a bucket the way other tools do:
   keys under prefixes (`reports/2024/q1.csv`) with no directory objects at all;
2. `run-s3fs --check` on that setup;
3. `run-s3fs` as a child process, configured by S3FS_* variables only, exactly as
   supervisord would start it; wait for the mount;
4. list and read through the mount (the prefixes show up as directories);
5. write a file through the mount and look at the object it became, through the S3 API;
6. SIGTERM (what `supervisorctl stop` sends): the mount goes away and the exit status is 0.

Everything lives in a temporary directory and is cleaned up, mount included, whatever
happens. Usage: python scripts/demo.py [--backend auto|s3fs|python] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from run_s3fs.devserver import S3Server, start_moto, stop_moto

BUCKET = "demo-bucket"
# Demo-only keys for the local server (it accepts any); shaped like AWS's (20/40 chars).
ACCESS_KEY = "AKIADEMODEMODEMO0001"
SECRET_KEY = "dEmOsEcReT/0123456789abcdefghijklmnopqrs"
EXISTING = {
    "README.txt": b"This bucket was filled by another tool, with no directory objects.\n",
    "reports/2024/q1.csv": b"month,revenue\njan,100\nfeb,120\nmar,130\n",
    "reports/2024/q2.csv": b"month,revenue\napr,140\nmay,150\njun,165\n",
    "photos/cat.txt": b"=^.^=\n",
}
MOUNT_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


class DemoFailed(Exception):
    """A step failed; the message says which and why."""


def step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def show(text: str, indent: str = "   ") -> None:
    print(textwrap.indent(text.rstrip("\n"), indent), flush=True)


def mount_type(path: Path) -> str | None:
    """The file system type mounted exactly at `path` (e.g. fuse.s3fs), or None."""
    target = str(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == target:
                return fields[2]
    return None


def is_mounted(path: Path) -> bool:
    return mount_type(path) is not None


def launcher() -> list[str]:
    """The real console script next to this interpreter if installed, else `python -m`."""
    script = Path(sys.executable).parent / "run-s3fs"
    return [str(script)] if script.exists() else [sys.executable, "-m", "run_s3fs"]


def fill_bucket(server: S3Server) -> None:
    s3 = server.client(ACCESS_KEY, SECRET_KEY)
    s3.create_bucket(Bucket=BUCKET)
    for key, body in EXISTING.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    show("objects in s3://" + BUCKET + " (note: no 'reports/' or 'photos/' objects):")
    show("\n".join(keys), "     ")


def remove_guard(mountpoint: Path) -> None:
    """Take away the guard the launcher left on the mount point, so the directory can go."""
    if not mountpoint.is_dir():
        return
    try:
        from run_s3fs import guard
    except ImportError:  # a launcher without guards left nothing to remove
        return
    try:
        guard.remove(mountpoint)
    except Exception as e:  # cleanup must go on; say what is left behind
        print(f"could not remove the guard on {mountpoint}: {e}", file=sys.stderr)


def tree(root: Path) -> str:
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth:
            lines.append("  " * (depth - 1) + Path(dirpath).name + "/")
        for name in sorted(filenames):
            size = (Path(dirpath) / name).stat().st_size
            lines.append("  " * depth + f"{name}  ({size} bytes)")
    return "\n".join(lines)


def run_demo(backend: str, work: Path) -> None:
    mountpoint = work / "mnt"
    # Only the demo's own settings: S3FS_* or AWS_* variables in the caller's shell
    # would change what the demo shows.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("S3FS_", "AWS_"))}
    env = {
        **inherited,
        "S3FS_BUCKET": BUCKET,
        "S3FS_MOUNTPOINT": str(mountpoint),
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_PASSWD_FILE": str(work / "passwd-s3fs"),
        "S3FS_BACKEND": backend,
    }
    server: S3Server | None = None
    daemon: subprocess.Popen[bytes] | None = None
    log = work / "run-s3fs.log"
    try:
        step(1, "start a local S3 server and fill a bucket")
        server = start_moto(work)
        env["S3FS_URL"] = server.url
        show(f"S3 server (moto) at {server.url}")
        fill_bucket(server)

        step(2, "run-s3fs --check")
        show("S3FS_BUCKET, S3FS_MOUNTPOINT, S3FS_ACCESSKEY, S3FS_SECRETKEY, S3FS_URL, ... set")
        check = subprocess.run(
            [*launcher(), "--check"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        show(check.stdout + check.stderr)
        if check.returncode != 0:
            raise DemoFailed(f"run-s3fs --check exited {check.returncode}: see above")

        step(3, "start run-s3fs the way supervisord does (a child process, env only)")
        show(f"$ {' '.join(launcher())}      (log: {log})")
        with open(log, "wb") as out:
            daemon = subprocess.Popen(
                launcher(), env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mountpoint):
            if daemon.poll() is not None:
                raise DemoFailed(
                    f"run-s3fs exited with status {daemon.returncode} before mounting:\n"
                    + log.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                raise DemoFailed(f"no mount at {mountpoint} after {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.1)
        fstype = mount_type(mountpoint)
        comm = Path(f"/proc/{daemon.pid}/comm").read_text().strip()
        show(f"mounted {mountpoint} ({fstype}); the daemon is pid {daemon.pid} ({comm}):")
        show("run-s3fs replaced itself with the backend, so supervisord watches the daemon")

        step(4, "list and read through the mount")
        show(f"$ find {mountpoint}   (the prefixes appear as directories)")
        show(tree(mountpoint))
        for d in ("reports", "reports/2024", "photos"):
            if not (mountpoint / d).is_dir():
                raise DemoFailed(f"{d}/ does not show as a directory in the mount")
        csv = (mountpoint / "reports/2024/q1.csv").read_bytes()
        if csv != EXISTING["reports/2024/q1.csv"]:
            raise DemoFailed("reports/2024/q1.csv read through the mount differs from the object")
        show("$ cat reports/2024/q1.csv")
        show(csv.decode())

        step(5, "write through the mount, look at the object through the S3 API")
        note = mountpoint / "reports" / "notes.txt"
        note.write_text("written through the mount\n")
        os.chmod(note, 0o640)
        show(f"$ echo 'written through the mount' > {note}; chmod 640 {note.name}")
        assert server is not None
        s3 = server.client(ACCESS_KEY, SECRET_KEY)
        deadline = time.monotonic() + 10
        while True:
            try:
                head = s3.head_object(Bucket=BUCKET, Key="reports/notes.txt")
                body = s3.get_object(Bucket=BUCKET, Key="reports/notes.txt")["Body"].read()
                break
            except s3.exceptions.ClientError:
                if time.monotonic() > deadline:
                    raise DemoFailed("reports/notes.txt never reached the bucket") from None
                time.sleep(0.2)
        show(f"s3://{BUCKET}/reports/notes.txt: {len(body)} bytes, {head.get('ContentType')}")
        for name, value in sorted(head.get("Metadata", {}).items()):
            extra = f"  (= {int(value, 0):o} octal)" if name == "mode" else ""
            show(f"x-amz-meta-{name}: {value}{extra}", "     ")
        if body != b"written through the mount\n":
            raise DemoFailed("the object's content differs from what was written")

        step(6, "stop it the way supervisord does: SIGTERM")
        daemon.send_signal(signal.SIGTERM)
        try:
            status = daemon.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoFailed(
                f"run-s3fs did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM"
            ) from None
        still = is_mounted(mountpoint)
        show(f"exit status {status}; {'STILL MOUNTED' if still else 'unmounted'}")
        if status != 0 or still:
            raise DemoFailed("a SIGTERM must unmount and exit 0:\n" + log.read_text()[-2000:])
        daemon = None
        try:
            (mountpoint / "written-while-unmounted.txt").write_text("lost on the local disk\n")
            show("the empty mount point still takes files (no guard on it)")
        except OSError as e:
            show(f"the empty mount point refuses files now ({e.strerror}): nothing an app")
            show("writes while the mount is down can land on the local disk by mistake")
        print("\nDemo finished: everything worked.", flush=True)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if is_mounted(mountpoint):
            for tool in ("fusermount3", "fusermount", "umount"):
                flag = "-l" if tool == "umount" else "-uz"
                if (
                    shutil.which(tool)
                    and subprocess.run(
                        [tool, flag, str(mountpoint)], capture_output=True
                    ).returncode
                    == 0
                ):
                    break
        remove_guard(mountpoint)
        if server is not None:
            stop_moto(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "s3fs", "python"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="run-s3fs-demo-"))
    print(f"run-s3fs demo (backend {args.backend}), working in {work}")
    try:
        run_demo(args.backend, work)
        return 0
    except DemoFailed as e:
        print(f"\nDEMO FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
