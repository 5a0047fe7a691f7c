"""Read replies for libfuse's `read_buf`: the bytes of a read, handed over as a pipe
full of page references instead of copied in Python; and for `write_buf`, the bytes of
a write moved from libfuse's buffer into the spool by libfuse itself.

A read-ahead block is a memory file the CRT wrote (engine.types.Body). Returning its
bytes from `read` made mfusepy copy them into a buffer libfuse allocates for every read
(1 MiB, given back to the kernel each time by glibc, so every page faults on the next),
after the block's pages had faulted into our mapping: two copies and two rounds of
faults per MiB, under the GIL. Here a read's pieces are spliced from their memory
files into a pipe of the worker thread's own (page references, no copy), and libfuse
is given the pipe as an fd buffer, which it splices on to /dev/fuse: the kernel's one
copy into the reader's pages is the only one.

The pipe holds references to the pages, not the memory file, so a block may be dropped
(its file closed) as soon as `fill` returns: nothing depends on when libfuse is done.
A pipe must hold a whole read and the few pages libfuse puts with it. Pipes are capped
at /proc/sys/fs/pipe-max-size (1 MiB) for a process without CAP_SYS_RESOURCE, which
containers drop even for root, so reads are then asked for in 1 MiB less 4 pages
(`read_size`). Where no pipe holds that either, replies are plain memory buffers, as
libfuse's own `read` path makes them.

Writes: libfuse reads a request from /dev/fuse by splicing it into a pipe when the pipe
holds a whole request (max_write and a page of header: so max_write is read_size too),
else into memory. `copy_into` has libfuse's fuse_buf_copy take it from there to the
spool file (a splice from the pipe, or a pwrite from memory); with `write` instead,
libfuse copied the pipe into memory, mfusepy that into a bytes object, and the pwrite
into the page cache was the third copy, each under the GIL.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import mmap
import os
import struct
import termios
import threading

import mfusepy

from run_s3fs.fs.engine.types import Piece

log = logging.getLogger("run_s3fs.fs")

MIB = 1024 * 1024
FUSE_BUF_IS_FD = 1 << 1
FUSE_BUF_FD_SEEK = 1 << 2
FUSE_CAP_SPLICE_WRITE = 1 << 7
F_SETPIPE_SZ = 1031
PAGE = mmap.PAGESIZE
# libfuse sizes its pipe for a reply at the data plus three pages (header and bufvec).
SPARE = 4 * PAGE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
_fuse = mfusepy._libfuse
_fuse.fuse_buf_size.restype = ctypes.c_size_t
_fuse.fuse_buf_size.argtypes = [ctypes.c_void_p]
_fuse.fuse_buf_copy.restype = ctypes.c_ssize_t
_fuse.fuse_buf_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]


class _Bufvec(ctypes.Structure):
    """libfuse's `struct fuse_bufvec` with its one `struct fuse_buf` inline (mfusepy
    declares that member as a pointer, which it is not)."""

    _fields_ = [
        ("count", ctypes.c_size_t),
        ("idx", ctypes.c_size_t),
        ("off", ctypes.c_size_t),
        ("buf", mfusepy.fuse_buf),
    ]


def _pipe_can_hold(size: int) -> int:
    """The capacity a pipe of `size` bytes gets here (rounded up by the kernel), or 0."""
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return fcntl.fcntl(w, F_SETPIPE_SZ, size)
    except OSError:
        return 0
    finally:
        os.close(r)
        os.close(w)


def read_ahead(max_read: int) -> int:
    """The kernel's read-ahead for a mount whose reads are `max_read`: 1 MiB where reads
    are 1 MiB; twice a read where they are cut shorter, so that the two requests a 1 MiB
    read becomes go out together (with a 1 MiB read-ahead the kernel sends the second,
    its last 16 KiB, only once the first is answered: a round trip more per random
    read, and more fetched ahead of it)."""
    return MIB if max_read >= MIB else 2 * max_read


def read_size() -> int:
    """The largest read to ask the kernel for (max_read, and the read-ahead): 1 MiB where
    a pipe holds it and libfuse's spare pages, else the most a 1 MiB pipe holds."""
    if _pipe_can_hold(MIB + SPARE):
        return MIB
    if _pipe_can_hold(MIB):
        return MIB - SPARE
    return MIB


