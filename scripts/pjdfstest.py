"""Run the pjdfstest POSIX conformance suite (as s3fs-fuse's CI does) on a fresh mount.

Starts a local S3 server (moto), mounts an empty bucket with one backend (`python`: the
bundled one, from this checkout or from `--code DIR`, a tree holding `run_s3fs/`; `s3fs`:
the real binary), runs `prove -r` on the suite's tests inside the mount and prints the
assertion counts. Needs root (the suite switches users and makes device nodes) and a
built pjdfstest (https://github.com/pjd/pjdfstest: `autoreconf -ifs && ./configure &&
make pjdfstest`, with autoconf and automake installed).

Usage: python scripts/pjdfstest.py PJDFSTEST_DIR [--backend python|s3fs] [--code DIR]
           [--log FILE] [TEST_PATH...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from run_s3fs.devserver import start_moto, stop_moto

ACCESS, SECRET = "AKIATESTTESTTEST1234", "tEsTsEcReT/0123456789abcdefghijklmnopqrs"
SUMMARY = re.compile(r"tests/(\w+)/\d+\.t\s+\(Wstat: \d+ Tests: \d+ Failed: (\d+)\)")


def mount_argv(backend: str, bucket: str, mnt: Path, options: str) -> list[str]:
    if backend == "s3fs":
        return ["s3fs", bucket, str(mnt), "-f", "-o", options]
    return [sys.executable, "-m", "run_s3fs.fs", bucket, str(mnt), "-o", options]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pjdfstest", type=Path)
    parser.add_argument("--backend", choices=("python", "s3fs"), default="python")
    parser.add_argument("--code", type=Path, help="run the bundled backend from this tree")
    parser.add_argument("--log", type=Path, help="prove's output (default: in the work dir)")
    parser.add_argument("tests", nargs="*", type=Path)
    args = parser.parse_args()
    tests = [str(t.resolve()) for t in args.tests] or [str(args.pjdfstest.resolve() / "tests")]
    work = Path(tempfile.mkdtemp(prefix="pjdfstest-"))
    log = args.log or work / "prove.log"
    server = start_moto(work)
    mnt = work / "mnt"
    mnt.mkdir()
    passwd = work / "passwd"
    passwd.write_text(f"{ACCESS}:{SECRET}\n")
    passwd.chmod(0o600)
    bucket = f"pjd-{uuid.uuid4().hex[:8]}"
    server.client(ACCESS, SECRET).create_bucket(Bucket=bucket)
    options = f"passwd_file={passwd},url={server.url},use_path_request_style,allow_other"
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = str(args.code.resolve())
    with open(work / "backend.log", "wb") as out:
        proc = subprocess.Popen(
            mount_argv(args.backend, bucket, mnt, options), stdout=out, stderr=out, env=env
        )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"no mount; see {work / 'backend.log'}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        started = time.monotonic()
        with open(log, "w") as out:
            subprocess.run(["prove", "-r", *tests], cwd=mnt, stdout=out, stderr=subprocess.STDOUT)
        took = time.monotonic() - started
    finally:
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_moto(server)
    text = log.read_text()
    total = re.search(r"Tests=(\d+)", text)
    failed = Counter()
    for directory, count in SUMMARY.findall(text[text.find("Test Summary Report") :]):
        failed[directory] += int(count)
    ran = int(total.group(1)) if total else 0
    print(f"{args.backend}: {ran - sum(failed.values())} of {ran} assertions passed in {took:.0f}s")
    print("failed by test directory:", dict(sorted(failed.items())) or "none")
    print(f"prove's output: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
