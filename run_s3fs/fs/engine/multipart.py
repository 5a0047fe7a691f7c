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
from run_s3fs.fs.engine.futures import settle, then
from run_s3fs.fs.engine.sse import CustomerKey

if TYPE_CHECKING:
    from run_s3fs.fs.engine.crt import Answer, CrtEngine, Headers

log = logging.getLogger("run_s3fs.fs.engine")

MIB = 1024 * 1024
MIN_PART = 5 * MIB


class MultipartUpload:
    """Created when constructed: the request goes out then, and parts may be started at
    once; each is sent as soon as the upload id is in (a writer streaming a file goes on
    writing meanwhile, rather than waiting a round trip for it). A failed create fails
    every part. Nothing is visible under `key` until complete() returns. Thread-safe,
    but parts are numbered in the order they are started, so one writer at a time
    should start them."""

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
        self._created: Future[str] = Future()  # the upload id
        self._parts: list[Future[str]] = []
        self._gate = threading.Semaphore(engine.settings.parallel_count)
        self._lock = threading.Lock()
        self.closed = False
        engine._send(
            f"{what}: create",
            "POST",
            key,
            query="uploads",
            headers=headers,
            op="CreateMultipartUpload",
        ).add_done_callback(self._on_created)

    def _on_created(self, answer: Future[Answer]) -> None:
        try:
            upload_id = xml.find(bytes(answer.result().body), "UploadId")
            if not upload_id:
                raise S3Error(errno.EIO, f"{self.what}: the server gave no upload id")
        except BaseException as e:
            self._created.set_exception(e)
        else:
            self._created.set_result(upload_id)

    @property
    def upload_id(self) -> str:
        """Waits for the create; raises its failure."""
        return self._created.result()

    @property
    def parts(self) -> int:
        return len(self._parts)

    @property
    def failed(self) -> bool:
        """The create or a part already failed: the upload can only be aborted."""
        if self._created.done() and self._created.exception() is not None:
            return True
        with self._lock:
            return any(f.done() and f.exception() is not None for f in self._parts)

    def start(self, send: Callable[[str, int], Future[str]]) -> None:
        """Start the next part: `send(upload_id, number)` sends it (once the upload
        exists: maybe in a CRT thread, so it must not block) and gives its ETag. Waits
        while `parallel_count` parts are in flight."""
        self._gate.acquire()
        self._launch(send)

    def _launch(self, send: Callable[[str, int], Future[str]]) -> Future[str]:
        """With the gate taken (given back when the part is done, however it ends)."""
        try:
            with self._lock:
                n = len(self._parts) + 1
                future: Future[str] = Future()
                self._parts.append(future)
        except BaseException:
            self._gate.release()
            raise
        future.add_done_callback(lambda _f: self._gate.release())

        def go(created: Future[str]) -> None:
            try:
                sent = send(created.result(), n)
            except BaseException as e:
                future.set_exception(e)
                return
            sent.add_done_callback(lambda f: settle(future, f))

        self._created.add_done_callback(go)
        return future

    def send_file_part(self, fd: int, start: int, length: int) -> None:
        """The next part: `length` bytes of `fd` at `start`, read now, in the caller's
        thread. Waits while `parallel_count` parts are in flight and while the engine's
        upload buffer is full."""
        engine = self.engine
        budget = engine._upload_budget
        part_headers = self.sse_c.headers() if self.sse_c else []
        self._gate.acquire()
        try:
            budget.take(length)
            try:
                data = os.pread(fd, length, start)
                if len(data) != length:
                    raise S3Error(
                        errno.EIO, f"PUT {self.key}: the file changed size while uploading"
                    )
            except BaseException:
                budget.give(length)
                raise
        except BaseException:
            self._gate.release()
            raise

        def send(upload_id: str, n: int) -> Future[str]:
            sent = engine._send(
                f"upload part {n} of {self.key}",
                "PUT",
                self.key,
                query=f"partNumber={n}&uploadId={_q(upload_id)}",
                headers=part_headers,
                payload=data,
                op="UploadPart",
            )
            return then(sent, lambda answer: answer.headers.get("etag", ""))

        self._launch(send).add_done_callback(lambda _f: budget.give(length))

    def complete(self) -> str:
        """Wait for every part, then make the object; its ETag. On any failure the upload
        is aborted and the error raised."""
        try:
            for f in list(self._parts):
                f.exception()  # waits for every part, failed or not
            upload_id = self.upload_id
            etags = [f.result() for f in self._parts]
            if not etags:
                raise S3Error(errno.EIO, f"{self.what}: no part was sent")
            done = self.engine._send(
                f"{self.what}: complete",
                "POST",
                self.key,
                query=f"uploadId={_q(upload_id)}",
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
        if self._created.exception() is not None:
            return  # no upload was made
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
