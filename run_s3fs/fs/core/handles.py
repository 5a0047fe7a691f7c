"""Open files: reads from S3 (reader.py) until the file is written, then from its spool;
writes to the spool, uploaded at flush/fsync (close) with s3fs's metadata headers; a
large new file written front to back goes up in parts while it is written (stream.py).

No data loss: once a file has been written, its content lives in a private spool file
until an upload has succeeded. A failed upload is an error for the caller of
close()/fsync() (EIO), is logged, and is retried on the next flush, fsync, release, in
the background every `upload_retry_interval` (filesystem.py) and at unmount; if the
last attempt at unmount fails too, the content is saved in `unsaved/` beside the spool
directory and the log says where. From the first failed upload on, the spool also has
a name there (a hard link), so that even a `kill -9` of the daemon leaves that data on
disk; the name goes once an upload succeeds. Nothing else drops pending data but a
successful unlink (or a rename over the file): a failed one leaves it pending.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO

from run_s3fs.fs import layout
from run_s3fs.fs.core import spool as spools
from run_s3fs.fs.core.blocks import Budget, Disk
from run_s3fs.fs.core.caches import in_tree
from run_s3fs.fs.core.reader import Reader
from run_s3fs.fs.core.stream import Stream
from run_s3fs.fs.engine import Body, Engine, Piece, S3Error
from run_s3fs.fs.layout import Attr

log = logging.getLogger("run_s3fs.fs.files")


class OpenFile:
    """One path's open state, shared by every handle on it within this mount. A file
    that holds no changes is one version of the object: an open after another client
    replaced it gets an OpenFile of its own (filesystem.open), and the old one's handles
    read on in their version until it is gone (ESTALE, never a mix)."""

    def __init__(
        self,
        engine: Engine,
        budget: Budget,
        disk: Disk,
        spool_dir: str,
        path: str,
        key: str,
        attr: Attr,
        new: bool = False,
    ) -> None:
        self.engine = engine
        self.budget = budget
        self.disk = disk
        self.spool_dir = spool_dir
        self.path = path
        self.key = key
        self.attr = attr
        self.refs = 0
        # Handles that read through the kernel's pages of the path's inode, and the older
        # versions of this path that still do (both kept by OpenFiles, under its lock).
        self.cached_refs = 0
        self.older: list[OpenFile] = []
        # `lock` orders the changes to the file and is held over their S3 work (the
        # download a first write makes, an upload); `view` guards only what a read looks
        # at (which spool or reader, renewals, delivered, pages) and is never held over a
        # request, so reads and opens go on from what is here while that work runs.
        self.lock = threading.RLock()
        self.view = threading.Lock()
        self.spool: BinaryIO | None = None
        self.dirty = new  # a created file must reach S3 even if nothing is written
        self.unlinked = False
        self.times_set = False  # utimens while dirty: keep those times at upload
        self.kept: str | None = None  # the spool's name in unsaved/ while uploads fail
        self._reader: Reader | None = None
        self.delivered = False  # some read returned bytes of this version
        self.renewals = 0  # how many times reads went on with a newer version (read)
        # What the opens told the kernel to do with its pages of the file: "dropped"
        # while every open dropped them or read around them (then it holds none of
        # another version, and a first read may go on with a new one); "kept" once one
        # kept them (its reader may have read pages we never delivered), for good.
        self.pages = "unknown"
        # The spool holds what was written from nothing (a new or emptied file), so it
        # may be streamed up from its first byte while written; `stream` is that upload.
        self.streamable = new
        self.stream: Stream | None = None
        if new:
            self.spool = spools.new_spool(spool_dir)

    # --- reading ----------------------------------------------------------------------

    def reader(self) -> Reader:
        """The reader of the object as this file knows it (its key, ETag and size): a
        new one once any of them changed (a rename, our own copy, an upload)."""
        r = self._reader
        a = self.attr
        if r is None or (r.key, r.etag, r.size) != (self.key, a.etag, a.size):
            if r is not None:
                r.close()
            # One file's read-ahead takes at most half of the mount's.
            window = min(64 * 1024 * 1024, self.budget.limit // 2)
            r = self._reader = Reader(
                self.engine, self.key, a.etag, a.size, self.budget, window, self.disk
            )
        return r

    def seed(self, data: bytes, etag: str) -> None:
        """The object's first bytes, fetched along with its headers at open: kept if
        they are of the version this file reads (the check is under the lock that
        renewal takes)."""
        with self.view:
            if self.spool is None and data and self.attr.etag == etag:
                self.reader().seed(data)

    def read(self, offset: int, size: int, current: Callable[[], Attr]) -> list[Piece]:
        """The bytes at [offset, offset+size). If the version this file was opened at
        was replaced before any of it was delivered, the read goes on with the object's
        `current()` version instead of failing (once, and only at the same size)."""
        renewals = self.renewals
        try:
            return self._read(offset, size, renewals)
        except OSError as e:
            if e.errno != errno.ESTALE or not self._renew(renewals, current):
                raise
        return self._read(offset, size, self.renewals)

    def _read(self, offset: int, size: int, renewals: int) -> list[Piece]:
        """A read of the version that `renewals` renewals made current."""
        with self.view:
            if self.spool is not None:
                data = os.pread(self.spool.fileno(), size, offset)
                return [Piece(Body.of(data), 0, len(data))]
            reader = self.reader()
        # Under no lock: the kernel's read-ahead comes as several reads at once, and they
        # overlap (a write meanwhile is not ordered with them anyway).
        pieces = reader.pieces(offset, size)
        with self.view:
            # Delivered here, under the lock that renewal takes: once a read went on with
            # a newer version, no bytes of an older one may follow.
            if self.renewals != renewals:
                raise OSError(errno.ESTALE, "the object was replaced while being read")
            self.delivered = True
        return pieces

    @property
    def holds_changes(self) -> bool:
        """Its content or attributes here are ahead of S3's (written, loaded to be
        written, metadata pending) or have no object any more (unlinked): then it, not
        S3, is the file's truth in this mount."""
        return self.spool is not None or self.dirty or self.unlinked

    @property
    def renewable(self) -> bool:
        """Nothing of this version was read (here or from the kernel's pages) or written:
        another version may take its place without anyone seeing both."""
        return not self.delivered and self.pages == "dropped" and self.spool is None

    def opened(self, keep_cache: bool) -> None:
        """A handle was opened that keeps the kernel's pages, or not (see pages)."""
        with self.view:
            if keep_cache:
                self.pages = "kept"
            elif self.pages == "unknown":
                self.pages = "dropped"

    def _renew(self, renewals: int, current: Callable[[], Attr]) -> bool:
        """Whether a read that found its version replaced may be read again: another
        read went on with a newer one meanwhile, or this one may (see renewable)."""
        with self.view:
            if self.renewals != renewals:
                return True
            if not self.renewable:
                return False
        attr = current()  # a request: not under the lock
        # Under both: a first write's download (under `lock`) must not end in a spool of
        # the version this renewal replaces.
        with self.lock, self.view:
            if self.renewals != renewals:
                return True
            # (Same size only: the kernel sized its reads by the old one.)
            if not self.renewable or attr.size != self.attr.size or attr.etag == self.attr.etag:
                return False  # delivered meanwhile, or not replaced after all
            self._drop_reader()
            self.attr = replace(self.attr, etag=attr.etag, mtime_ns=attr.mtime_ns)
            self.renewals += 1
            return True

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # --- writing ----------------------------------------------------------------------

    def load(self) -> BinaryIO:
        """The spool, holding the object's current content (fetched on first need)."""
        if self.spool is None:
            spool = spools.new_spool(self.spool_dir)
            try:
                if self.attr.size:
                    self.engine.download(self.key, spool.fileno(), self.attr.size, self.attr.etag)
                    got = os.fstat(spool.fileno()).st_size
                    if got != self.attr.size:
                        raise S3Error(
                            errno.EIO, f"GET {self.key}: {got} bytes, not {self.attr.size}"
                        )
            except BaseException:
                spool.close()
                raise
            with self.view:
                self.spool = spool
                self._drop_reader()
            self.streamable = self.attr.size == 0  # written from nothing, as a new file
        return self.spool

    def _touch(self) -> None:
        self.times_set = False
        self.dirty = True
        if self.stream is not None:
            return  # its times are the stream's, already in S3's metadata (stream.py)
        now = time.time_ns()
        self.attr = replace(self.attr, mtime_ns=now, ctime_ns=now)

    def write(self, data: bytes, offset: int) -> int:
        return self.write_from(offset, lambda fd, at: os.pwrite(fd, data, at))

    def write_from(self, offset: int, put: Callable[[int, int], int]) -> int:
        """A write whose bytes `put(spool fd, offset)` writes (returning how many)."""
        with self.lock:
            spool = self.load()
            if self.stream is not None and offset < self.stream.sent:
                self._abandon("a write into a part already sent")
            with self.view:  # a read sees all of a write or none of it
                done = put(spool.fileno(), offset)
            if done > 0:
                self.attr = replace(self.attr, size=max(self.attr.size, offset + done))
                self._touch()
                self._stream(spool)
            return done

    def truncate(self, length: int) -> None:
        with self.lock:
            if length == 0 and self.spool is None:
                spool = spools.new_spool(self.spool_dir)  # nothing to fetch: all goes
                with self.view:
                    self.spool = spool
                    self._drop_reader()
            spool = self.load()
            if self.stream is not None and length < self.stream.sent:
                self._abandon("truncated into a part already sent")
            with self.view:
                os.ftruncate(spool.fileno(), length)
            self.attr = replace(self.attr, size=length)
            if length == 0:
                self.streamable = True
            self._touch()

    def set_attr(self, attr: Attr, times_set: bool = False) -> None:
        """chmod/chown/utimens on a file with pending data: applied at upload."""
        with self.lock:
            self.attr = replace(attr, size=self.attr.size)
            self.times_set = self.times_set or times_set
            self.dirty = True
            if self.stream is not None and layout.object_meta(self.attr) != self.stream.meta:
                self._abandon("its metadata changed")

    # --- streaming (stream.py) --------------------------------------------------------

    def _stream(self, spool: BinaryIO) -> None:
        """Start the parts a write made whole; begin the stream once the file is large
        enough. Never fails the write: a stream that cannot go on is abandoned."""
        if self.stream is None:
            if not self.streamable or self.unlinked:
                return
            if self.attr.size < self.engine.stream_threshold():
                return
            self.streamable = False  # one try: a stream abandoned is not begun again
            try:
                meta = layout.object_meta(self.attr)
                ctype = layout.content_type_for(self.path)
                self.stream = Stream(self.engine, self.key, meta, ctype)
            except OSError as e:
                log.info("%s: no streamed upload (%s); the whole file goes at close", self.path, e)
                return
        try:
            if not self.stream.send_ready(spool.fileno(), self.attr.size):
                self._abandon("too many parts")
        except OSError as e:
            self._abandon(str(e))

    def _abandon(self, why: str) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.abandon(why)

    # --- uploading --------------------------------------------------------------------

    def flush(self) -> bool:
        """Upload pending data (and metadata). True if something was uploaded.
        Raises S3Error (EIO…) if the upload failed; the data stays pending."""
        with self.lock:
            if not self.dirty or self.unlinked:
                return False
            spool = self.load()
            spool.flush()
            size = os.fstat(spool.fileno()).st_size
            meta = layout.object_meta(self.attr)
            ctype = layout.content_type_for(self.path)
            started = time.monotonic()
            etag = self._finish_stream(spool, size, meta)
            try:
                if etag is None:
                    path = spools.spool_path(spool)
                    etag = self.engine.upload_file(self.key, path, size, meta, ctype)
            except OSError as e:
                log.error("upload of %s failed, data kept for retry: %s", self.path, e)
                self._keep_on_disk()
                raise S3Error(errno.EIO, str(e)) from None
            log.debug("uploaded %s (%d bytes, %.2fs)", self.path, size, time.monotonic() - started)
            self.attr = replace(self.attr, size=size, etag=etag)
            self.dirty = False
            self.streamable = size == 0  # e.g. a shell's `>`: flushed empty, then written
            self._drop_kept()
            return True

    def _finish_stream(self, spool: BinaryIO, size: int, meta: dict[str, str]) -> str | None:
        """The object's ETag if the stream made it; None if there was none or it failed
        (the whole spool is uploaded instead)."""
        stream, self.stream = self.stream, None
        if stream is None:
            return None
        if not stream.carries(self.key, meta):
            stream.abandon("renamed, or its metadata changed")
            return None
        try:
            return stream.finish(spool.fileno(), size)
        except OSError as e:
            log.warning("%s: streamed upload failed (%s); uploading the whole file", self.path, e)
            return None

    def superseded(self) -> None:
        """Unlinked, or renamed over: its pending content is no longer wanted."""
        with self.lock:
            self.unlinked = True
            self._abandon("unlinked")
            self._drop_kept()

    def _keep_on_disk(self) -> None:
        """A name in unsaved/ for the spool of a file whose upload failed: the writer was
        told EIO, and that data must outlive even a kill -9 of this process."""
        if self.kept is not None or self.spool is None:
            return
        target = spools.unsaved_name(self.spool_dir, self.key)
        try:
            spools.link(self.spool, target)
        except OSError as e:
            log.warning("%s: could not keep its pending data in %s: %s", self.path, target, e)
            return
        self.kept = target
        log.warning("%s: pending data also kept in %s until it is uploaded", self.path, target)

    def _drop_kept(self) -> None:
        if self.kept is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.kept)
            self.kept = None

    def close(self) -> None:
        with self.lock:
            self._abandon("closed")
            with self.view:
                if self.spool is not None:
                    self.spool.close()
                    self.spool = None
                self._drop_reader()

    def save_unsaved(self) -> str | None:
        """Last resort at unmount: pending content next to the spool dir; says where."""
        with self.lock:
            if self.spool is None:
                return None
            if self.kept is not None and os.path.exists(self.kept):
                return self.kept
            target = spools.unsaved_name(self.spool_dir, self.key)
            self.spool.seek(0)
            with open(target, "wb") as out:
                shutil.copyfileobj(self.spool, out)
            return target


