"""Open files: sequential reads through one streaming GET, other reads through ranged GETs;
writes spooled to local disk and uploaded on flush/fsync (close), with s3fs's metadata
headers.

No data loss: once a file has been written, its content lives in a private spool file
until an upload has succeeded. A failed upload is an error for the caller of
close()/fsync() (EIO), is logged, and is retried on the next flush, fsync, release, in
the background every `upload_retry_interval` (ops.py) and at unmount; if the last attempt
at unmount fails too, the content is saved in `unsaved/` beside the spool directory and
the log says where. From the first failed upload on, the spool also has a name there (a
hard link), so that even a `kill -9` of the daemon leaves that data on disk; the name goes
once an upload succeeds. Nothing else drops pending data but a successful unlink (or a
rename over the file): a failed one leaves it pending.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import replace
from typing import BinaryIO

from run_s3fs.fs import layout
from run_s3fs.fs.layout import Attr
from run_s3fs.fs.s3 import S3, S3Error
from run_s3fs.fs.stream import Stream, StreamFailed

log = logging.getLogger("run_s3fs.fs.files")

MIB = 1024 * 1024
RANDOM_READ = 1 * MIB  # the least fetched for a read after a seek (and for small files)
# The kernel sends a stream's reads (read-ahead) from several threads: one that lands at
# most this far past the previous read's end still continues it.
SEQUENTIAL_SLACK = 8 * MIB


def make_spool_dir(base: str | None) -> str:
    """A private (0700) per-mount directory under `base` (default $TMPDIR)/run-s3fs-<uid>/."""
    root = os.path.join(base or tempfile.gettempdir(), f"run-s3fs-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise OSError(
            errno.EPERM, f"spool directory {root} must be a directory owned by us, mode 0700"
        )
    _sweep_dead_spools(root)
    return tempfile.mkdtemp(prefix=f"mount-{os.getpid()}-", dir=root)


def _sweep_dead_spools(root: str) -> None:
    """Remove the (empty: spools have no names) directories of mounts whose process is
    gone, so that killed mounts do not pile them up."""
    for entry in os.listdir(root):
        parts = entry.split("-")
        if len(parts) < 3 or parts[0] != "mount" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # alive (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, entry))  # only if empty


def unsaved_dir(spool_dir: str) -> str:
    """Where data that could not be uploaded is kept: unsaved/ beside the spool directory."""
    return os.path.join(os.path.dirname(spool_dir), "unsaved")


def unsaved_files(spool_dir: str) -> list[str]:
    """What earlier runs could not upload."""
    target_dir = unsaved_dir(spool_dir)
    try:
        return sorted(os.path.join(target_dir, n) for n in os.listdir(target_dir))
    except FileNotFoundError:
        return []


class OpenFile:
    """One path's open state, shared by every handle on it within this mount."""

    def __init__(
        self, s3: S3, spool_dir: str, path: str, key: str, attr: Attr, new: bool = False
    ) -> None:
        self.s3 = s3
        self.spool_dir = spool_dir
        self.path = path
        self.key = key
        self.attr = attr
        self.refs = 0
        self.lock = threading.RLock()
        self.spool: BinaryIO | None = None
        self.dirty = new  # a created file must reach S3 even if nothing is written
        self.unlinked = False
        self.times_set = False  # utimens while dirty: keep those times at upload
        self.kept: str | None = None  # the spool's name in unsaved/ while uploads fail
        self._stream: Stream | None = None  # the sequential reader's GET
        self._last_end = 0  # where the previous read ended
        self._random: tuple[int, bytes] = (0, b"")  # the last seek's data
        if new:
            self.spool = self._new_spool()

    # --- reading ----------------------------------------------------------------------

    def seed(self, data: bytes) -> None:
        """The object's first bytes, fetched along with its headers at open."""
        with self.lock:
            if self.spool is None and data:
                self._random = (0, data)

    def read(self, offset: int, size: int) -> bytes:
        with self.lock:
            if self.spool is not None:
                return os.pread(self.spool.fileno(), size, offset)
            end = min(offset + size, self.attr.size)
            if offset >= end:
                return b""
            return self._read_remote(offset, end)

    def _read_remote(self, offset: int, end: int) -> bytes:
        """Bytes [offset, end) of the object.

        A read that continues the previous one (or starts the file), give or take the
        kernel's reordering, is sequential: it and the reads after it come from one
        streaming GET (see stream.py), started where the previous read ended. Other reads
        are one ranged GET each, a little larger than asked, since the kernel splits
        one read(2) into several requests and the rest of them will follow. Reads from
        behind a stream (the kernel's requests arrive slightly out of order) leave it
        alone; a jump ahead of it drops it.
        """
        start, buffered = self._random
        stream = self._stream
        if start <= offset and end <= start + len(buffered):
            data = buffered[offset - start : end - start]
        elif stream is not None and stream.covers(offset):
            data = self._from_stream(stream, offset, end)
        elif (
            self._last_end <= offset <= self._last_end + SEQUENTIAL_SLACK
            and self.attr.size - self._last_end > RANDOM_READ
        ):
            self._drop_stream()
            at = self._last_end
            body = self.s3.get_stream(self.key, at, self.attr.etag)
            self._stream = Stream(body, at, self.attr.size, f"GET {self.key} [{at}-]")
            data = self._from_stream(self._stream, offset, end)
        else:
            if stream is not None and offset > stream.fetched:
                self._drop_stream()
            length = min(max(end - offset, RANDOM_READ), self.attr.size - offset)
            self._random = (offset, self.s3.get_range(self.key, offset, length, self.attr.etag))
            data = self._random[1][: end - offset]
        self._last_end = end
        return data

    def _from_stream(self, stream: Stream, offset: int, end: int) -> bytes:
        try:
            return stream.read(offset, end)
        except StreamFailed as e:
            # A ranged GET (with its retries) for this read; the next one starts anew.
            log.info("%s: reading on with ranged GETs: %s", self.path, e)
            self._drop_stream()
            return self.s3.get_range(self.key, offset, end - offset, self.attr.etag)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _drop_readahead(self) -> None:
        self._drop_stream()
        self._random = (0, b"")

    # --- writing ----------------------------------------------------------------------

    def _new_spool(self) -> BinaryIO:
        # Nameless (O_TMPFILE): private, and nothing is left behind if the process dies.
        # Without O_EXCL (which TemporaryFile sets), so that a failed upload's data can
        # be given a name later (_keep_on_disk).
        try:
            fd = os.open(self.spool_dir, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError:  # a filesystem without O_TMPFILE: unlinked at once instead
            return tempfile.TemporaryFile(dir=self.spool_dir)
        return os.fdopen(fd, "w+b")

    def load(self) -> BinaryIO:
        """The spool, holding the object's current content (fetched on first need)."""
        if self.spool is None:
            spool = self._new_spool()
            try:
                if self.attr.size:
                    self.s3.download(self.key, spool, self.attr.size, self.attr.etag)
                    spool.flush()
            except BaseException:
                spool.close()
                raise
            self.spool = spool
            self._drop_readahead()
        return self.spool

    def _touch(self) -> None:
        now = time.time_ns()
        self.attr = replace(self.attr, mtime_ns=now, ctime_ns=now)
        self.times_set = False
        self.dirty = True

    def write(self, data: bytes, offset: int) -> int:
        with self.lock:
            spool = self.load()
            os.pwrite(spool.fileno(), data, offset)
            self.attr = replace(self.attr, size=max(self.attr.size, offset + len(data)))
            self._touch()
            return len(data)

    def truncate(self, length: int) -> None:
        with self.lock:
            if length == 0 and self.spool is None:
                self.spool = self._new_spool()  # nothing to fetch: it is all going away
            spool = self.load()
            os.ftruncate(spool.fileno(), length)
            self.attr = replace(self.attr, size=length)
            self._touch()

    def set_attr(self, attr: Attr, times_set: bool = False) -> None:
        """chmod/chown/utimens on a file with pending data: applied at upload."""
        with self.lock:
            self.attr = replace(attr, size=self.attr.size)
            self.times_set = self.times_set or times_set
            self.dirty = True

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
            try:
                etag = self.s3.upload_file(self.key, spool_path(spool), size, meta, ctype)
            except OSError as e:
                log.error("upload of %s failed, data kept for retry: %s", self.path, e)
                self._keep_on_disk()
                raise S3Error(errno.EIO, str(e)) from None
            log.debug("uploaded %s (%d bytes, %.2fs)", self.path, size, time.monotonic() - started)
            self.attr = replace(self.attr, size=size, etag=etag)
            self.dirty = False
            self._drop_kept()
            return True

    def superseded(self) -> None:
        """Unlinked, or renamed over: its pending content is no longer wanted."""
        with self.lock:
            self.unlinked = True
            self._drop_kept()

    def _unsaved_path(self) -> tuple[str, str]:
        """(directory, name) for this file's content in unsaved/."""
        target_dir = unsaved_dir(self.spool_dir)
        os.makedirs(target_dir, mode=0o700, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{self.key.replace('/', '%2F')}"[:250]
        return target_dir, name

    def _keep_on_disk(self) -> None:
        """A name in unsaved/ for the spool of a file whose upload failed: the writer was
        told EIO, and that data must outlive even a kill -9 of this process. A hard link
        (the same inode, so later writes show there too)."""
        if self.kept is not None or self.spool is None:
            return
        target_dir, name = self._unsaved_path()
        target = os.path.join(target_dir, name)
        dir_fd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file; a
            # dir fd makes os.link use linkat (plain link(2) would not follow).
            os.link(spool_path(self.spool), name, dst_dir_fd=dir_fd, follow_symlinks=True)
        except OSError as e:
            log.warning("%s: could not keep its pending data in %s: %s", self.path, target, e)
            return
        finally:
            os.close(dir_fd)
        self.kept = target
        log.warning("%s: pending data also kept in %s until it is uploaded", self.path, target)

    def _drop_kept(self) -> None:
        if self.kept is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.kept)
            self.kept = None

    def close(self) -> None:
        with self.lock:
            if self.spool is not None:
                self.spool.close()
                self.spool = None
            self._drop_readahead()

    def save_unsaved(self) -> str | None:
        """Last resort at unmount: pending content next to the spool dir; says where."""
        with self.lock:
            if self.spool is None:
                return None
            if self.kept is not None and os.path.exists(self.kept):
                return self.kept
            target = os.path.join(*self._unsaved_path())
            self.spool.seek(0)
            with open(target, "wb") as out:
                shutil.copyfileobj(self.spool, out)
            return target


def spool_path(spool: BinaryIO) -> str:
    """A path that opens the (unlinked) spool file, for the uploader's own reads."""
    return f"/proc/self/fd/{spool.fileno()}"


class OpenFiles:
    """The table of open files: path → OpenFile, handle number → OpenFile."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: dict[str, OpenFile] = {}
        self.by_fh: dict[int, OpenFile] = {}
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

    def add_handle(self, f: OpenFile) -> int:
        """Register `f` (if new) under its path and return a new handle for it."""
        with self.lock:
            current = self.by_path.get(f.path)
            if current is not None and current is not f:
                raise RuntimeError("two OpenFile objects for one path")
            self.by_path[f.path] = f
            fh = self._next_fh
            self._next_fh += 1
            self.by_fh[fh] = f
            f.refs += 1
            return fh

    def drop_handle(self, fh: int) -> tuple[OpenFile, bool]:
        """Forget handle `fh`; returns (file, True if that was its last handle)."""
        with self.lock:
            f = self.by_fh.pop(fh)
            f.refs -= 1
            return f, f.refs == 0

    def forget(self, f: OpenFile) -> None:
        with self.lock:
            if f.refs == 0 and self.by_path.get(f.path) is f:
                del self.by_path[f.path]

    def rename(self, old: str, new: str, new_key: str) -> None:
        with self.lock:
            f = self.by_path.pop(old, None)
            if f is not None:
                f.path, f.key = new, new_key
                self.by_path[new] = f

    def under(self, path: str) -> list[OpenFile]:
        below = path.rstrip("/") + "/"
        with self.lock:
            return [f for p, f in self.by_path.items() if p.startswith(below)]

    def all(self) -> list[OpenFile]:
        with self.lock:
            return list(self.by_path.values())
