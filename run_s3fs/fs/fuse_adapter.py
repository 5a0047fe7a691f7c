"""The mfusepy Operations: each FUSE callback is one call into the core (core/), with
the caller's identity and the file-info fields translated, and errnos handed back.

Every operation runs in one of libfuse's worker threads. Expected failures are OSErrors
with an errno; anything else is logged and becomes EIO, so no bug kills the daemon.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import mfusepy

from run_s3fs.fs import fusebuf
from run_s3fs.fs.core.filesystem import Filesystem
from run_s3fs.fs.fusebuf import Replies
from run_s3fs.fs.layout import Attr

log = logging.getLogger("run_s3fs.fs.ops")

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
QUIET_ERRNOS = frozenset({errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENODATA})


def stat_of(attr: Attr) -> dict[str, int]:
    """The dict mfusepy's getattr expects (use_ns=True: times in nanoseconds)."""
    return attr.to_fuse()


def operation(method: Callable) -> Callable:
    """Log and turn unexpected exceptions into EIO; let OSErrors through with their errno."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            if e.errno is None or e.errno <= 0:
                log.error("%s%r: %s", method.__name__, args[:1], e)
                raise mfusepy.FuseOSError(errno.EIO) from None
            if e.errno not in QUIET_ERRNOS:
                log.info("%s %s: %s", method.__name__, args[:1], e)
            raise mfusepy.FuseOSError(e.errno) from None
        except Exception as e:
            log.error("%s %s failed: %s: %s", method.__name__, args[:1], type(e).__name__, e)
            log.debug("traceback", exc_info=True)
            raise mfusepy.FuseOSError(errno.EIO) from None

    return wrapper


def _caller() -> tuple[int, int]:
    uid, gid, _pid = mfusepy.fuse_get_context()
    return uid, gid


class FuseAdapter(mfusepy.Operations):
    use_ns = True  # times in integer nanoseconds

    def __init__(
        self,
        core: Filesystem,
        kernel_timeout: float = 1.0,
        max_read: int = 1024 * 1024,
        read_ahead: int = 1024 * 1024,
    ) -> None:
        self.core = core
        self.kernel_timeout = kernel_timeout
        self.max_read = max_read  # fusebuf.read_size(), also the mount's max_read
        self.read_ahead = read_ahead  # fusebuf.read_ahead(max_read)
        self.replies = Replies()
        self.on_init: Callable[[int], None] | None = None  # given libfuse's `struct fuse *`
        self.on_destroy: Callable[[], None] | None = None

    # --- lifecycle --------------------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            # The kernel's own caches: short, so other mounts' changes show up soon; the
            # core's stat cache (stat_cache_expire) sits behind them.
            config.attr_timeout = self.kernel_timeout
            config.entry_timeout = self.kernel_timeout
            config.negative_timeout = 0
            # An unlinked open file is renamed to a .fuse_hidden name, so it keeps a path
            # and fstat reaches us (under hard_remove libfuse answers ESTALE itself); the
            # core turns that rename into an unlink, and the name never reaches S3.
            config.hard_remove = 0
            config.use_ino = 0
        if conn is not None:
            conn.max_write = self.max_read  # so a write request fits a pipe (fusebuf)
            conn.max_read = self.max_read
            conn.max_readahead = max(conn.max_readahead, self.read_ahead)
            self.replies.start(conn, self.max_read)
        if self.on_init is not None:
            self.on_init(mfusepy._libfuse.fuse_get_context().contents.fuse)
        self.core.start()

    def destroy(self, path: str) -> None:
        if self.on_destroy is not None:
            self.on_destroy()
        self.core.stop()
        self.replies.close()

    # --- attributes -------------------------------------------------------------------

    @operation
    def getattr(self, path: str | None, fh: Any = None) -> dict[str, int]:
        return stat_of(self.core.getattr(path, getattr(fh, "fh", 0) if fh is not None else 0))

    @operation
    def access(self, path: str, amode: int) -> int:
        self.core.access(path, amode)
        return 0

    @operation
    def chmod(self, path: str, mode: int) -> int:
        self.core.chmod(path, mode)
        return 0

    @operation
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.core.chown(path, uid, gid)
        return 0

    @operation
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        now = time.time_ns()
        atime, mtime = times if times is not None else (now, now)

        def resolve(value: int) -> int | None:
            return None if value == UTIME_OMIT else now if value == UTIME_NOW else value

        self.core.utimens(path, resolve(atime), resolve(mtime))
        return 0

    # --- directories ------------------------------------------------------------------

    @operation
    def opendir(self, path: str) -> int:
        self.core.opendir(path)
        return 0

    @operation
    def readdir(self, path: str, fh: int) -> list:
        return [(name, {"st_mode": mode}, 0) for name, mode in self.core.readdir(path)]

    @operation
    def releasedir(self, path: str, fh: int) -> int:
        return 0

    @operation
    def mkdir(self, path: str, mode: int) -> int:
        self.core.mkdir(path, mode, *_caller())
        return 0

    @operation
    def rmdir(self, path: str) -> int:
        self.core.rmdir(path)
        return 0

    # --- files ------------------------------------------------------------------------

    @operation
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        flags = fi.flags if fi is not None else 0
        fh = self.core.create(path, mode, flags, *_caller())
        if fi is not None:
            fi.fh = fh
        return 0

    @operation
    def open(self, path: str, fi: Any) -> int:
        opened = self.core.open(path, fi.flags)
        fi.fh = opened.fh
        fi.keep_cache = 1 if opened.keep_cache else 0
        fi.direct_io = 1 if opened.direct_io else 0
        return 0

    @operation
    def read_buf(self, path: str | None, bufpp: Any, size: int, offset: int, fi: Any) -> int:
        self.replies.fill(bufpp, self.core.read_pieces(fi.fh, offset, size))
        return 0

    @operation
    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        return self.core.write(fi.fh, data, offset)

    @operation
    def write_buf(self, path: str | None, buf: Any, offset: int, fi: Any) -> int:
        return self.core.write_from(fi.fh, offset, lambda fd, at: fusebuf.copy_into(buf, fd, at))

    @operation
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self.core.truncate(path, length)
        return 0

    @operation
    def flush(self, path: str, fi: Any) -> int:
        self.core.flush(fi.fh)
        return 0

    @operation
    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        self.core.fsync(fi.fh)
        return 0

    @operation
    def release(self, path: str, fi: Any) -> int:
        self.core.release(fi.fh)
        return 0

    @operation
    def unlink(self, path: str) -> int:
        self.core.unlink(path)
        return 0

    @operation
    def symlink(self, path: str, target: str) -> int:
        self.core.symlink(path, target, *_caller())
        return 0

    @operation
    def readlink(self, path: str) -> str:
        return self.core.readlink(path)

    @operation
    def link(self, target: str, source: str) -> int:
        self.core.link(target, source)
        return 0

    @operation
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.core.mknod(path, mode, dev, *_caller())
        return 0

    @operation
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self.core.rename(old, new, flags)
        return 0

    @operation
    def statfs(self, path: str) -> dict[str, int]:
        return self.core.statfs()


class XattrAdapter(FuseAdapter):
    """With `-o use_xattr`, as s3fs: extended attributes kept in the x-amz-meta-xattr
    header (format in layout.py). Without it these operations are not offered at all,
    so the kernel stops asking: with them, every write() first asks for the file's
    security.capability."""

    @operation
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.core.getxattr(path, name)

    @operation
    def listxattr(self, path: str) -> list[str]:
        return self.core.listxattr(path)

    @operation
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self.core.setxattr(path, name, value, options)
        return 0

    @operation
    def removexattr(self, path: str, name: str) -> int:
        self.core.removexattr(path, name)
        return 0


class Fuse(mfusepy.FUSE):
    """mfusepy's session, whose read_buf also takes the NULL path libfuse passes for an
    unlinked open file whose directory is gone (mfusepy's decodes it, and fails)."""

    def read_buf(self, path: bytes | None, bufpp: Any, size: int, offset: int, fip: Any) -> int:
        name = None if path is None else path.decode(self.encoding, self.errors)
        fh = fip.contents if self.raw_fi else fip.contents.fh
        return self.operations.read_buf(name, bufpp, size, offset, fh)

    def write_buf(self, path: bytes | None, buf: Any, offset: int, fip: Any) -> int:
        name = None if path is None else path.decode(self.encoding, self.errors)
        fh = fip.contents if self.raw_fi else fip.contents.fh
        return self.operations.write_buf(name, buf, offset, fh)
