#!/usr/bin/env python3
"""S3 engines compared: client CPU per request and throughput, on loopback servers.

    python3 bench/engines.py                       # moto and rclone serve s3
    python3 bench/engines.py --servers rclone --heads 2000 --size-mib 256

For each engine and server: `--heads` HEADs of small objects with many in flight (the
CPU the client spends per request is what bounds `ls -l`, `find`, stat and create on
a small machine), then one GET of a `--size-mib` object (MB/s and client CPU per GB).
CPU is the whole process's (time.process_time: every thread, the CRT's C threads
included), so it is the client's cost alone only because the server is another process.

Engines:
- botocore: boto3's client, 16 threads, one connection each (what the backend used
  before awscrt). The GET is one stream, as botocore gives it.
- awscrt: the AWS Common Runtime S3 client (bench/crt_client.py), 64 requests in
  flight from one thread; the GET split into parallel 8 MiB ranged GETs by the CRT.
- awscrt-file: the same, but the GET's body written to a file by the CRT itself
  (recv_filepath): no Python callback per body chunk.
- http.client: the standard library with a hand-written SigV4 signer, keep-alive, 16
  threads (the lean pure-Python path). The GET is one stream.
- backend / backend-crt: the bundled backend's own engine (run_s3fs.fs.engine) as the
  file system uses it: head_async with 64 in flight, its HEADs on their own lane
  (engine/heads.py) or, for backend-crt, through the CRT; the GET is its read path's
  ranged GETs (download, 8 MiB parts).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from awscrt import s3  # noqa: E402
from bench_servers import SERVERS, start_server  # noqa: E402
from crt_client import CrtClient  # noqa: E402

ACCESS_KEY = "AKIABENCHBENCHBENCH1"
SECRET_KEY = "bEnChSeCrEt/0123456789abcdefghijklmnopq"
BUCKET = "run-s3fs-engines"
REGION = "us-east-1"
MIB = 1 << 20
THREADS = 16


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


# --- http.client + SigV4 --------------------------------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class LeanClient:
    """Path-style S3 requests over http.client, signed with SigV4 (UNSIGNED-PAYLOAD)."""

    def __init__(self, url: str) -> None:
        self.netloc = urlsplit(url).netloc
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.netloc, timeout=60)
        return conn

    def _headers(self, method: str, path: str) -> dict[str, str]:
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        headers = {
            "host": self.netloc,
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "x-amz-date": amz_date,
        }
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
             "UNSIGNED-PAYLOAD"]
        )  # fmt: skip
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _hmac(("AWS4" + SECRET_KEY).encode(), day)
        for part in (REGION, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature}"
        )
        return headers

    def request(self, method: str, key: str, sink: bytearray | None = None) -> int:
        path = f"/{BUCKET}/" + quote(key, safe="/-_.~")
        for attempt in range(2):  # a server may close an idle keep-alive connection
            conn = self._conn()
            try:
                conn.request(method, path, headers=self._headers(method, path))
                resp = conn.getresponse()
                if sink is None:
                    resp.read()
                else:
                    buf = bytearray(MIB)
                    while n := resp.readinto(buf):
                        sink[len(sink) :] = memoryview(buf)[:n]
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    self.local.conn = None
                return resp.status
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        return 0


# --- the runs -------------------------------------------------------------------------------


def run_engine(name: str, url: str, keys: list[str], big: str, size: int) -> dict[str, float]:
    if name == "botocore":
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=THREADS),
        )

        def heads() -> None:
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(lambda k: client.head_object(Bucket=BUCKET, Key=k), keys))

        def get() -> None:
            body = client.get_object(Bucket=BUCKET, Key=big)["Body"]
            got = 0
            while chunk := body.read(MIB):
                got += len(chunk)
            assert got == size

    elif name in ("awscrt", "awscrt-file"):
        crt = CrtClient(url, BUCKET, ACCESS_KEY, SECRET_KEY, connections=32)

        def heads() -> None:
            crt.many((lambda k=k: crt.head(k)) for k in keys)

        def get() -> None:
            if name == "awscrt":  # body chunks through a Python callback, as the backend
                crt.get_parallel(big, bytearray(size)).result()
                return
            with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:  # C writes the file
                crt.send(
                    "GET",
                    big,
                    kind=s3.S3RequestType.GET_OBJECT,
                    recv_filepath=f.name,
                    part_size=8 * MIB,
                ).result()
                assert os.path.getsize(f.name) == size

    elif name == "http.client":
        lean = LeanClient(url)

        def heads() -> None:
            with ThreadPoolExecutor(THREADS) as pool:
                statuses = list(pool.map(lambda k: lean.request("HEAD", k), keys))
            assert set(statuses) == {200}, set(statuses)

        def get() -> None:
            sink = bytearray()
            assert lean.request("GET", big, sink) == 200 and len(sink) == size

    elif name in ("backend", "backend-crt"):
        from run_s3fs.fs.credentials import Credentials
        from run_s3fs.fs.engine import EngineSettings, open_engine

        settings = EngineSettings(
            bucket=BUCKET, url=url, region=REGION, path_style=True, head_lane=name == "backend"
        )
        engine = open_engine(settings, Credentials(ACCESS_KEY, SECRET_KEY))

        def heads() -> None:
            room = threading.Semaphore(64)
            futures = []
            for k in keys:
                room.acquire()
                f = engine.head_async(k)
                f.add_done_callback(lambda _: room.release())
                futures.append(f)
            assert all(f.result() is not None for f in futures)

        def get() -> None:
            with tempfile.TemporaryFile(dir="/dev/shm") as f:
                engine.download(big, f.fileno(), size)
                assert os.fstat(f.fileno()).st_size == size

    else:
        raise ValueError(name)
    heads()  # warm: connections, imports, credential caches
    wall, cpu = measure(heads)
    gwall, gcpu = measure(get)
    return {
        "heads_per_s": len(keys) / wall,
        "cpu_ms_per_head": cpu * 1e3 / len(keys),
        "get_mbps": size / gwall / 1e6,
        "get_cpu_s_per_gb": gcpu / (size / 1e9),
    }


ENGINES = ("botocore", "awscrt", "awscrt-file", "http.client", "backend", "backend-crt")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--heads", type=int, default=1000)
    p.add_argument("--size-mib", type=int, default=256)
    args = p.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    if set(servers) - set(SERVERS) or set(engines) - set(ENGINES) or args.heads < 1:
        p.error(f"servers from {SERVERS}, engines from {ENGINES}, --heads ≥ 1")
    size = args.size_mib * MIB
    rows = []
    work = Path(tempfile.mkdtemp(prefix="run-s3fs-engines-"))
    try:
        for server_name in servers:
            server = start_server(server_name, work, work, ACCESS_KEY, SECRET_KEY)
            try:
                seed = CrtClient(server.url, BUCKET, ACCESS_KEY, SECRET_KEY, connections=64)
                seed.create_bucket().result()
                keys = [f"h/obj-{i:05d}" for i in range(args.heads)]
                seed.many((lambda k=k, c=seed: c.put(k, b"x" * 100)) for k in keys)
                seed.put_multipart("big.bin", os.urandom(size), part_size=16 * MIB)
                for engine in engines:
                    r = run_engine(engine, server.url, keys, "big.bin", size)
                    rows.append((server_name, engine, r))
                    print(
                        f"{server_name:7} {engine:12} {r['heads_per_s']:8.0f} HEAD/s "
                        f"{r['cpu_ms_per_head']:6.3f} ms CPU/HEAD  GET {r['get_mbps']:6.0f} MB/s "
                        f"{r['get_cpu_s_per_gb']:5.2f} s CPU/GB",
                        flush=True,
                    )
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{args.heads} HEADs, one GET of {args.size_mib} MiB; CPU = the client process's")
    print()
    print("| server | engine | HEAD/s | CPU per HEAD | GET MB/s | GET CPU per GB |")
    print("|---|---|--:|--:|--:|--:|")
    for server_name, engine, r in rows:
        print(
            f"| {server_name} | {engine} | {r['heads_per_s']:,.0f} | "
            f"{r['cpu_ms_per_head']:.3f} ms | {r['get_mbps']:,.0f} | "
            f"{r['get_cpu_s_per_gb']:.2f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