class OpenFiles:
    """The table of open files: path → OpenFile, handle number → OpenFile.

    The kernel keeps one set of pages per inode, and a path that another client replaced
    keeps its inode here, so two versions of it may be open at once. Only one may read
    through those pages: a handle on a newer version opened while an older one still
    does is direct (it reads around the pages), or the older reader's pages would be
    read as the newer version's, a mix of the two."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: dict[str, OpenFile] = {}
        self.by_fh: dict[int, OpenFile] = {}
        self._direct: set[int] = set()
        self._next_fh = 1

    def get(self, path: str) -> OpenFile | None:
        with self.lock:
            return self.by_path.get(path)

    def handle(self, fh: int) -> OpenFile:
        with self.lock:
            f = self.by_fh.get(fh)
        if f is None:
            raise OSError(errno.EBADF, "bad file handle")
        return f

    def find(self, fh: int) -> OpenFile | None:
        with self.lock:
            return self.by_fh.get(fh)

    def open(
        self, path: str, make: Callable[[], OpenFile], replaces: OpenFile | None = None
    ) -> tuple[OpenFile, int]:
        """A new handle on the file open at `path`, made by `make` if there is none; if
        `replaces` is given, that older version of the path first loses its name (its
        handles live on)."""
        with self.lock:
            if replaces is not None:
                self._unname(path, replaces)
            f = self.by_path.get(path)
            if f is None:
                f = self.by_path[path] = make()
            if replaces is not None and replaces is not f:
                f.older += [replaces, *replaces.older]
            f.older = [o for o in f.older if o.cached_refs]
            fh = self._next_fh
            self._next_fh += 1
            self.by_fh[fh] = f
            f.refs += 1
            if f.older:
                self._direct.add(fh)
            else:
                f.cached_refs += 1
            return f, fh

    def is_direct(self, fh: int) -> bool:
        """Must handle `fh` read around the kernel's pages (see the class)?"""
        with self.lock:
            return fh in self._direct

    def drop_handle(self, fh: int) -> tuple[OpenFile, bool]:
        """Forget handle `fh`; returns (file, True if that was its last handle)."""
        with self.lock:
            f = self.by_fh.pop(fh)
            f.refs -= 1
            if fh in self._direct:
                self._direct.discard(fh)
            else:
                f.cached_refs -= 1
            return f, f.refs == 0

    def forget(self, f: OpenFile) -> None:
        with self.lock:
            if f.refs == 0 and self.by_path.get(f.path) is f:
                del self.by_path[f.path]

    def unname(self, path: str, f: OpenFile) -> None:
        """`f` no longer has the name `path` (unlinked, renamed over); its handles live on."""
        with self.lock:
            self._unname(path, f)

    def _unname(self, path: str, f: OpenFile) -> None:  # under self.lock
        if self.by_path.get(path) is f:
            del self.by_path[path]

    def rename(self, old: str, new: str, new_key: str) -> None:
        with self.lock:
            f = self.by_path.pop(old, None)
            if f is not None:
                f.path, f.key = new, new_key
                self.by_path[new] = f

    def under(self, path: str) -> list[OpenFile]:
        """The open files strictly below directory `path`."""
        with self.lock:
            return [f for p, f in self.by_path.items() if p != path and in_tree(p, path)]

    def all(self) -> list[OpenFile]:
        with self.lock:
            return list(self.by_path.values())