def _queued(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _slots(pieces: list[Piece]) -> int:
    """Pipe buffers the pieces take: one per page a spliced piece touches, one per page
    written (plus one where the write starts)."""
    n = 0
    for p in pieces:
        if not len(p):
            continue
        if p.body.fd >= 0:
            n += (p.end - 1) // PAGE - p.start // PAGE + 1
        else:
            n += -(-len(p) // PAGE) + 1
    return n


class Replies:
    """Builds `read_buf` replies; `splicing` once init has found that a pipe can hold
    `max_read` bytes and the header libfuse puts before them."""

    def __init__(self) -> None:
        self.splicing = False
        self._capacity = 0
        self._pipes: dict[int, tuple[int, int]] = {}  # worker thread id → (read, write)
        self._lock = threading.Lock()

    def start(self, conn: object, max_read: int) -> None:
        """At init: splice replies if libfuse can and our pipes are large enough (libfuse
        then needs one as large for itself, and gets it as we did)."""
        capable = getattr(conn, "capable", 0)
        if not capable & FUSE_CAP_SPLICE_WRITE:
            return
        self._capacity = _pipe_can_hold(max_read + SPARE)
        if not self._capacity:
            log.debug("read replies copied: no pipe holds %d bytes", max_read + SPARE)
            return
        conn.want |= FUSE_CAP_SPLICE_WRITE  # type: ignore[attr-defined]
        self.splicing = True
        log.debug("read replies spliced (reads of up to %d bytes)", max_read)

    def fill(self, bufpp: object, pieces: list[Piece]) -> None:
        """Point libfuse's `*bufpp` at a reply holding the pieces' bytes in order; libfuse
        frees the bufvec (and a memory buffer in it) once the reply is sent."""
        total = sum(len(p) for p in pieces)
        address = _libc.malloc(ctypes.sizeof(_Bufvec))
        if not address:
            raise MemoryError("no memory for a read reply")
        vec = _Bufvec.from_address(address)
        vec.count, vec.idx, vec.off = 1, 0, 0
        vec.buf.size, vec.buf.flags, vec.buf.mem, vec.buf.fd, vec.buf.pos = total, 0, None, -1, 0
        try:
            pipe = None
            if total and self.splicing and _slots(pieces) * PAGE <= self._capacity:
                pipe = self._pipe()
            if pipe is not None:
                try:
                    vec.buf.fd = self._through(pipe, pieces)
                    vec.buf.flags = FUSE_BUF_IS_FD
                except OSError as e:  # the pipe is replaced before its next use
                    log.debug("read reply copied: splice failed: %s", e)
                    pipe = None
            if pipe is None and total:
                vec.buf.mem = _in_memory(pieces, total)
        except BaseException:
            _libc.free(address)
            raise
        bufpp[0] = ctypes.cast(address, ctypes.POINTER(mfusepy.fuse_bufvec))  # type: ignore[index]

    def close(self) -> None:
        with self._lock:
            for r, w in self._pipes.values():
                os.close(r)
                os.close(w)
            self._pipes.clear()

    def _through(self, pipe: tuple[int, int], pieces: list[Piece]) -> int:
        r, w = pipe
        for p in pieces:
            done = 0
            while done < len(p):
                if p.body.fd >= 0:
                    n = os.splice(p.body.fd, w, len(p) - done, offset_src=p.start + done)
                else:
                    n = os.write(w, p.view[done:])
                if n <= 0:
                    raise OSError(f"read reply: the pipe took {done} of {len(p)} bytes")
                done += n
        return r

    def _pipe(self) -> tuple[int, int] | None:
        """This worker thread's pipe, empty (left non-empty only by a reply libfuse could
        not send: then it is replaced, not drained); None if none can be had."""
        tid = threading.get_native_id()
        pipe = self._pipes.get(tid)
        if pipe is not None and _queued(pipe[0]) == 0:
            return pipe
        with self._lock:
            if pipe is not None:
                self._drop(tid)
            # libfuse ends idle worker threads: their pipes go when a new one appears.
            for other in [t for t in self._pipes if not os.path.exists(f"/proc/self/task/{t}")]:
                self._drop(other)
            try:
                r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                fcntl.fcntl(w, F_SETPIPE_SZ, self._capacity)
            except OSError:  # out of pipe memory (pipe-user-pages-*): copy instead
                os.close(r)
                os.close(w)
                return None
            self._pipes[tid] = (r, w)
            return r, w

    def _drop(self, tid: int) -> None:  # under self._lock
        r, w = self._pipes.pop(tid)
        os.close(r)
        os.close(w)


def _in_memory(pieces: list[Piece], total: int) -> int:
    """The pieces copied into a buffer from malloc, which libfuse frees."""
    address = _libc.malloc(total)
    if not address:
        raise MemoryError("no memory for a read reply")
    try:
        at = address
        for p in pieces:
            view = p.view
            if view.readonly:
                ctypes.memmove(at, bytes(view), len(view))
            else:
                ctypes.memmove(at, (ctypes.c_char * len(view)).from_buffer(view), len(view))
            at += len(view)
    except BaseException:
        _libc.free(address)
        raise
    return address


def size_of(bufv: object) -> int:
    """The bytes a write's `struct fuse_bufvec *` holds."""
    return int(_fuse.fuse_buf_size(ctypes.cast(bufv, ctypes.c_void_p)))


def copy_into(bufv: object, fd: int, offset: int) -> int:
    """A write's bytes into file `fd` at `offset`, by libfuse (see the module); how many
    it took. Raises OSError with the errno libfuse gives."""
    size = size_of(bufv)
    dst = _Bufvec()
    dst.count, dst.idx, dst.off = 1, 0, 0
    dst.buf.size, dst.buf.flags = size, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
    dst.buf.mem, dst.buf.fd, dst.buf.pos = None, fd, offset
    done = _fuse.fuse_buf_copy(ctypes.addressof(dst), ctypes.cast(bufv, ctypes.c_void_p), 0)
    if done < 0:
        raise OSError(-done, os.strerror(-done))
    return int(done)
