"""One multipart upload, from CreateMultipartUpload to Complete or Abort.

Both ways a file reaches S3 in parts use it: `upload_file` at close, which cuts the
whole spool into parts, and a streamed upload (core/stream.py), which sends each part
while the writer is still writing the next. Parts may differ in size (S3 wants 5 MiB at
least for all but the last). At most `parallel_count` are in flight; a part's body is
read from a file descriptor in the caller's thread (pread drops the GIL; a read in a
CRT thread would stall its event loop) and counts against the engine's upload buffer
until the part is answered, which bounds the memory of every upload together.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from run_s3fs.endpoint import quote_query as _q
from run_s3fs.fs.engine import xml
from run_s3fs.fs.engine.errors import S3Error
from run_s3fs.fs.engine.sse import CustomerKey

if TYPE_CHECKING:
    from run_s3fs.fs.engine.crt import CrtEngine, Headers

log = logging.getLogger("run_s3fs.fs.engine")

MIB = 1024 * 1024
MIN_PART = 5 * MIB


class MultipartUpload:
    """Created when constructed (one request, in the caller's thread); nothing is
    visible under `key` until complete() returns. Thread-safe, but parts are numbered in
    the order they are started, so one writer at a time should start them."""

    def __init__(
        self,
        engine: CrtEngine,
        what: str,
        key: str,
        headers: Headers,
        sse_c: CustomerKey | None,
        part_size: int = MIN_PART,
    ) -> None:
        self.engine = engine
        self.part_size = part_size
        self.what = what
        self.key = key
        self.sse_c = sse_c
        created = engine._send(
            f"{what}: create",
            "POST",
            key,
            query="uploads",
            headers=headers,
            op="CreateMultipartUpload",
        ).result()
        upload_id = xml.find(bytes(created.body), "UploadId")
        if not upload_id:
            raise S3Error(errno.EIO, f"{what}: the server gave no upload id")
        self.upload_id = upload_id
        self._parts: list[Future[str]] = []
        self._gate = threading.Semaphore(engine.settings.parallel_count)
        self._lock = threading.Lock()
        self.closed = False

    @property
    def parts(self) -> int:
        return len(self._parts)

    @property
    def failed(self) -> bool:
        """A part already failed: the upload can only be aborted."""
        with self._lock:
            return any(f.done() and f.exception() is not None for f in self._parts)

    def start(self, send: Callable[[str, int], Future[str]]) -> None:
        """Start the next part: `send(upload_id, number)` sends it and gives its ETag.
        Waits while `parallel_count` parts are in flight."""
        self._gate.acquire()
        try:
            with self._lock:
                n = len(self._parts) + 1
                future = send(self.upload_id, n)
                self._parts.append(future)
        except BaseException:
            self._gate.release()
            raise
        future.add_done_callback(lambda _f: self._gate.release())

    def send_file_part(self, fd: int, start: int, length: int) -> None:
        """The next part: `length` bytes of `fd` at `start`. Waits while the engine's
        upload buffer is full."""
        engine = self.engine
        budget = engine._upload_budget
        part_headers = self.sse_c.headers() if self.sse_c else []

        def send(upload_id: str, n: int) -> Future[str]:
            budget.take(length)
            try:
                data = os.pread(fd, length, start)
                if len(data) != length:
                    raise S3Error(
                        errno.EIO, f"PUT {self.key}: the file changed size while uploading"
                    )
                sent = engine._send(
                    f"upload part {n} of {self.key}",
                    "PUT",
                    self.key,
                    query=f"partNumber={n}&uploadId={_q(upload_id)}",
                    headers=part_headers,
                    payload=data,
                    op="UploadPart",
                )
            except BaseException:
                budget.give(length)
                raise
            sent.add_done_callback(lambda _f: budget.give(length))
            out: Future[str] = Future()

            def done(f: Future) -> None:
                try:
                    out.set_result(f.result().headers.get("etag", ""))
                except BaseException as e:
                    out.set_exception(e)

            sent.add_done_callback(done)
            return out

        self.start(send)

    def complete(self) -> str:
        """Wait for every part, then make the object; its ETag. On any failure the upload
        is aborted and the error raised."""
        try:
            for f in list(self._parts):
                f.exception()  # waits for every part, failed or not
            etags = [f.result() for f in self._parts]
            if not etags:
                raise S3Error(errno.EIO, f"{self.what}: no part was sent")
            done = self.engine._send(
                f"{self.what}: complete",
                "POST",
                self.key,
                query=f"uploadId={_q(self.upload_id)}",
                headers=self.sse_c.headers() if self.sse_c else [],
                payload=xml.complete_multipart(list(enumerate(etags, 1))),
                op="CompleteMultipartUpload",
            ).result()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        self.engine._learn(self.key, self.sse_c.md5 if self.sse_c else "")
        return xml.find(bytes(done.body), "ETag")

    def abort(self) -> None:
        """Drop the upload and its parts, once every part started has finished (a part
        landing after the abort would stay, billed and invisible). Logs a failure."""
        if self.closed:
            return
        self.closed = True
        for f in list(self._parts):
            f.exception()
        try:
            self.engine._send(
                f"abort multipart upload {self.key}",
                "DELETE",
                self.key,
                query=f"uploadId={_q(self.upload_id)}",
                op="AbortMultipartUpload",
            ).result()
        except OSError as e:
            log.error("could not abort multipart upload of %s (parts may remain): %s", self.key, e)
