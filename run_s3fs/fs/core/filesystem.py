"""The filesystem's operations in plain terms: FUSE paths (`/a/b`), integers, bytes;
failures are OSErrors with an errno. The FUSE adapter maps each callback onto one of
these; the tests call them directly, without a mount.

What lives where: the namespace answers what a path is (namespace.py); open files hold
content being read or written (handles.py); renames are in rename.py. This module lays
the open files over the namespace (a file open here is what its handle says, whatever
S3 holds), and edits metadata.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from run_s3fs.fs import layout
from run_s3fs.fs.core.blocks import Budget, Disk
from run_s3fs.fs.core.caches import Bounded
from run_s3fs.fs.core.handles import OpenFile, OpenFiles
from run_s3fs.fs.core.namespace import DirEntry, Namespace
from run_s3fs.fs.core.rename import Renamer
from run_s3fs.fs.engine import Engine, Piece, joined
from run_s3fs.fs.layout import Attr, Overrides

log = logging.getLogger("run_s3fs.fs.ops")

OPEN_READ = 1024 * 1024  # fetched with the headers when a file is opened for reading
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# The name libfuse's high-level API gives a file unlinked (or renamed over) while open:
# it renames it there instead, then unlinks that name at the last close.
HIDDEN_NAME = re.compile(r"\.fuse_hidden[0-9a-f]{16}")


def error(number: int, text: str = "") -> OSError:
    return OSError(number, text or os.strerror(number))


@dataclass(frozen=True)
class FsSettings:
    spool_dir: str
    root_attr: Attr
    overrides: Overrides = field(default_factory=Overrides)
    read_only: bool = False
    kernel_timeout: float = 1.0  # how long the kernel may keep attributes and entries
    retry_interval: float = 30.0  # background retries of failed uploads
    readahead_bytes: int = 128 * 1024 * 1024  # read blocks held by all readers at once
    read_cache_bytes: int = 1024 * 1024 * 1024  # regions on disk of files read all over
    read_cache_min_free: int | None = None  # what they leave free there (None: Disk's rule)
    max_seen_etags: int = 100_000


class Opened(NamedTuple):
    """An open handle, and how the kernel may use its pages of the file: keep those it
    has (only if they are of the version opened), or read around them (direct_io: an
    older version open here still reads through them, handles.OpenFiles)."""

    fh: int
    keep_cache: bool
    direct_io: bool


def _edited(
    extra: tuple[tuple[str, str], ...], edit: Callable[[dict[str, str]], None] | None
) -> tuple[tuple[str, str], ...]:
    if edit is None:
        return extra
    headers = dict(extra)
    edit(headers)
    return tuple(sorted(headers.items()))


def _replaced(held: Attr, current: Attr) -> bool:
    """Is `current` another version of the object than `held`? (A copy made here to edit
    metadata leaves an empty ETag in the caches: not a sign of another version.)"""
    if held.size != current.size:
        return True
    return bool(held.etag and current.etag and held.etag != current.etag)


class Filesystem:
    def __init__(self, engine: Engine, namespace: Namespace, settings: FsSettings) -> None:
        self.engine = engine
        self.ns = namespace
        self.settings = settings
        self.root_attr = settings.root_attr
        self.files = OpenFiles()
        self.budget = Budget(settings.readahead_bytes)
        self.disk = Disk(
            settings.spool_dir,
            Budget(settings.read_cache_bytes),
            min_free=settings.read_cache_min_free,
        )
        self.renamer = Renamer(engine, namespace, self.files, self.after_upload)
        # path → the ETag of the version the kernel's pages of it hold, if any (for
        # keep_cache). An open that makes the kernel drop its pages names its version
        # here only once the kernel has dropped them, which it does before that open
        # returns to its caller: at the handle's first read. Until then another open
        # must not keep the pages: it could read the old ones meanwhile.
        self._seen_etags: Bounded[str, str] = Bounded(settings.max_seen_etags)
        self._dropping: dict[int, str] = {}  # handle → the ETag its open names (above)
        self._lock = threading.Lock()
        # A directory marker's read-modify-write (set_meta, save_dir_times) is one step.
        self._marker_lock = threading.Lock()
        # Handles opened for writing: only their flush uploads and reports failures (a
        # reader's close must not fail because someone else's upload did).
        self._writers: set[int] = set()
        # Hidden names (HIDDEN_NAME) of unlinked open files: never in S3, so their
        # final unlink asks nothing of it.
        self._hidden: set[str] = set()
        self._stopping = threading.Event()
        self.failures = 0  # files that could not be uploaded at unmount

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._retry_pending, name="retry", daemon=True).start()

    def stop(self) -> None:
        """Unmount: upload every file still holding unsaved data."""
        self._stopping.set()
        self.failures = self.flush_all()
        self.save_dir_times()

    def flush_all(self) -> int:
        """Upload everything pending (retrying what failed before). Returns the failures."""
        failures = 0
        for f in self.files.all():
            if f.refs and f.dirty:
                # Its writer was cut off by the unmount: keep what it wrote, as a local
                # filesystem would.
                log.warning("%s was still open for writing; uploading what was written", f.path)
            try:
                f.flush()
            except OSError as e:
                failures += 1
                saved = None
                try:
                    saved = f.save_unsaved()
                except OSError as save_error:
                    log.error("could not save %s locally either: %s", f.path, save_error)
                log.error(
                    "UNSAVED: %s could not be uploaded (%s); its content is in %s",
                    f.path,
                    e,
                    saved or "nowhere (lost)",
                )
        return failures

    def _retry_pending(self) -> None:
        """Files whose upload failed after their last close are retried in the background
        (every `retry_interval` seconds), so they do not wait for an unmount; directory
        times changed here are stored on the same beat."""
        while not self._stopping.wait(self.settings.retry_interval):
            for f in self.files.all():
                if f.refs or not f.dirty or f.unlinked:
                    continue
                try:
                    if f.flush():
                        log.info("%s: pending upload done", f.path)
                        self.after_upload(f)
                except OSError:
                    continue  # logged by flush; tried again next round
                self._close_if_unused(f)
            self.save_dir_times()

    def save_dir_times(self) -> None:
        """Store the directory times this mount changed (entries added or removed) in the
        directories' markers: every `retry_interval` and at unmount, one HEAD and one
        copy per directory changed since, however many entries changed (a copy per
        change, as s3fs's update_parent_dir_stat makes, would double the requests of
        making many small files). A directory without a marker (implicit) or gone is
        left as it is; a failure is tried again next round."""
        for path, when in self.ns.unsaved_times().items():
            if path == "/":
                continue  # the mountpoint's times are the local directory's
            key = self.ns.dkey(path)
            # Under the lock a chmod/chown/utimens of a directory holds from its HEAD to its
            # copy: a rewrite of the marker from an older HEAD would undo theirs.
            with self._marker_lock:
                try:
                    current = self.engine.head(key)
                    if current is None:
                        continue
                    stored = self.ns.decode(current)
                    if when <= stored.mtime_ns and when <= stored.ctime_ns:
                        continue
                    mtime, ctime = max(when, stored.mtime_ns), max(when, stored.ctime_ns)
                    meta = layout.retimed_meta(current.metadata, mtime, ctime)
                    ctype = current.content_type or layout.DIR_CONTENT_TYPE
                    self.engine.copy(key, key, current.size, meta, ctype, current)
                except OSError as e:
                    log.warning("%s: could not store its new mtime yet: %s", path, e)
                    self.ns.unsaved_again(path)
                    continue
                self.ns.forget(path)

    def busy(self) -> bool:
        """True while some file is open with data not yet uploaded."""
        return any(f.refs and f.dirty and not f.unlinked for f in self.files.all())

    # --- attributes -------------------------------------------------------------------

    def lookup(self, path: str) -> Attr:
        """Attributes of `path` as stored (before mount overrides), a directory's times
        as this mount changed them; ENOENT, or ENAMETOOLONG for a name that cannot be."""
        if path == "/":
            attr = self.root_attr
        else:
            self._check_name(path)
            f = self.files.get(path)
            attr = f.attr if f is not None and f.holds_changes else self.ns.lookup(path)
        return self.ns.with_local_times(path, attr) if attr.is_dir else attr

    def _check_name(self, path: str, is_dir: bool = False) -> None:
        key = self.ns.dkey(path) if is_dir else self.ns.key(path)
        if layout.name_too_long(path, key):
            raise error(errno.ENAMETOOLONG)

    def shown(self, path: str | None, attr: Attr) -> Attr:
        """What stat shows: uid=, gid=, umask= applied (mp_umask, not umask, governs the
        mountpoint itself)."""
        return attr if path == "/" else self.settings.overrides.apply(attr)

    def getattr(self, path: str | None, fh: int | None = None) -> Attr:
        if fh:
            f = self.files.find(fh)
            if f is not None:
                return self.shown(f.path, replace(f.attr, nlink=0 if f.unlinked else 1))
        if path is None:
            raise error(errno.ESTALE)
        attr = self.lookup(path)
        if attr.is_dir:
            attr = replace(attr, nlink=self.ns.nlink(path))
        return self.shown(path, attr)

    def access(self, path: str, amode: int) -> None:
        self.lookup(path)  # default_permissions: the kernel checks the mode bits
        if amode & os.W_OK and self.settings.read_only:
            raise error(errno.EROFS)

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
            return True
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise

    def _check_writable(self) -> None:
        if self.settings.read_only:
            raise error(errno.EROFS)

    def set_meta(
        self,
        path: str,
        changes: dict[str, int],
        times_set: bool = False,
        edit: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """chmod/chown/utimens/setxattr: new headers via a metadata-replacing copy onto the
        same key; on a file with data not yet uploaded, applied at its upload (an open file
        whose data is in S3 is copied at once: its release may come much later). `edit`
        changes other headers than ours (the xattr one), in place; it may refuse by raising.
        """
        self._check_writable()
        if path == "/":
            return  # the mountpoint's attributes are the local directory's
        attr = self.lookup(path)
        if times_set and attr.is_dir:
            self.ns.times_set(path)
        changes.setdefault("ctime_ns", time.time_ns())
        new = replace(attr, **changes, extra=_edited(attr.extra, edit))
        held = self.files.get(path)
        if held is not None and held.unlinked:
            # fchmod/futimens of an unlinked open file: nothing in S3 to change.
            with held.lock:
                held.attr = replace(new, size=held.attr.size)
            return
        if held is not None:
            # Hold a handle while deciding, so the file cannot be closed under us.
            f, fh = self._open_file(path, held.attr, False)
            if f.dirty:
                f.set_attr(new, times_set)
                self.ns.forget(path)
                self._release(fh, report=True)  # uploads now if no one else has it open
                return
            self._release(fh)
        f = self.files.get(path)
        etag = ""  # the copy's: reads pinned to the old one would find it "replaced"
        # The object as it is now: its Content-Type and other tools' headers are kept.
        key = self.ns.dkey(path) if attr.is_dir else self.ns.key(path)
        with self._marker_lock if attr.is_dir else contextlib.nullcontext():
            current = self.engine.head(key)
            if current is not None:
                new = replace(new, extra=_edited(layout.foreign_meta(current.metadata), edit))
                ctype = current.content_type or (
                    layout.DIR_CONTENT_TYPE if attr.is_dir else layout.DEFAULT_CONTENT_TYPE
                )
                etag = self.engine.copy(
                    key, key, current.size, layout.object_meta(new), ctype, current
                )
            elif attr.is_dir:
                # An implicit directory gets a marker, so the new attributes have a home.
                self.engine.put(key, b"", layout.object_meta(new), layout.DIR_CONTENT_TYPE)
            else:
                raise error(errno.ENOENT)
            if f is not None:
                f.attr = replace(new, size=f.attr.size, etag=etag or f.attr.etag)
            self.ns.changed(path, exists=True, is_dir=attr.is_dir)
            self.ns.store(path, replace(new, etag=""))

    def chmod(self, path: str, mode: int) -> None:
        attr = self.lookup(path)
        self.set_meta(path, {"mode": stat.S_IFMT(attr.mode) | stat.S_IMODE(mode)})

    def chown(self, path: str, uid: int, gid: int) -> None:
        changes = {}
        if uid != -1:
            changes["uid"] = uid
        if gid != -1:
            changes["gid"] = gid
        if changes:
            self.set_meta(path, changes)

    def utimens(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        """New times (None: leave that one as it is)."""
        changes = {}
        if atime_ns is not None:
            changes["atime_ns"] = atime_ns
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
        if changes:
            self.set_meta(path, changes, times_set=True)

    # --- directories ------------------------------------------------------------------

    def opendir(self, path: str) -> None:
        if not self.lookup(path).is_dir:
            raise error(errno.ENOTDIR)

    def readdir(self, path: str) -> list[tuple[str, int]]:
        """(name, st_mode) of each entry, `.` and `..` first; a mode of 0 means "not
        known from the listing" (the caller stats it)."""
        entries = self.ns.read_dir(path)
        result = [(".", stat.S_IFDIR), ("..", stat.S_IFDIR)]
        for entry in self._with_local(path, entries).values():
            attr = self.ns.cached(posixpath.join(path, entry.name))
            if isinstance(attr, Attr):
                mode = attr.mode
            elif entry.is_dir:
                mode = stat.S_IFDIR
            else:
                # The listing cannot tell a symlink from a file; an empty object may be an
                # old-style directory object: "unknown" makes the caller stat it.
                mode = 0 if entry.empty else stat.S_IFREG
            result.append((entry.name, mode))
        return result

    def _with_local(self, path: str, entries: dict[str, DirEntry]) -> dict[str, DirEntry]:
        """Add files created here whose first upload has not happened yet."""
        local = [f for f in self.files.under(path) if posixpath.dirname(f.path) == path]
        if not local:
            return entries
        merged = dict(entries)
        for f in local:
            name = posixpath.basename(f.path)
            if not f.unlinked:
                merged.setdefault(name, DirEntry(name, False))
        return merged

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        self._check_writable()
        self._check_name(path, is_dir=True)
        if self.exists(path):
            raise error(errno.EEXIST)
        now = time.time_ns()
        full_mode = stat.S_IFDIR | stat.S_IMODE(mode)
        meta = layout.encode_meta(full_mode, uid, gid, now, now, now)
        self.engine.put(self.ns.dkey(path), b"", meta, layout.DIR_CONTENT_TYPE)
        self.ns.changed(path, exists=True, is_dir=True)
        self.ns.store(path, Attr(full_mode, 0, uid, gid, now, now, now))
        self.ns.created_dir(path)
        self.ns.entry_changed(path, now, subdirs=+1)

    def dir_is_empty(self, path: str) -> bool:
        if any(not f.unlinked for f in self.files.under(path)):
            return False
        return self.ns.dir_is_empty(path)

    def rmdir(self, path: str) -> None:
        self._check_writable()
        if path == "/":
            raise error(errno.EBUSY)
        attr = self.lookup(path)
        if not attr.is_dir:
            raise error(errno.ENOTDIR)
        if not self.dir_is_empty(path):
            raise error(errno.ENOTEMPTY)
        self.ns.delete_dir_objects(path)
        self.ns.changed_tree(path, exists=False)
        self.ns.store(path, None)
        self.ns.entry_changed(path, time.time_ns(), subdirs=-1)

    # --- files ------------------------------------------------------------------------

    def _open_file(
        self, path: str, attr: Attr, new: bool, replaces: OpenFile | None = None
    ) -> tuple[OpenFile, int]:
        def make() -> OpenFile:
            spool_dir = self.settings.spool_dir
            key = self.ns.key(path)
            return OpenFile(self.engine, self.budget, self.disk, spool_dir, path, key, attr, new)

        return self.files.open(path, make, replaces)

    def create(self, path: str, mode: int, flags: int, uid: int, gid: int) -> int:
        self._check_writable()
        self._check_name(path)
        now = time.time_ns()
        attr = Attr(stat.S_IFREG | stat.S_IMODE(mode), 0, uid, gid, now, now, now)
        existing = self.files.get(path)
        if existing is not None:  # O_CREAT on a file open here: open it (and truncate)
            f, fh = self._open_file(path, existing.attr, False)
            if flags & os.O_TRUNC:
                f.truncate(0)
        else:
            f, fh = self._open_file(path, attr, True)
            self.ns.entry_changed(path, now)
        self.ns.changed(path, exists=True)
        with self._lock:
            self._writers.add(fh)
        return fh

    def _current(self, path: str, flags: int) -> tuple[Attr, bytes]:
        """The object's attributes for an open (and its first bytes if they came along)."""
        first = b""
        # Close-to-open consistency: attributes at most as old as the kernel may keep
        # them, so a file another mount closed after writing is opened with its new
        # size and content.
        recent = self.ns.cached(path, max_age=self.settings.kernel_timeout)
        if isinstance(recent, Attr):
            attr = recent
        elif flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC:
            # One request for the fresh headers and the first MiB: for a small file,
            # all a reader will ask for.
            got = self.engine.get_start(self.ns.key(path), OPEN_READ)
            if got is not None and not layout.is_dir_object(
                got[0].key, got[0].content_type, got[0].size
            ):
                attr, first = self.ns.decode(got[0]), got[1]
                self.ns.store(path, attr)
            else:
                self.ns.forget(path)
                attr = self.lookup(path)
        else:
            self.ns.forget(path)
            attr = self.lookup(path)
        return attr, first

    def _written_here(self, f: OpenFile) -> bool:
        with self._lock:
            writers = list(self._writers)
        return any(self.files.find(fh) is f for fh in writers)

    def open(self, path: str, flags: int) -> Opened:
        """A new handle, and how the kernel may use its pages of the file (see Opened)."""
        if self.settings.read_only and flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            raise error(errno.EROFS)
        f = self.files.get(path)
        first = b""
        replaces = None
        if f is not None and (f.holds_changes or self._written_here(f)):
            attr = f.attr  # this mount's version is ahead of S3's
        else:
            attr, first = self._current(path, flags)
            if f is not None and _replaced(f.attr, attr):
                # Another client replaced the object since `f` was opened: this handle
                # reads the new version; f's handles read on in theirs. Joining f would
                # pin every open to the old version while any reader of it overlaps.
                replaces = f
        if attr.is_dir:
            raise error(errno.EISDIR)
        f, fh = self._open_file(path, attr, False, replaces)
        if first:
            f.seed(first, attr.etag)
        if flags & os.O_TRUNC and f.attr.size:
            f.truncate(0)
            self.ns.changed(path, exists=True)
        if flags & (os.O_WRONLY | os.O_RDWR):
            with self._lock:
                self._writers.add(fh)
        if self.files.is_direct(fh):
            # The kernel's pages are an older version's, still read: read around them,
            # and leave _seen_etags naming theirs.
            f.opened(keep_cache=False)
            return Opened(fh, keep_cache=False, direct_io=True)
        etag = f.attr.etag
        keep = bool(etag) and self._seen_etags.get(path) == etag
        f.opened(keep_cache=keep)
        if not keep and etag:
            with self._lock:
                self._dropping[fh] = etag
        return Opened(fh, keep_cache=keep, direct_io=False)

    def _dropped(self, fh: int, f: OpenFile) -> None:
        """Handle `fh`'s open has returned: the kernel holds no pages older than it."""
        with self._lock:
            etag = self._dropping.pop(fh, None)
        if etag is not None and etag == f.attr.etag:
            self._seen_etags.put(f.path, etag)

    def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        return joined(self.read_pieces(fh, offset, size))

    def read_pieces(self, fh: int, offset: int, size: int) -> list[Piece]:
        """read(), as pieces of the blocks that hold the bytes (no copy made here)."""
        f = self.files.handle(fh)
        if self._dropping:
            self._dropped(fh, f)

        def current() -> Attr:
            # Opened with attributes up to kernel_timeout old, or replaced between the
            # open and its first read: the new version may be read instead (f.read),
            # and the kernel's pages will be the new version's.
            self.ns.forget(f.path)
            self._seen_etags.pop(f.path)
            return self.ns.lookup(f.path)

        try:
            return f.read(offset, size, current)
        except OSError as e:
            if e.errno == errno.ESTALE:
                self.ns.forget(f.path)  # the next open asks S3 afresh
            raise

    def write(self, fh: int, data: bytes, offset: int) -> int:
        return self.write_from(fh, offset, lambda fd, at: os.pwrite(fd, data, at))

    def write_from(self, fh: int, offset: int, put: Callable[[int, int], int]) -> int:
        """A write whose bytes `put(fd, offset)` writes into the file's spool (the FUSE
        adapter's: libfuse moves them there itself); returns how many."""
        self._check_writable()
        f = self.files.handle(fh)
        n = f.write_from(offset, put)
        self.ns.forget(f.path)
        return n

    def truncate(self, path: str, length: int) -> None:
        self._check_writable()
        attr = self.lookup(path)
        if attr.is_dir:
            raise error(errno.EISDIR)
        # Through a handle of its own, so a close racing with us cannot lose the change;
        # uploaded at its release unless another handle has the file open (then at that
        # handle's close, as for any write through it).
        f, fh = self._open_file(path, attr, False)
        try:
            f.truncate(length)
        finally:
            self._release(fh, report=True)
        self.ns.changed(path, exists=True)

    def flush(self, fh: int) -> None:
        with self._lock:
            if fh not in self._writers:
                return
        self._upload(fh)

    def fsync(self, fh: int) -> None:
        self._upload(fh)  # explicit: on any handle, as fsync on a local file

    def _upload(self, fh: int) -> None:
        f = self.files.handle(fh)
        if f.flush():
            self.after_upload(f)

    def after_upload(self, f: OpenFile) -> None:
        self.ns.changed(f.path, exists=True)
        self.ns.store(f.path, f.attr)  # what we uploaded: no HEAD needed to know it
        if f.attr.etag:
            self._seen_etags.put(f.path, f.attr.etag)

    def release(self, fh: int) -> None:
        self._release(fh)

    def _release(self, fh: int, report: bool = False) -> None:
        """Drop a handle; the last one uploads what is pending. A failure keeps the file
        pending (in the table, with its spool) for the next flush or unmount, and is
        raised only if `report` (FUSE's release has nobody to tell)."""
        with self._lock:
            self._writers.discard(fh)
            # Never read: whether its open returned to its caller (and the kernel dropped
            # the pages) is unknown (an interrupted open is released unseen).
            self._dropping.pop(fh, None)
        f, last = self.files.drop_handle(fh)
        if not last:
            return
        try:
            if f.flush():
                self.after_upload(f)
        except OSError as e:
            log.error("%s stays pending after its last close: %s", f.path, e)
            if report:
                raise
            return
        self._close_if_unused(f)

    def _close_if_unused(self, f: OpenFile) -> None:
        with f.lock:
            if f.refs == 0 and not f.dirty:
                f.close()
                self.files.forget(f)

    def unlink(self, path: str, keep_open_as: str | None = None) -> None:
        """Remove a file's object. If it is open here its descriptors keep it (POSIX),
        under `keep_open_as` (the hidden name libfuse gave it) if given."""
        self._check_writable()
        with self._lock:
            if path in self._hidden and self.files.get(path) is None:
                self._hidden.discard(path)  # libfuse's unlink of it at the last close
                return
        attr = self.lookup(path)
        if attr.is_dir:
            raise error(errno.EISDIR)
        f = self.files.get(path)
        if f is None:
            self.engine.delete(self.ns.key(path))
        else:
            # Open descriptors keep reading the data after the name is gone (POSIX). Its
            # pending data is dropped only once the object is gone: a failed DELETE leaves
            # the file as it was, upload still pending. Under its lock, so the background
            # retry cannot upload it again between the DELETE and the drop.
            with f.lock:
                f.load()
                self.engine.delete(self.ns.key(path))
                f.superseded()
            if keep_open_as is None:
                self.files.unname(path, f)
            else:
                self.files.rename(path, keep_open_as, self.ns.key(keep_open_as))
                with self._lock:
                    self._hidden.add(keep_open_as)
        self.ns.changed(path, exists=False)
        self.ns.store(path, None)
        self.ns.entry_changed(path, time.time_ns())
        self._seen_etags.pop(path)

    def _hides(self, old: str, new: str) -> bool:
        """Is this rename libfuse hiding an open file it was asked to unlink (or to
        rename another file over)? Then it is an unlink that keeps the file open here,
        under the new name: S3 never sees that name, nothing is copied."""
        return (
            HIDDEN_NAME.fullmatch(posixpath.basename(new)) is not None
            and posixpath.dirname(old) == posixpath.dirname(new)
            and self.files.get(old) is not None
        )

    # --- symlinks and other kinds -----------------------------------------------------

    def symlink(self, path: str, target: str, uid: int, gid: int) -> None:
        self._check_writable()
        self._check_name(path)
        body = target.encode("utf-8", "surrogateescape")
        if len(body) >= layout.PATH_MAX:
            raise error(errno.ENAMETOOLONG)  # as the kernel refuses such a target
        if self.exists(path):
            raise error(errno.EEXIST)
        now = time.time_ns()
        meta = layout.encode_meta(layout.SYMLINK_MODE, uid, gid, now, now, now)
        self.engine.put(self.ns.key(path), body, meta, layout.SYMLINK_CONTENT_TYPE)
        self.ns.changed(path, exists=True)
        self.ns.store(path, Attr(layout.SYMLINK_MODE, len(body), uid, gid, now, now, now))
        self.ns.entry_changed(path, now)

    def readlink(self, path: str) -> str:
        attr = self.lookup(path)
        if not attr.is_symlink:
            raise error(errno.EINVAL)
        data = self.engine.get_range(self.ns.key(path), 0, max(attr.size, 1) + 4096)
        return data.decode("utf-8", "surrogateescape")

    def link(self, target: str, source: str) -> None:
        log.warning("hard link %s → %s refused: S3 has no hard links", target, source)
        raise error(errno.ENOTSUP)  # s3fs's answer too

    def mknod(self, path: str, mode: int, dev: int, uid: int, gid: int) -> None:
        """A regular file, or a FIFO, socket or device as s3fs makes them: an empty object
        whose mode has the type (a device's number in x-amz-meta-rdev, which s3fs does
        not keep). Opening one never reaches us: the kernel serves FIFOs and sockets
        itself, and a device node would open the local device (a nodev mount refuses)."""
        kind = stat.S_IFMT(mode)
        if kind in (0, stat.S_IFREG):
            self._release(self.create(path, mode, 0, uid, gid))
            return
        if kind not in layout.SPECIAL_TYPES:
            raise error(errno.EINVAL)
        self._check_writable()
        self._check_name(path)
        if self.exists(path):
            raise error(errno.EEXIST)
        now = time.time_ns()
        rdev = dev if kind in layout.DEVICE_TYPES else 0
        full_mode = kind | stat.S_IMODE(mode)
        meta = layout.encode_meta(full_mode, uid, gid, now, now, now, rdev)
        self.engine.put(self.ns.key(path), b"", meta, layout.content_type_for(path))
        self.ns.changed(path, exists=True)
        self.ns.store(path, Attr(full_mode, 0, uid, gid, now, now, now, rdev=rdev))
        self.ns.entry_changed(path, now)

    # --- rename -----------------------------------------------------------------------

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self._check_writable()
        if flags & RENAME_EXCHANGE:
            raise error(errno.EINVAL)
        src = self.lookup(old)
        if old == new:
            return
        if not src.is_dir and self._hides(old, new):
            self.unlink(old, keep_open_as=new)
            return
        try:
            dst: Attr | None = self.lookup(new)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            dst = None
        self._check_name(new, is_dir=src.is_dir)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise error(errno.EEXIST)
            if src.is_dir and not dst.is_dir:
                raise error(errno.ENOTDIR)
            if dst.is_dir and not src.is_dir:
                raise error(errno.EISDIR)
            if dst.is_dir and not self.dir_is_empty(new):
                raise error(errno.ENOTEMPTY)
        if src.is_dir and (new + "/").startswith(old + "/"):
            raise error(errno.EINVAL)
        # Every key the move makes must fit S3's limit: checked before anything changes.
        listed = self.renamer.dir_keys(old, new) if src.is_dir else []
        if dst is not None and dst.is_dir:
            self.ns.delete_dir_objects(new)
        if src.is_dir:
            self.renamer.rename_dir(old, new, src, listed)
        else:
            self.renamer.rename_file(old, new)
        self.ns.moved(old, new, src.is_dir)
        now = time.time_ns()
        moved_dir = 1 if src.is_dir else 0
        self.ns.entry_changed(old, now, subdirs=-moved_dir)
        self.ns.entry_changed(new, now, subdirs=moved_dir if dst is None else 0)
        self._seen_etags.pop(old)

    # --- the filesystem ---------------------------------------------------------------

    def statfs(self) -> dict[str, int]:
        # S3 has no capacity: report plenty (256 TiB) so `df` and free-space checks pass.
        blocks = 1 << 36  # of 4 KiB
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": 1 << 32,
            "f_ffree": 1 << 32,
            "f_favail": 1 << 32,
            "f_namemax": 255,  # as s3fs (NAME_MAX)
        }

    # --- extended attributes (with -o use_xattr) ---------------------------------------

    def xattrs(self, path: str) -> dict[str, bytes]:
        return layout.parse_xattrs(dict(self.lookup(path).extra).get("xattr"))

    def _edit_xattrs(self, path: str, change: Callable[[dict[str, bytes]], None]) -> None:
        """Apply `change` to the object's current attributes and store the result (no
        header once none is left); `change` may refuse by raising."""
        if path == "/":
            raise error(errno.ENOTSUP)  # the mountpoint's attributes are the local dir's

        def edit(headers: dict[str, str]) -> None:
            xattrs = layout.parse_xattrs(headers.get("xattr"))
            change(xattrs)
            if xattrs:
                headers["xattr"] = layout.build_xattrs(xattrs)
            else:
                headers.pop("xattr", None)

        self.set_meta(path, {}, edit=edit)

    def getxattr(self, path: str, name: str) -> bytes:
        xattrs = self.xattrs(path)
        if name not in xattrs:
            raise error(errno.ENODATA)
        return xattrs[name]

    def listxattr(self, path: str) -> list[str]:
        return sorted(self.xattrs(path))

    def setxattr(self, path: str, name: str, value: bytes, options: int) -> None:
        if not name or layout.XATTR_NAME_FORBIDDEN & set(name):
            raise error(errno.EINVAL)

        def change(xattrs: dict[str, bytes]) -> None:
            if options & os.XATTR_CREATE and name in xattrs:
                raise error(errno.EEXIST)
            if options & os.XATTR_REPLACE and name not in xattrs:
                raise error(errno.ENODATA)
            xattrs[name] = bytes(value)

        self._edit_xattrs(path, change)

    def removexattr(self, path: str, name: str) -> None:
        def change(xattrs: dict[str, bytes]) -> None:
            if name not in xattrs:
                raise error(errno.ENODATA)
            del xattrs[name]

        self._edit_xattrs(path, change)
