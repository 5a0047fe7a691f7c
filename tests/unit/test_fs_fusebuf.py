"""Read replies for libfuse's read_buf (run_s3fs/fs/fusebuf.py): what libfuse is handed
holds the read's bytes in order, through a pipe of spliced pages or in memory.

libfuse is stood in for by reading the reply the way it does (the fd buffer's bytes
from the pipe, or the memory buffer), then freeing it with libc's free as it does.
"""

from __future__ import annotations

import ctypes
import os

import mfusepy
import pytest

from run_s3fs.fs import fusebuf
from run_s3fs.fs.engine.types import Body, Piece

PAGE = fusebuf.PAGE


def memfd_body(data: bytes) -> Body:
    fd = os.memfd_create("test-body", os.MFD_CLOEXEC)
    os.write(fd, data)
    return Body(fd, len(data))


def new_slot() -> tuple[object, object]:
    """A `struct fuse_bufvec *` for the reply and the pointer to it libfuse passes."""
    slot = ctypes.POINTER(mfusepy.fuse_bufvec)()
    return slot, ctypes.pointer(slot)


def take_reply(slot: object) -> tuple[bytes, bool]:
    """(the reply's bytes, whether it came through a pipe); frees it as libfuse does."""
    address = ctypes.cast(slot, ctypes.c_void_p).value
    vec = fusebuf._Bufvec.from_address(address)
    assert (vec.count, vec.idx, vec.off) == (1, 0, 0)
    size = vec.buf.size
    through_pipe = bool(vec.buf.flags & fusebuf.FUSE_BUF_IS_FD)
    if through_pipe:
        data = b""
        while len(data) < size:
            data += os.read(vec.buf.fd, size - len(data))
        assert fusebuf._queued(vec.buf.fd) == 0  # exactly the reply's bytes
    else:
        data = ctypes.string_at(vec.buf.mem, size) if size else b""
        fusebuf._libc.free(vec.buf.mem)
    fusebuf._libc.free(address)
    return data, through_pipe


def reply(replies: fusebuf.Replies, pieces: list[Piece]) -> tuple[bytes, bool]:
    slot, bufpp = new_slot()
    replies.fill(bufpp, pieces)
    return take_reply(slot)


@pytest.fixture
def splicing() -> fusebuf.Replies:
    class Conn:
        capable = fusebuf.FUSE_CAP_SPLICE_WRITE
        want = 0

    replies = fusebuf.Replies()
    replies.start(Conn(), fusebuf.read_size())
    if not replies.splicing:
        pytest.skip("a pipe cannot hold 1 MiB and a header here (not root?)")
    yield replies
    replies.close()


def test_a_read_across_two_blocks_comes_through_the_pipe_in_order(splicing) -> None:
    a, b = os.urandom(3 * PAGE), os.urandom(5 * PAGE)
    pieces = [Piece(memfd_body(a), PAGE, 3 * PAGE), Piece(memfd_body(b), 0, 4 * PAGE)]
    data, through_pipe = reply(splicing, pieces)
    assert through_pipe
    assert data == a[PAGE:] + b[: 4 * PAGE]


def test_the_pipe_holds_pages_not_the_file_a_dropped_block_still_replies(splicing) -> None:
    # A block may be dropped (its memfd closed) as soon as fill returns, before libfuse
    # reads the pipe: the bytes must still be the block's.
    data = os.urandom(8 * PAGE)
    body = memfd_body(data)
    slot, bufpp = new_slot()
    splicing.fill(bufpp, [Piece(body, 0, 8 * PAGE)])
    fd = body.fd
    del body  # closes the memfd
    with pytest.raises(OSError):
        os.fstat(fd)
    assert take_reply(slot) == (data, True)


def test_bytes_in_memory_and_unaligned_pieces_are_whole_either_way(splicing) -> None:
    whole = os.urandom(300 * PAGE)
    in_memory = Piece(Body.of(b"head"), 0, 4)
    # 1 MiB from an unaligned start touches 257 pages: more than the pipe's slots allow
    # on a 1 MiB pipe, so this may come in memory; either way, all of it, in order.
    unaligned = Piece(memfd_body(whole), 100, 100 + 1024 * 1024)
    for pieces in ([in_memory], [in_memory, unaligned], [unaligned]):
        data, _ = reply(splicing, pieces)
        assert data == b"".join(bytes(p.view) for p in pieces)


def test_a_pipe_left_full_by_a_failed_reply_is_replaced(splicing) -> None:
    body = memfd_body(os.urandom(2 * PAGE))
    slot, bufpp = new_slot()
    splicing.fill(bufpp, [Piece(body, 0, PAGE)])
    fusebuf._libc.free(
        ctypes.cast(slot, ctypes.c_void_p).value
    )  # "libfuse" never read it: the pipe still holds a page
    data, through_pipe = reply(splicing, [Piece(body, PAGE, 2 * PAGE)])
    assert through_pipe
    assert data == bytes(body.view[PAGE:])


def test_without_splicing_replies_are_memory_buffers() -> None:
    replies = fusebuf.Replies()  # never started: libfuse did not offer splice
    data = os.urandom(3 * PAGE + 5)
    assert reply(replies, [Piece(memfd_body(data), 5, len(data))]) == (data[5:], False)
    assert reply(replies, [Piece(Body.of(b""), 0, 0)]) == (b"", False)


def test_splicing_is_asked_of_libfuse_only_where_it_is_offered() -> None:
    class Conn:
        capable = 0
        want = 0

    conn = Conn()
    replies = fusebuf.Replies()
    replies.start(conn, 1024 * 1024)
    assert not replies.splicing and conn.want == 0


def test_the_bufvec_is_laid_out_as_libfuse_declares_it() -> None:
    # struct fuse_bufvec { size_t count, idx, off; struct fuse_buf buf[1]; }
    assert fusebuf._Bufvec.buf.offset == 3 * ctypes.sizeof(ctypes.c_size_t)
    assert ctypes.sizeof(fusebuf._Bufvec) == 3 * 8 + ctypes.sizeof(mfusepy.fuse_buf)


def test_reads_are_sized_so_that_a_pipe_holds_one_with_libfuses_spare_pages() -> None:
    size = fusebuf.read_size()
    assert size in (fusebuf.MIB, fusebuf.MIB - fusebuf.SPARE)
    if fusebuf._pipe_can_hold(fusebuf.MIB):
        assert fusebuf._pipe_can_hold(size + fusebuf.SPARE)
