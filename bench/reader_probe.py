#!/usr/bin/env python3
"""How the read path sees a server: one sequential read through the backend's Reader
alone (no FUSE, no mount), with every GET it made and what the link estimated.

    python3 bench/reader_probe.py moto plain          # a 64 MiB object on moto
    python3 bench/reader_probe.py rclone s3like --size-mib 256 --gets
    python3 bench/reader_probe.py moto plain --busy always   # the few-large-GETs rule forced

Prints the read's throughput and its GETs' sizes; with --gets, each GET's time and how
many others were in flight when it was sent (a server that answers one GET at a time
makes a GET sent among k others take about k+1 times as long as one sent alone; on a
network it takes about as long). --busy forces Link.busy either way, to measure what the
rule is worth on a server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_servers import start_netem, start_server  # noqa: E402

from run_s3fs.fs.core.blocks import Budget  # noqa: E402
from run_s3fs.fs.core.reader import Reader  # noqa: E402
from run_s3fs.fs.credentials import Credentials  # noqa: E402
from run_s3fs.fs.engine import EngineSettings, open_engine  # noqa: E402
from run_s3fs.fs.engine.crt import Link  # noqa: E402

MIB = 1024 * 1024
ACCESS_KEY = "AKIAPROBEPROBEPROBE1"
SECRET_KEY = "pRoBeSeCrEt/0123456789abcdefghijklmnopq"
READ = MIB - 16384  # what the kernel asks for at a time where pipes hold 1 MiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("server", choices=["moto", "rclone"])
    p.add_argument("profile", choices=["plain", "s3like"])
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--busy", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--gets", action="store_true", help="print every GET")
    args = p.parse_args()
    if args.busy != "auto":
        Link.busy = property(lambda _self: args.busy == "always")  # type: ignore[method-assign]
    work = Path(tempfile.mkdtemp(prefix="reader-probe-"))
    server = start_server(args.server, work, work, ACCESS_KEY, SECRET_KEY)
    netem = start_netem(server.url, work, 20, 80) if args.profile == "s3like" else None
    url = netem.url if netem else server.url
    try:
        return probe(url, args.size_mib * MIB, args.gets)
    finally:
        if netem:
            netem.stop()
        server.stop()


def probe(url: str, size: int, every_get: bool) -> int:
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="probe")
    s3.put_object(Bucket="probe", Key="obj", Body=os.urandom(size))
    settings = EngineSettings(bucket="probe", url=url, region="us-east-1", path_style=True)
    engine = open_engine(settings, Credentials(ACCESS_KEY, SECRET_KEY))
    gets: list[tuple[int, int, float]] = []  # (others in flight at its send, bytes, seconds)
    sent: dict[int, tuple[int, float]] = {}
    watch, unwatch = engine.watch, engine.unwatch

    def watched(exchange):  # type: ignore[no-untyped-def]
        others = watch(exchange)
        sent[id(exchange)] = (others, time.monotonic())
        return others

    def unwatched(exchange):  # type: ignore[no-untyped-def]
        unwatch(exchange)
        others, at = sent.pop(id(exchange), (-1, 0.0))
        if others >= 0 and exchange.observe:
            gets.append((others, exchange.observe, time.monotonic() - at))

    engine.watch, engine.unwatch = watched, unwatched  # type: ignore[method-assign]
    try:
        # As in a mount: the kernel's lookup made a HEAD, and an open right after it
        # uses those attributes (no GET of the first bytes with the headers).
        head = engine.head("obj")
        assert head is not None
        reader = Reader(engine, "obj", head.etag, size, Budget(128 * MIB), 64 * MIB)
        began = time.monotonic()
        offset = 0
        while offset < size:
            offset += len(bytes(reader.read(offset, READ)))
        took = time.monotonic() - began
        reader.close()
        link = engine.link
        print(
            f"{size // MIB} MiB in {took:.2f} s ({size / took / 1e6:.0f} MB/s), {len(gets)} GETs;"
            f" link: wait {link.ttfb * 1000:.1f} ms, {link.rate / 1e6:.0f} MB/s a connection,"
            f" busy {link.busy}"
        )
        print("GET sizes (MiB):", " ".join(f"{n / MIB:g}" for _, n, _ in gets))
        if every_get:
            for others, n, seconds in gets:
                print(f"  {others:3d} others  {n / MIB:6.2f} MiB  {seconds * 1000:7.1f} ms")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
