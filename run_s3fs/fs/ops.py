"""The FUSE operations: a thin layer mapping each call onto the S3, cache and open-file
layers. Paths are FUSE paths (`/a/b`); keys come from layout.

Every operation runs in one of libfuse's worker threads. Expected failures are OSErrors
with an errno; anything else is logged and becomes EIO, so no bug kills the daemon.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

import mfusepy

from run_s3fs.fs import layout
from run_s3fs.fs.cache import MISSING, DirEntry, ListingCache, ObjectAttrCache, StatCache
from run_s3fs.fs.files import OpenFile, OpenFiles
from run_s3fs.fs.layout import Attr, Overrides
from run_s3fs.fs.prefetch import NOT_LISTED, ListingsAhead, Prefetcher
from run_s3fs.fs.s3 import S3, ObjectInfo

log = logging.getLogger("run_s3fs.fs.ops")

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
OPEN_READ = 1024 * 1024  # fetched with the headers when a file is opened for reading


def _seconds(when: datetime | None) -> int:
    return int(when.timestamp()) if when else 0


def _edited(
    extra: tuple[tuple[str, str], ...], edit: Callable[[dict[str, str]], None] | None
) -> tuple[tuple[str, str], ...]:
    if edit is None:
        return extra
    headers = dict(extra)
    edit(headers)
    return tuple(sorted(headers.items()))


def fuse_error(number: int) -> OSError:
    return mfusepy.FuseOSError(number)


def operation(method):
    """Log and turn unexpected exceptions into EIO; let OSErrors through with their errno."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            if e.errno is None or e.errno <= 0:
                log.error("%s%r: %s", method.__name__, args[:1], e)
                raise fuse_error(errno.EIO) from None
            if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                log.info("%s %s: %s", method.__name__, args[:1], e)
            raise
        except Exception as e:
            log.error("%s %s failed: %s: %s", method.__name__, args[:1], type(e).__name__, e)
            log.debug("traceback", exc_info=True)
            raise fuse_error(errno.EIO) from None

    return wrapper


