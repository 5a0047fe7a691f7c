"""A new file's upload while it is still being written.

Written front to back, a file of `multipart_threshold` or more starts a multipart upload
and sends each part as soon as the writer is a part past it, so by close() most of it is
in S3 and only the tail and the Complete remain (the whole upload at close would start
only then). The spool stays the truth: nothing here changes what flush() promises.
Anything the stream cannot carry (a write or truncate into a part already sent, new
metadata, a rename, a failed part) abandons it; the upload at flush is then the whole
spool's, as without a stream.

The object's metadata is fixed when the upload is created, so its mtime is the time the
stream began: while it runs, the file's mtime and ctime stay there, here as in S3, and
no stat shows a time the object does not carry.
"""

from __future__ import annotations

import logging

from run_s3fs.fs.engine import MAX_PARTS, Engine, Upload

log = logging.getLogger("run_s3fs.fs.files")


class Stream:
    """One file's streamed upload; its OpenFile's lock is held around every call."""

    def __init__(self, engine: Engine, key: str, meta: dict[str, str], ctype: str) -> None:
        self.key = key
        self.meta = meta
        self.upload: Upload = engine.begin_upload(key, meta, ctype)
        self.sent = 0  # bytes [0, sent) are in parts started

    def carries(self, key: str, meta: dict[str, str]) -> bool:
        """Can this upload still become the file (`key`, with `meta`)?"""
        return key == self.key and meta == self.meta and not self.upload.failed

    def send_ready(self, fd: int, size: int) -> bool:
        """Start the parts that lie whole below `size` (waits while enough are in flight).
        False once the upload has no room for them (S3 takes 10,000 parts): the tail is
        always less than a part, so the last one left is kept for it."""
        part = self.upload.part_size
        while size - self.sent >= part and not self.upload.failed:
            if self.upload.parts >= MAX_PARTS - 1:
                return False
            self.upload.send_file_part(fd, self.sent, part)
            self.sent += part
        return True

    def finish(self, fd: int, size: int) -> str:
        """The rest of the file's `size` bytes, then the object: its ETag. Raises (the
        upload aborted) on any failure."""
        try:
            while self.sent < size and not self.upload.failed:
                length = min(self.upload.part_size, size - self.sent)
                self.upload.send_file_part(fd, self.sent, length)
                self.sent += length
        except BaseException:
            self.upload.abort()
            raise
        return self.upload.complete()

    def abandon(self, why: str) -> None:
        log.debug("%s: streamed upload abandoned (%s); the whole file goes at close", self.key, why)
        self.upload.abort()
