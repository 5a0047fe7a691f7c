"""Run s3fs-fuse's own integration suite (test/integration-test-main.sh) on a mount of
either backend, against a local S3 server (moto), as s3fs-fuse's CI runs it against
S3Proxy.

Give it the `test/` directory of an s3fs-fuse checkout (tag v1.90 is the reference:
`git -C s3fs-fuse worktree add /tmp/s3fs-1.90 v1.90`). The suite runs in a copy of that
directory; its `start_s3fs` (integration-test-common.sh) execs `$S3FS`, which here is a
small wrapper (../src/s3fs, where it looks) that runs the chosen backend with the
suite's options. The suite also needs the `aws` CLI (`pip install awscli`, in a venv of
its own if you like: `--aws`), `setfattr` (apt `attr`) and, for its two Python scripts,
a `python2` (`--python2`; Debian 12 has none, pyenv builds one).

Usage: python scripts/s3fs_suite.py S3FS_TEST_DIR [--backend python|s3fs] [--flag sigv4]
           [--aws PATH_TO_aws] [--python2 PATH_TO_python2] [--log FILE]

Prints each test's result line and the totals; exit status 0 only if all passed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run_s3fs.devserver import start_moto, stop_moto

ACCESS, SECRET = "AKIATESTTESTTEST1234", "tEsTsEcReT/0123456789abcdefghijklmnopqrs"
BUCKET = "s3fs-integration-test"
# What integration-test-common.sh's start_s3fs runs (its s3proxy part left out).
DRIVER = """
set -o errexit -o pipefail
source integration-test-common.sh
source test-utils.sh
export CACHE_DIR=/tmp/s3fs-cache ENSURE_DISKFREE_SIZE=10
start_s3fs -o {flag}
set +o errexit
./integration-test-main.sh
status=$?
stop_s3fs
exit $status
"""


def wrapper(backend: str, python: str) -> str:
    command = "s3fs" if backend == "s3fs" else f"{shlex.quote(python)} -m run_s3fs.fs"
    return f'#!/bin/sh\nexec {command} "$@"\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("testdir", type=Path)
    parser.add_argument("--backend", choices=("python", "s3fs"), default="python")
    parser.add_argument(
        "--flag", default="sigv4", help="the -o that small-integration-test.sh varies"
    )
    parser.add_argument("--aws", help="the aws CLI to use (default: the one on PATH)")
    parser.add_argument("--python2", help="the python2 to use (default: the one on PATH)")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3fs-suite-"))
    tests = work / "test"
    shutil.copytree(args.testdir, tests)
    server = start_moto(work)
    server.client(ACCESS, SECRET).create_bucket(Bucket=BUCKET)
    (tests / "passwd-s3fs").write_text(f"{ACCESS}:{SECRET}\n")
    # integration-test-common.sh sets S3FS=../src/s3fs itself.
    (work / "src").mkdir()
    s3fs = work / "src" / "s3fs"
    s3fs.write_text(wrapper(args.backend, sys.executable))
    s3fs.chmod(0o755)
    bindir = work / "bin"
    bindir.mkdir()
    if args.aws:
        (bindir / "aws").symlink_to(Path(args.aws).resolve())
    if args.python2:
        (bindir / "python2").symlink_to(Path(args.python2).resolve())
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "S3_URL": server.url,
        "S3_ENDPOINT": "us-east-1",
        "TEST_BUCKET_1": BUCKET,
        "S3FS_CREDENTIALS_FILE": "passwd-s3fs",
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "DBGLEVEL": "warn",
    }
    log = args.log or work / "suite.log"
    try:
        with open(log, "w") as out:
            result = subprocess.run(
                ["bash", "-c", DRIVER.format(flag=args.flag)],
                cwd=tests,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=3600,
            )
    finally:
        mountpoint = str(tests / BUCKET)
        if any(
            line.split()[1] == mountpoint for line in Path("/proc/mounts").read_text().splitlines()
        ):
            subprocess.run(["fusermount3", "-uz", mountpoint], check=False)
        stop_moto(server)
    text = log.read_text(errors="replace")
    for line in re.findall(r"(?m)^FAIL: .*$", text):
        print(line)
    summary = re.search(r"(?m)^SUMMARY for .*$", text)
    print(summary.group(0) if summary else "no summary: the suite did not run to its end")
    print(f"{args.backend}: exit {result.returncode}; log: {log}")
    # The suite's exit status alone is not trusted: the EXIT traps it installs run last.
    passed = summary is not None and " 0 tests failed." in summary.group(0)
    return 0 if result.returncode == 0 and passed else 1


if __name__ == "__main__":
    sys.exit(main())