class S3Operations(mfusepy.Operations):
    use_ns = True  # times in integer nanoseconds

    def __init__(
        self,
        s3: S3,
        prefix: str,
        spool_dir: str,
        root_attr: Attr,
        overrides: Overrides,
        stat_ttl: float,
        negative_ttl: float,
        max_stat_entries: int,
        head_threads: int,
        compat_dir: bool = False,
        read_only: bool = False,
        kernel_timeout: float = 1.0,
        retry_interval: float = 30.0,
    ) -> None:
        self.s3 = s3
        self.prefix = prefix
        self.spool_dir = spool_dir
        self.root_attr = root_attr
        self.overrides = overrides
        self.stats = StatCache(stat_ttl, negative_ttl, max_stat_entries)
        # Listings answer "no such name" for lookups; kept as briefly as negative stat
        # entries, so names other mounts create appear as soon. readdir always lists anew.
        self.listings = ListingCache(negative_ttl)
        self.objects = ObjectAttrCache(max_stat_entries)
        self.files = OpenFiles()
        self.heads = ThreadPoolExecutor(max_workers=head_threads, thread_name_prefix="s3-head")
        self.prefetch = Prefetcher(self.heads, self._fetch_listed, self._store_listed, stat_ttl)
        self.ahead = ListingsAhead(
            self.heads, lambda path: self.s3.list_dir(self._dkey(path)), negative_ttl
        )
        self.compat_dir = compat_dir
        self.read_only = read_only
        self.kernel_timeout = kernel_timeout
        self.retry_interval = retry_interval
        self.uid = os.geteuid()
        self.gid = os.getegid()
        # path → ETag when the kernel last cached its pages (for keep_cache); bounded.
        self._seen_etags: OrderedDict[str, str] = OrderedDict()
        self._max_seen = max_stat_entries
        self._lock = threading.Lock()
        self.on_init: Any = None  # called with libfuse's `struct fuse *` once mounted
        self.failures = 0  # files that could not be uploaded at unmount
        # Handles opened for writing: only their flush uploads and reports failures (a
        # reader's close must not fail because someone else's upload did).
        self._writers: set[int] = set()
        self._stopping = threading.Event()

    # --- keys and attributes ----------------------------------------------------------

    def _key(self, path: str) -> str:
        return layout.path_to_key(path, self.prefix)

    def _dkey(self, path: str) -> str:
        return layout.dir_key(path, self.prefix)

    def _caller(self) -> tuple[int, int]:
        uid, gid, _pid = mfusepy.fuse_get_context()
        return uid, gid

    def _decode(self, info: ObjectInfo) -> Attr:
        attr = layout.decode_attr(
            info.key,
            info.metadata,
            info.content_type,
            info.size,
            info.last_modified,
            self.uid,
            self.gid,
            info.etag,
        )
        self.objects.put(info.key, info.etag, _seconds(info.last_modified), attr)
        return attr

    def _fetch_attr(self, path: str) -> Attr | None:
        """Ask S3 what `path` is: a file/symlink/dir object, a dir marker, an implicit
        directory, or nothing. 1–3 requests; the result goes into the stat cache."""
        key = self._key(path)
        info = self.s3.head(key)
        attr = self._decode(info) if info is not None else self._fetch_dir_attr(path)
        self.stats.put(path, attr)
        return attr

    def _fetch_dir_attr(self, path: str) -> Attr | None:
        dkey = self._dkey(path)
        # The marker `dir/` sorts before every other key under `dir/`: one listing of one
        # key says both whether a marker exists and whether the directory is implicit.
        first = self.s3.first_keys(dkey, 1)
        if first and first[0].key == dkey:
            marker = self.s3.head(dkey)
            if marker is not None:
                attr = self._decode(marker)
                if not attr.is_dir:  # a marker with a file mode: the key decides
                    attr = replace(attr, mode=stat.S_IFDIR | stat.S_IMODE(attr.mode), size=0)
                return attr
        if first:
            return layout.implicit_dir_attr(self.uid, self.gid)
        if self.compat_dir:
            info = self.s3.head(self._key(path) + layout.COMPAT_DIR_SUFFIX)
            if info is not None:
                attr = self._decode(info)
                return replace(attr, mode=stat.S_IFDIR | stat.S_IMODE(attr.mode), size=0)
        return None

    def _fetch_listed(self, key: str, is_prefix: bool) -> Attr | None:
        """Attributes of an entry a listing showed: a HEAD of its object (or, for a common
        prefix, of its marker: none makes it an implicit directory)."""
        info = self.s3.head(key)
        if is_prefix:
            if info is None:
                return layout.implicit_dir_attr(self.uid, self.gid)
            attr = self._decode(info)
            return replace(attr, mode=stat.S_IFDIR | stat.S_IMODE(attr.mode), size=0)
        return self._decode(info) if info is not None else None

    def _store_listed(self, path: str, attr: Attr | None) -> None:
        if attr is not None:
            self.stats.put(path, attr)

    def _lookup(self, path: str) -> Attr:
        """Attributes of `path` (raw, before overrides), or ENOENT."""
        if path == "/":
            return self.root_attr
        f = self.files.get(path)
        if f is not None:
            return f.attr
        cached = self.stats.get(path)
        if cached is MISSING:
            raise fuse_error(errno.ENOENT)
        if isinstance(cached, Attr):
            return cached
        parent, name = posixpath.split(path)
        listing = self.listings.get(parent)
        if listing is not None and name not in listing:
            raise fuse_error(errno.ENOENT)
        listed = self.prefetch.lookup(path)
        if isinstance(listed, Attr):
            return listed
        if listed is NOT_LISTED:  # it may have just landed in the cache
            cached = self.stats.get(path)
            if isinstance(cached, Attr):
                return cached
        attr = self._fetch_attr(path)
        if attr is None:
            raise fuse_error(errno.ENOENT)
        return attr

    def _show(self, attr: Attr) -> dict[str, Any]:
        if attr is self.root_attr:  # mp_umask (not umask) governs the mountpoint
            return attr.to_fuse()
        return self.overrides.apply(attr).to_fuse()

    def _changed(self, path: str, exists: bool | None = None, is_dir: bool = False) -> None:
        """Our own change to `path`: forget its attributes; keep the parent's cached
        listing right (`exists` says whether `path` is there now; None: unknown)."""
        self.prefetch.forget(path)
        self.ahead.forget(posixpath.dirname(path))
        self.stats.invalidate(path)
        if exists is None:
            self.listings.invalidate_parent(path)
        else:
            self.listings.update(path, DirEntry(posixpath.basename(path), is_dir), exists)
        if exists is False:
            with self._lock:
                self._seen_etags.pop(path, None)
        self.objects.invalidate(self._key(path))
        self.objects.invalidate(self._dkey(path))

    def _changed_tree(self, path: str, exists: bool, is_dir: bool = True) -> None:
        """`_changed`, and everything cached below `path` too (rmdir, renames)."""
        self._changed(path, exists=exists, is_dir=is_dir)
        self.prefetch.forget_tree(path)
        self.ahead.forget_tree(path)
        self.stats.invalidate_tree(path)
        self.listings.invalidate_tree(path)

    def _check_writable(self) -> None:
        if self.read_only:
            raise fuse_error(errno.EROFS)

    # --- lifecycle --------------------------------------------------------------------

    def init_with_config(self, conn, config) -> None:
        if config is not None:
            # The kernel's own caches: short, so other mounts' changes show up soon; our
            # stat cache (stat_cache_expire) sits behind them.
            config.attr_timeout = self.kernel_timeout
            config.entry_timeout = self.kernel_timeout
            config.negative_timeout = 0
            config.hard_remove = 1  # no .fuse_hidden files: an unlinked open file lives on locally
            config.use_ino = 0
        if self.on_init is not None:
            self.on_init(mfusepy._libfuse.fuse_get_context().contents.fuse)
        threading.Thread(target=self._retry_pending, name="retry", daemon=True).start()
        if conn is not None:
            conn.max_write = 1024 * 1024
            conn.max_read = 1024 * 1024
            conn.max_readahead = max(conn.max_readahead, 1024 * 1024)

    def destroy(self, path: str) -> None:
        """Unmount: upload every file still holding unsaved data, then stop the pools."""
        self._stopping.set()
        self.failures = self.flush_all()
        self.heads.shutdown(wait=True)

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
        (every `retry_interval` seconds), so they do not wait for an unmount."""
        while not self._stopping.wait(self.retry_interval):
            for f in self.files.all():
                if f.refs or not f.dirty or f.unlinked:
                    continue
                try:
                    if f.flush():
                        log.info("%s: pending upload done", f.path)
                        self._after_upload(f)
                except OSError:
                    continue  # logged by flush; tried again next round
                with f.lock:
                    if f.refs == 0 and not f.dirty:
                        f.close()
                        self.files.forget(f)

    def busy(self) -> bool:
        """True while some file is open with data not yet uploaded."""
        return any(f.refs and f.dirty and not f.unlinked for f in self.files.all())

    # --- attributes -------------------------------------------------------------------

    @operation
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        if fh is not None and getattr(fh, "fh", 0):
            with self._lock:
                f = self.files.by_fh.get(fh.fh)
            if f is not None:
                return self._show(f.attr)
        return self._show(self._lookup(path))

    @operation
    def access(self, path: str, amode: int) -> int:
        self._lookup(path)  # default_permissions: the kernel checks the mode bits
        if amode & os.W_OK and self.read_only:
            raise fuse_error(errno.EROFS)
        return 0

    def _set_meta(
        self,
        path: str,
        changes: dict[str, int],
        times_set: bool = False,
        edit: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """chmod/chown/utimens/setxattr: new headers via a metadata-replacing copy onto the
        same key; on a file with pending data, applied at its upload. `edit` changes other
        headers than ours (the xattr one), in place; it may refuse by raising."""
        self._check_writable()
        if path == "/":
            return  # the mountpoint's attributes are the local directory's
        attr = self._lookup(path)
        now = time.time_ns()
        changes.setdefault("ctime_ns", now)
        new = replace(attr, **changes, extra=_edited(attr.extra, edit))
        held = self.files.get(path)
        if held is not None:
            # Hold a handle while deciding, so the file cannot be closed under us.
            f, fh = self._open_file(path, held.attr, False)
            if f.dirty or f.spool is not None:
                f.set_attr(new, times_set)
                self.stats.invalidate(path)
                self._release(fh, report=True)  # uploads now if no one else has it open
                return
            self._release(fh)
        f = self.files.get(path)
        etag = ""  # the copy's: reads pinned to the old one would find it "replaced"
        # The object as it is now: its Content-Type and other tools' headers are kept.
        key = self._dkey(path) if attr.is_dir else self._key(path)
        current = self.s3.head(key)
        if current is not None:
            new = replace(new, extra=_edited(layout.foreign_meta(current.metadata), edit))
            ctype = current.content_type or (
                layout.DIR_CONTENT_TYPE if attr.is_dir else layout.DEFAULT_CONTENT_TYPE
            )
            etag = self.s3.copy(key, key, current.size, layout.object_meta(new), ctype)
        elif attr.is_dir:
            # An implicit directory gets a marker, so the new attributes have a home.
            self.s3.put(key, b"", layout.object_meta(new), layout.DIR_CONTENT_TYPE)
        else:
            raise fuse_error(errno.ENOENT)
        if f is not None:
            f.attr = replace(new, size=f.attr.size, etag=etag or f.attr.etag)
        self._changed(path, exists=True, is_dir=attr.is_dir)
        self.stats.put(path, replace(new, etag=""))

    @operation
    def chmod(self, path: str, mode: int) -> int:
        attr = self._lookup(path)
        self._set_meta(path, {"mode": stat.S_IFMT(attr.mode) | stat.S_IMODE(mode)})
        return 0

    @operation
    def chown(self, path: str, uid: int, gid: int) -> int:
        changes = {}
        if uid != -1:
            changes["uid"] = uid
        if gid != -1:
            changes["gid"] = gid
        if changes:
            self._set_meta(path, changes)
        return 0

    @operation
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        now = time.time_ns()
        atime, mtime = times if times is not None else (now, now)
        changes = {}
        for name, value in (("atime_ns", atime), ("mtime_ns", mtime)):
            if value == UTIME_OMIT:
                continue
            changes[name] = now if value == UTIME_NOW else value
        if changes:
            self._set_meta(path, changes, times_set=True)
        return 0

    # --- directories ------------------------------------------------------------------

    @operation
    def opendir(self, path: str) -> int:
        if not self._lookup(path).is_dir:
            raise fuse_error(errno.ENOTDIR)
        return 0

    @operation
    def readdir(self, path: str, fh: int) -> list:
        entries = self._read_dir(path)
        result: list = [(".", {"st_mode": stat.S_IFDIR}, 0), ("..", {"st_mode": stat.S_IFDIR}, 0)]
        for entry in entries.values():
            attr = self.stats.get(posixpath.join(path, entry.name))
            if isinstance(attr, Attr):
                mode = attr.mode
            elif entry.is_dir:
                mode = stat.S_IFDIR
            else:
                # The listing cannot tell a symlink from a file; an empty object may be an
                # old-style directory object: "unknown" makes the caller stat it.
                mode = 0 if entry.empty else stat.S_IFREG
            result.append((entry.name, {"st_mode": mode}, 0))
        return result

    def _read_dir(self, path: str) -> dict[str, DirEntry]:
        """The directory's entries, from a fresh listing (other mounts' new files show at
        the next `ls`). Attributes are not fetched here (`find` needs only names and
        kinds); the prefetcher fetches them when lookups ask (`ls -l`)."""
        prefix = self._dkey(path)
        listing = self.ahead.take(path)
        if listing is None:
            listing = self.s3.list_dir(prefix)
        entries: dict[str, DirEntry] = {}
        todo: dict[str, tuple[str, bool]] = {}  # name → (key, from a common prefix)
        for item in listing.files:
            name = layout.child_name(item.key, prefix)
            if name is None:
                continue
            if name.endswith(layout.COMPAT_DIR_SUFFIX):
                if self.compat_dir:
                    base = name[: -len(layout.COMPAT_DIR_SUFFIX)]
                    if base:
                        entries.setdefault(base, DirEntry(base, True))
                continue
            child = posixpath.join(path, name)
            attr = self.objects.get(item.key, item.etag, _seconds(item.last_modified))
            if attr is not None:
                # Unchanged since we last saw it: its attributes are as good as fetched
                # now (a fresh TTL, or a long `ls -l` outlives the earlier entries).
                entries[name] = DirEntry(name, attr.is_dir)
                self.stats.put(child, attr)
                continue
            entries[name] = DirEntry(name, False, empty=item.size == 0)
            if self._unknown(child):
                todo[name] = (item.key, False)
        for common in listing.prefixes:
            name = layout.child_name(common, prefix)
            if name is None:
                continue
            if name in entries:
                # Both `x` and `x/…` exist: the object wins, as in s3fs.
                continue
            entries[name] = DirEntry(name, True)
            if self._unknown(posixpath.join(path, name)):
                todo[name] = (common, True)
        self.prefetch.listed(path, todo)
        self.ahead.listed(path, [posixpath.join(path, n) for n, e in entries.items() if e.is_dir])
        self.listings.put(path, entries)
        return self._with_local(path, entries)

    def _unknown(self, path: str) -> bool:
        """True if `path`'s attributes are not cached. A cached absence is overruled by
        the listing that shows the entry (forgotten, so the next lookup asks S3)."""
        cached = self.stats.get(path)
        if cached is MISSING:
            self.stats.invalidate(path)
        return not isinstance(cached, Attr)

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

    @operation
    def releasedir(self, path: str, fh: int) -> int:
        return 0

    @operation
    def mkdir(self, path: str, mode: int) -> int:
        self._check_writable()
        if self._exists(path):
            raise fuse_error(errno.EEXIST)
        uid, gid = self._caller()
        now = time.time_ns()
        full_mode = stat.S_IFDIR | stat.S_IMODE(mode)
        meta = layout.encode_meta(full_mode, uid, gid, now, now, now)
        self.s3.put(self._dkey(path), b"", meta, layout.DIR_CONTENT_TYPE)
        self._changed(path, exists=True, is_dir=True)
        self.stats.put(path, Attr(full_mode, 0, uid, gid, now, now, now))
        return 0

    def _exists(self, path: str) -> bool:
        try:
            self._lookup(path)
            return True
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise

    def _dir_is_empty(self, path: str) -> bool:
        dkey = self._dkey(path)
        if any(not f.unlinked for f in self.files.under(path)):
            return False
        return all(k.key == dkey for k in self.s3.first_keys(dkey, 2))

    @operation
    def rmdir(self, path: str) -> int:
        self._check_writable()
        if path == "/":
            raise fuse_error(errno.EBUSY)
        attr = self._lookup(path)
        if not attr.is_dir:
            raise fuse_error(errno.ENOTDIR)
        if not self._dir_is_empty(path):
            raise fuse_error(errno.ENOTEMPTY)
        self._delete_dir_objects(path)
        self._changed_tree(path, exists=False)
        self.stats.put(path, None)
        return 0

    def _delete_dir_objects(self, path: str) -> None:
        """Every object that can make `path` a directory: `dir/`, an old-style `dir` object
        with a directory type, `dir_$folder$`."""
        keys = [self._dkey(path)]
        info = self.s3.head(self._key(path))
        if info is not None and self._decode(info).is_dir:
            keys.append(self._key(path))
        if self.compat_dir:
            keys.append(self._key(path) + layout.COMPAT_DIR_SUFFIX)
        self.s3.delete_many(keys)

    # --- files ------------------------------------------------------------------------

    def _open_file(self, path: str, attr: Attr, new: bool) -> tuple[OpenFile, int]:
        with self._lock:
            f = self.files.get(path)
            if f is None:
                f = OpenFile(self.s3, self.spool_dir, path, self._key(path), attr, new)
            return f, self.files.add_handle(f)

    @operation
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        self._check_writable()
        uid, gid = self._caller()
        now = time.time_ns()
        attr = Attr(stat.S_IFREG | stat.S_IMODE(mode), 0, uid, gid, now, now, now)
        existing = self.files.get(path)
        if existing is not None:  # O_CREAT on a file open here: open it (and truncate)
            f, fh = self._open_file(path, existing.attr, False)
            if fi is not None and fi.flags & os.O_TRUNC:
                f.truncate(0)
        else:
            f, fh = self._open_file(path, attr, True)
        self._changed(path, exists=True)
        with self._lock:
            self._writers.add(fh)
        if fi is not None:
            fi.fh = fh
        return 0

    @operation
    def open(self, path: str, fi: Any) -> int:
        flags = fi.flags
        if self.read_only and flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            raise fuse_error(errno.EROFS)
        f = self.files.get(path)
        first = b""
        if f is not None:
            attr = f.attr
        else:
            # Close-to-open consistency: attributes at most a second old (as old as the
            # kernel may keep them), so a file another mount closed after writing is
            # opened with its new size and content.
            recent = self.stats.get(path, max_age=self.kernel_timeout)
            if isinstance(recent, Attr):
                attr = recent
            elif flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC:
                # One request for the fresh headers and the first MiB: for a small file,
                # all a reader will ask for.
                got = self.s3.get_start(self._key(path), OPEN_READ)
                if got is not None and not layout.is_dir_object(
                    got[0].key, got[0].content_type, got[0].size
                ):
                    attr, first = self._decode(got[0]), got[1]
                    self.stats.put(path, attr)
                else:
                    self.stats.invalidate(path)
                    attr = self._lookup(path)
            else:
                self.stats.invalidate(path)
                attr = self._lookup(path)
        if attr.is_dir:
            raise fuse_error(errno.EISDIR)
        f, fh = self._open_file(path, attr, False)
        if first and f.attr.etag == attr.etag:
            f.seed(first)
        if flags & os.O_TRUNC and f.attr.size:
            f.truncate(0)
            self._changed(path, exists=True)
        fi.fh = fh
        if flags & (os.O_WRONLY | os.O_RDWR):
            with self._lock:
                self._writers.add(fh)
        # Keep the kernel's page cache only if the object is unchanged since it was filled.
        with self._lock:
            etag = f.attr.etag
            fi.keep_cache = 1 if etag and self._seen_etags.get(path) == etag else 0
            if etag:
                self._remember_etag(path, etag)
        return 0

    def _remember_etag(self, path: str, etag: str) -> None:
        """Under self._lock."""
        self._seen_etags[path] = etag
        self._seen_etags.move_to_end(path)
        while len(self._seen_etags) > self._max_seen:
            self._seen_etags.popitem(last=False)

    @operation
    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        return self.files.handle(fi.fh).read(offset, size)

    @operation
    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        self._check_writable()
        f = self.files.handle(fi.fh)
        n = f.write(data, offset)
        self.stats.invalidate(f.path)
        return n

    @operation
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self._check_writable()
        attr = self._lookup(path)
        if attr.is_dir:
            raise fuse_error(errno.EISDIR)
        # Through a handle of its own, so a close racing with us cannot lose the change;
        # uploaded at its release unless another handle has the file open (then at that
        # handle's close, as for any write through it).
        f, fh_number = self._open_file(path, attr, False)
        try:
            f.truncate(length)
        finally:
            self._release(fh_number, report=True)
        self._changed(path, exists=True)
        return 0

    @operation
    def flush(self, path: str, fi: Any) -> int:
        with self._lock:
            if fi.fh not in self._writers:
                return 0
        return self._upload(fi.fh)

    @operation
    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        return self._upload(fi.fh)  # explicit: on any handle, as fsync on a local file

    def _upload(self, fh: int) -> int:
        f = self.files.handle(fh)
        if f.flush():
            self._after_upload(f)
        return 0

    def _after_upload(self, f: OpenFile) -> None:
        self._changed(f.path, exists=True)
        self.stats.put(f.path, f.attr)  # what we uploaded: no HEAD needed to know it
        with self._lock:
            if f.attr.etag:
                self._remember_etag(f.path, f.attr.etag)

    @operation
    def release(self, path: str, fi: Any) -> int:
        self._release(fi.fh)
        return 0

    def _release(self, fh: int, report: bool = False) -> None:
        """Drop a handle; the last one uploads what is pending. A failure keeps the file
        pending (in the table, with its spool) for the next flush or unmount, and is
        raised only if `report` (FUSE's release has nobody to tell)."""
        with self._lock:
            self._writers.discard(fh)
        f, last = self.files.drop_handle(fh)
        if not last:
            return
        try:
            if f.flush():
                self._after_upload(f)
        except OSError as e:
            log.error("%s stays pending after its last close: %s", f.path, e)
            if report:
                raise
            return
        with f.lock:
            if f.refs == 0 and not f.dirty:
                f.close()
                self.files.forget(f)

    @operation
    def unlink(self, path: str) -> int:
        self._check_writable()
        attr = self._lookup(path)
        if attr.is_dir:
            raise fuse_error(errno.EISDIR)
        f = self.files.get(path)
        if f is None:
            self.s3.delete(self._key(path))
        else:
            # Open descriptors keep reading the data after the name is gone (POSIX). Its
            # pending data is dropped only once the object is gone: a failed DELETE leaves
            # the file as it was, upload still pending. Under its lock, so the background
            # retry cannot upload it again between the DELETE and the drop.
            with f.lock:
                f.load()
                self.s3.delete(self._key(path))
                f.superseded()
            with self.files.lock:
                if self.files.by_path.get(path) is f:
                    del self.files.by_path[path]
        self._changed(path, exists=False)
        self.stats.put(path, None)
        return 0

    # --- symlinks ---------------------------------------------------------------------

    @operation
    def symlink(self, path: str, target: str) -> int:
        self._check_writable()
        if self._exists(path):
            raise fuse_error(errno.EEXIST)
        uid, gid = self._caller()
        now = time.time_ns()
        meta = layout.encode_meta(layout.SYMLINK_MODE, uid, gid, now, now, now)
        body = target.encode("utf-8", "surrogateescape")
        self.s3.put(self._key(path), body, meta, layout.SYMLINK_CONTENT_TYPE)
        self._changed(path, exists=True)
        self.stats.put(path, Attr(layout.SYMLINK_MODE, len(body), uid, gid, now, now, now))
        return 0

    @operation
    def readlink(self, path: str) -> str:
        attr = self._lookup(path)
        if not attr.is_symlink:
            raise fuse_error(errno.EINVAL)
        data = self.s3.get_range(self._key(path), 0, max(attr.size, 1) + 4096)
        return data.decode("utf-8", "surrogateescape")

    @operation
    def link(self, target: str, source: str) -> int:
        log.warning("hard link %s → %s refused: S3 has no hard links", target, source)
        raise fuse_error(errno.ENOTSUP)  # s3fs's answer too

    @operation
    def mknod(self, path: str, mode: int, dev: int) -> int:
        if stat.S_ISREG(mode):
            fi = type("fi", (), {"flags": 0, "fh": 0})()
            self.create(path, mode, fi)
            self._release(fi.fh)
            return 0
        log.warning("mknod %s refused: only regular files, directories, symlinks", path)
        raise fuse_error(errno.EPERM)

    # --- rename -----------------------------------------------------------------------

    @operation
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self._check_writable()
        if flags & RENAME_EXCHANGE:
            raise fuse_error(errno.EINVAL)
        src = self._lookup(old)
        if old == new:
            return 0
        try:
            dst: Attr | None = self._lookup(new)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            dst = None
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise fuse_error(errno.EEXIST)
            if src.is_dir and not dst.is_dir:
                raise fuse_error(errno.ENOTDIR)
            if dst.is_dir and not src.is_dir:
                raise fuse_error(errno.EISDIR)
            if dst.is_dir:
                if not self._dir_is_empty(new):
                    raise fuse_error(errno.ENOTEMPTY)
                self._delete_dir_objects(new)
        if src.is_dir:
            if (new + "/").startswith(old + "/"):
                raise fuse_error(errno.EINVAL)
            self._rename_dir(old, new, src)
        else:
            self._rename_file(old, new)
        self._changed_tree(old, exists=False, is_dir=src.is_dir)
        self._changed_tree(new, exists=True, is_dir=src.is_dir)
        return 0

    def _rename_file(self, old: str, new: str) -> None:
        """s3fs's rename_object: a copy carrying all the metadata, a new ctime and the
        Content-Type of the new name; then the original is deleted."""
        f = self.files.get(old)
        if f is not None and f.flush():
            self._after_upload(f)
        old_key, new_key = self._key(old), self._key(new)
        current = self.s3.head(old_key)
        if current is None:
            raise fuse_error(errno.ENOENT)

        now = time.time_ns()

        def copy() -> str:
            meta = layout.renamed_meta(current.metadata, now)
            ctype = layout.content_type_for(new)
            return self.s3.copy(old_key, new_key, current.size, meta, ctype)

        target = self.files.get(new)
        if target is None:
            etag = copy()
        else:
            # Replacing a file open (or pending) here: its handles keep the data they opened
            # (POSIX), so fetch it before it is gone (as unlink does). Its lock is held
            # over the copy, so the background retry cannot upload its pending content
            # over the copy; once copied, that content is superseded.
            with target.lock:
                try:
                    target.load()
                except OSError as e:
                    log.info("%s: open handles lose its old content: %s", new, e)
                etag = copy()
                target.superseded()
            with self.files.lock:
                if self.files.by_path.get(new) is target:
                    del self.files.by_path[new]
        self.s3.delete(old_key)
        if f is not None and etag:
            with f.lock:
                # Its reads are pinned to the copy now.
                f.attr = replace(f.attr, etag=etag, ctime_ns=now)
        self.files.rename(old, new, new_key)

    def _rename_dir(self, old: str, new: str, attr: Attr) -> None:
        """Every key below `old/` is copied, then the originals deleted: not atomic.
        The directory itself gets a fresh marker with a new ctime, as s3fs gives it,
        whatever it had (a marker, an old-style `dir` object, or nothing)."""
        for f in self.files.under(old):
            if f.flush():
                self._after_upload(f)
        old_prefix, new_prefix = self._dkey(old), self._dkey(new)
        meta = layout.object_meta(replace(attr, ctime_ns=time.time_ns()))
        self.s3.put(new_prefix, b"", meta, layout.DIR_CONTENT_TYPE)
        listed = list(self.s3.iter_keys(old_prefix))
        entries = [e for e in listed if e.key != old_prefix]
        copies = [
            self.heads.submit(self.s3.copy, e.key, new_prefix + e.key[len(old_prefix) :], e.size)
            for e in entries
        ]
        etags = {
            new_prefix + e.key[len(old_prefix) :]: c.result()
            for e, c in zip(entries, copies, strict=True)
        }
        old_keys = [e.key for e in listed]
        # An old-style directory object `dir` (no slash) goes too.
        info = self.s3.head(self._key(old))
        if info is not None and self._decode(info).is_dir:
            old_keys.append(info.key)
        self.s3.delete_many(old_keys)
        for f in self.files.under(old):
            new_path = new + f.path[len(old) :]
            new_key = self._key(new_path)
            self.files.rename(f.path, new_path, new_key)
            if etags.get(new_key):
                with f.lock:
                    f.attr = replace(f.attr, etag=etags[new_key])

    # --- the filesystem ---------------------------------------------------------------

    @operation
    def statfs(self, path: str) -> dict[str, int]:
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


class XattrOperations(S3Operations):
    """With `-o use_xattr`, as s3fs: extended attributes kept in the x-amz-meta-xattr
    header (format in layout.py). Without it these operations are not offered at all,
    so the kernel stops asking: with them, every write() first asks for the file's
    security.capability."""

    def _xattrs(self, path: str) -> dict[str, bytes]:
        return layout.parse_xattrs(dict(self._lookup(path).extra).get("xattr"))

    def _edit_xattrs(self, path: str, change: Callable[[dict[str, bytes]], None]) -> None:
        """Apply `change` to the object's current attributes and store the result (no
        header once none is left); `change` may refuse by raising."""
        if path == "/":
            raise fuse_error(errno.ENOTSUP)  # the mountpoint's attributes are the local dir's

        def edit(headers: dict[str, str]) -> None:
            xattrs = layout.parse_xattrs(headers.get("xattr"))
            change(xattrs)
            if xattrs:
                headers["xattr"] = layout.build_xattrs(xattrs)
            else:
                headers.pop("xattr", None)

        self._set_meta(path, {}, edit=edit)

    @operation
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        xattrs = self._xattrs(path)
        if name not in xattrs:
            raise fuse_error(errno.ENODATA)
        return xattrs[name]

    @operation
    def listxattr(self, path: str) -> list[str]:
        return sorted(self._xattrs(path))

    @operation
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        if not name or layout.XATTR_NAME_FORBIDDEN & set(name):
            raise fuse_error(errno.EINVAL)

        def change(xattrs: dict[str, bytes]) -> None:
            if options & os.XATTR_CREATE and name in xattrs:
                raise fuse_error(errno.EEXIST)
            if options & os.XATTR_REPLACE and name not in xattrs:
                raise fuse_error(errno.ENODATA)
            xattrs[name] = bytes(value)

        self._edit_xattrs(path, change)
        return 0

    @operation
    def removexattr(self, path: str, name: str) -> int:
        def change(xattrs: dict[str, bytes]) -> None:
            if name not in xattrs:
                raise fuse_error(errno.ENODATA)
            del xattrs[name]

        self._edit_xattrs(path, change)
        return 0
