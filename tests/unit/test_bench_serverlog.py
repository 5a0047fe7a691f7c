"""The benchmark's request counting from the S3 server's log (bench/bench_mount.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_mount import ServerLog

LINES = """\
127.0.0.1 - - [24/Nov/2026 08:39:19] "HEAD /bkt/ls/file-00001.txt HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "HEAD /bkt/ls/missing HTTP/1.1" 404 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "GET /bkt?list-type=2&prefix=ls/&delimiter=/ HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "GET /bkt/?list-type=2&prefix=c/ HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "GET /bkt/big/read.bin HTTP/1.1" 206 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "PUT /bkt/c/f1 HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "POST /bkt/w/x?uploads HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "PUT /bkt/w/x?partNumber=1&uploadId=abc HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "POST /bkt/w/x?uploadId=abc HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "POST /bkt?delete HTTP/1.1" 200 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "\x1b[33mHEAD /bkt/ls/gone HTTP/1.1\x1b[0m" 404 -
127.0.0.1 - - [24/Nov/2026 08:39:19] "\x1b[35m\x1b[1mGET /bkt/big/read.bin HTTP/1.1\x1b[0m" 206 -
a line that is not a request
"""


def test_counts_requests_by_kind_since_the_mark(tmp_path: Path) -> None:
    log_path = tmp_path / "moto.log"
    log_path.write_text('127.0.0.1 - - [x] "HEAD /bkt/before-the-mark HTTP/1.1" 200 -\n')
    log = ServerLog(log_path)
    mark = log.mark()
    with open(log_path, "a") as f:
        f.write(LINES)
    assert log.count(mark, "bkt") == {
        "HEAD": 3,  # one of them coloured (a 404), as werkzeug logs it
        "LIST": 2,
        "GET": 2,
        "PUT": 1,
        "MULTIPART": 3,
        "DELETE": 1,
    }
