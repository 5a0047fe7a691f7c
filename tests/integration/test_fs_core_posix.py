"""The core (run_s3fs.fs.core.Filesystem) without a mount, against the moto server: special
files, name limits, directory times and link counts, as the FUSE adapter would call it."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator

import pytest
from engine_support import make_core
from faultproxy import FaultProxy

from run_s3fs.fs.core.filesystem import Filesystem

MIB = 1024 * 1024


@pytest.fixture
def core(s3_server, bucket, tmp_path) -> Iterator[Filesystem]:
    fs = make_core(s3_server.url, bucket, str(tmp_path))
    yield fs
    fs.engine.close()


@pytest.fixture
def fresh(s3_server, bucket, tmp_path):
    """Another core on the same bucket: what a new mount sees."""
    made: list[Filesystem] = []

    def make() -> Filesystem:
        made.append(make_core(s3_server.url, bucket, str(tmp_path)))
        return made[-1]

    yield make
    for fs in made:
        fs.engine.close()


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.mark.parametrize(
    ("kind", "dev"),
    [(stat.S_IFIFO, 0), (stat.S_IFSOCK, 0), (stat.S_IFCHR, 0x0103), (stat.S_IFBLK, 0x712C)],
)
def test_mknod_makes_s3fs_objects_kept_by_chmod_and_rename(core, fresh, s3, bucket, kind, dev):
    core.mknod("/node", kind | 0o640, dev, 7, 8)
    head = s3.head_object(Bucket=bucket, Key="node")
    assert head["ContentLength"] == 0 and head["ContentType"] == "application/octet-stream"
    assert head["Metadata"]["mode"] == str(kind | 0o640)
    assert head["Metadata"].get("rdev") == (str(dev) if dev else None)
    core.chmod("/node", 0o600)
    core.rename("/node", "/moved")
    assert [name for name, _ in core.readdir("/")[2:]] == ["moved"]
    for fs in (core, fresh()):
        attr = fs.getattr("/moved")
        assert (attr.mode, attr.rdev, attr.uid, attr.gid) == (kind | 0o600, dev, 7, 8)
    assert errno_of(core.mknod, "/moved", stat.S_IFIFO | 0o600, 0, 0, 0) == errno.EEXIST
    core.unlink("/moved")
    assert keys(s3, bucket) == []


def test_mknod_of_a_directory_type_is_einval(core, s3, bucket):
    assert errno_of(core.mknod, "/d", stat.S_IFDIR | 0o755, 0, 0, 0) == errno.EINVAL
    assert keys(s3, bucket) == []


def test_names_too_long_are_refused_before_any_request(core, s3, bucket):
    long = "/" + "n" * 256
    core.mkdir("/dir", 0o755, 0, 0)
    core.symlink("/link", "dir", 0, 0)
    makers = [
        (core.mkdir, long, 0o755, 0, 0),
        (core.create, long, 0o644, os.O_WRONLY, 0, 0),
        (core.symlink, long, "dir", 0, 0),
        (core.mknod, long, stat.S_IFIFO | 0o644, 0, 0, 0),
        (core.rename, "/dir", long),
        (core.rename, "/link", long),
        (core.getattr, long),
        (core.chmod, long, 0o600),
        (core.chown, long, 1, 1),
        (core.truncate, long, 0),
        (core.unlink, long),
        (core.rmdir, long),
        (core.readlink, long),
    ]
    for fn, *args in makers:
        assert errno_of(fn, *args) == errno.ENAMETOOLONG, fn.__name__
    assert errno_of(core.symlink, "/l2", "t" * 4096, 0, 0) == errno.ENAMETOOLONG
    assert keys(s3, bucket) == ["dir/", "link"]


def test_the_mount_prefix_counts_in_the_key_limit(s3_server, s3, bucket, tmp_path):
    fs = make_core(s3_server.url, bucket, str(tmp_path), prefix="p" * 100 + "/")
    try:
        name = "/" + "/".join(["d" * 200] * 4) + "/" + "f" * 119  # 1,024 bytes with it
        parent = name.rsplit("/", 1)[0]
        for i in range(1, 5):
            fs.mkdir("/" + "/".join(["d" * 200] * i), 0o755, 0, 0)
        fs.release(fs.create(name, 0o644, os.O_WRONLY, 0, 0))
        assert errno_of(fs.create, name + "g", 0o644, os.O_WRONLY, 0, 0) == errno.ENAMETOOLONG
        assert errno_of(fs.mkdir, name[:-1] + "h", 0o755, 0, 0) == errno.ENAMETOOLONG
        assert [n for n, _ in fs.readdir(parent)[2:]] == ["f" * 119]
    finally:
        fs.engine.close()


def test_directory_rename_checks_every_key_first(core, s3, bucket):
    core.mkdir("/a", 0o755, 0, 0)
    core.mkdir("/a/" + "s" * 250, 0o755, 0, 0)
    deep = "/a/" + "s" * 250 + "/" + "t" * 250 + "/" + "u" * 250 + "/" + "v" * 250
    for i in range(3, 6):
        core.mkdir("/".join(deep.split("/")[: i + 1]), 0o755, 0, 0)
    # "a/" + 4 × 251 = 1,006 bytes: a file name of 18 makes a key of 1,024.
    core.release(core.create(deep + "/" + "f" * 18, 0o644, os.O_WRONLY, 0, 0))
    before = keys(s3, bucket)
    assert max(len(k) for k in before) == 1024
    assert errno_of(core.rename, "/a", "/abc") == errno.ENAMETOOLONG
    assert keys(s3, bucket) == before
    core.rename("/a", "/b")  # the same length: fine
    assert len(keys(s3, bucket)) == len(before) and not core.exists("/a")


def test_entry_changes_advance_the_directory_times_here_only(core, fresh):
    core.mkdir("/d", 0o755, 0, 0)
    past = (int(time.time()) - 3600) * 10**9
    core.utimens("/d", past, past)
    assert core.getattr("/d").mtime_ns == past
    steps = [
        lambda: core.release(core.create("/d/f", 0o644, os.O_WRONLY, 0, 0)),
        lambda: core.mkdir("/d/sub", 0o755, 0, 0),
        lambda: core.mknod("/d/fifo", stat.S_IFIFO | 0o644, 0, 0, 0),
        lambda: core.symlink("/d/l", "f", 0, 0),
        lambda: core.rename("/d/f", "/d/g"),
        lambda: core.rename("/d/g", "/g"),
        lambda: core.unlink("/d/l"),
        lambda: core.rmdir("/d/sub"),
    ]
    last = core.getattr("/d")
    for step in steps:
        step()
        now = core.getattr("/d")
        assert now.mtime_ns > last.mtime_ns and now.ctime_ns > last.ctime_ns
        last = now
    assert core.getattr("/").mtime_ns > past  # the root's too (`/g` came in)
    assert fresh().getattr("/d").mtime_ns == past  # stored later, see README
    core.save_dir_times()
    assert fresh().getattr("/d").mtime_ns // 10**9 == last.mtime_ns // 10**9
    core.utimens("/d", past, past)  # times set explicitly are the truth again
    assert core.getattr("/d").mtime_ns == past
    core.save_dir_times()
    assert fresh().getattr("/d").mtime_ns == past


def test_link_counts(core, fresh):
    core.mkdir("/d", 0o755, 0, 0)
    assert core.getattr("/d").nlink == 2
    for name in ("a", "b"):
        core.mkdir(f"/d/{name}", 0o755, 0, 0)
    core.release(core.create("/d/f", 0o644, os.O_WRONLY, 0, 0))
    assert core.getattr("/d").nlink == 4
    core.rename("/d/a", "/a")
    assert (core.getattr("/d").nlink, core.getattr("/a").nlink) == (3, 2)
    core.rename("/a", "/d/b")  # over an empty directory: still one
    assert core.getattr("/d").nlink == 3
    other = fresh()
    assert other.getattr("/d").nlink == 1  # not listed yet: unknown
    other.readdir("/d")
    assert other.getattr("/d").nlink == 3
    assert other.getattr("/d/f").nlink == 1


def test_an_unlinked_open_file_has_no_links(core):
    fh = core.create("/f", 0o644, os.O_WRONLY, 0, 0)
    core.write(fh, b"data", 0)
    core.release(fh)
    fh = core.open("/f", os.O_RDONLY)[0]
    core.unlink("/f")
    attr = core.getattr(None, fh)  # what libfuse passes for a file without a name
    assert (attr.nlink, attr.size) == (0, 4)
    assert core.read(fh, 0, 10) == b"data"
    core.release(fh)


def test_libfuse_hiding_an_open_file_is_an_unlink_that_keeps_it_open(core, fresh, s3, bucket):
    # Without hard_remove libfuse renames a file unlinked while open to a hidden name and
    # unlinks that name at the last close: S3 sees one DELETE and never the hidden name.
    fh = core.create("/f", 0o644, os.O_WRONLY, 0, 0)
    core.write(fh, b"data", 0)
    core.release(fh)
    fh = core.open("/f", os.O_RDWR)[0]
    hidden = "/.fuse_hidden0000000200000001"
    core.rename("/f", hidden)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == []
    with pytest.raises(OSError) as info:
        fresh().getattr("/f")
    assert info.value.errno == errno.ENOENT
    assert [name for name, _ in core.readdir("/")] == [".", ".."]
    attr = core.getattr(hidden)
    assert (attr.nlink, attr.size) == (1, 4)  # libfuse shows a hidden file's count - 1
    core.write(fh, b"more", 4)
    core.chmod(hidden, 0o600)
    assert stat.S_IMODE(core.getattr(hidden).mode) == 0o600
    assert core.read(fh, 0, 10) == b"datamore"
    core.release(fh)
    core.unlink(hidden)  # libfuse's, after the last close: nothing to ask S3
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_metadata_set_after_close_before_release_is_in_s3_at_once(core, s3, bucket):
    # The kernel sends RELEASE after close() has returned, so chmod/setxattr may come
    # while the file is still open here, its data uploaded at flush: they must reach S3
    # before they return, not at a release that comes whenever it comes.
    fh = core.create("/f", stat.S_IFREG | 0o644, os.O_WRONLY, 0, 0)
    core.write(fh, b"data", 0)
    core.flush(fh)  # close() returns here
    core.setxattr("/f", "user.k", b"v", 0)
    core.chmod("/f", 0o600)
    head = s3.head_object(Bucket=bucket, Key="f")
    assert "xattr" in head["Metadata"]
    assert int(head["Metadata"]["mode"]) & 0o777 == 0o600
    core.release(fh)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"data"


def test_storing_directory_times_keeps_everything_else(core, fresh, s3, bucket):
    core.mkdir("/d", 0o755, 5, 6)
    core.setxattr("/d", "user.k", b"v", 0)
    core.chmod("/d", 0o1777)
    core.mknod("/d/p", stat.S_IFIFO | 0o600, 0, 0, 0)
    before = s3.head_object(Bucket=bucket, Key="d/")["Metadata"]
    core.save_dir_times()
    after = s3.head_object(Bucket=bucket, Key="d/")["Metadata"]
    assert after["mtime"] > before["mtime"]
    assert {k: v for k, v in after.items() if k not in ("mtime", "ctime")} == {
        k: v for k, v in before.items() if k not in ("mtime", "ctime")
    }
    attr = fresh().getattr("/d")
    assert (attr.mode, attr.uid, attr.gid) == (stat.S_IFDIR | 0o1777, 5, 6)
    assert attr.mtime_ns // 10**9 == core.getattr("/d").mtime_ns // 10**9


def test_a_file_replaced_before_its_first_read_is_read_in_its_new_version(core, s3, bucket):
    old, new = b"o" * (2 * MIB), b"n" * (2 * MIB)
    s3.put_object(Bucket=bucket, Key="r", Body=old)
    fh, keep, _ = core.open("/r", os.O_RDONLY)
    assert not keep  # first open: the kernel drops any pages it had
    s3.put_object(Bucket=bucket, Key="r", Body=new)  # another client, same size
    assert bytes(core.read(fh, MIB, 4096)) == new[:4096]  # not ESTALE: nothing read yet
    core.release(fh)


def test_a_file_replaced_after_a_read_fails_with_estale_rather_than_mixing(core, s3, bucket):
    # (Past the first 2 MiB, which come with the first read, of the version opened.)
    old, new = b"o" * (8 * MIB), b"n" * (8 * MIB)
    s3.put_object(Bucket=bucket, Key="m", Body=old)
    fh = core.open("/m", os.O_RDONLY).fh
    assert bytes(core.read(fh, 0, 4096)) == old[:4096]
    s3.put_object(Bucket=bucket, Key="m", Body=new)
    with pytest.raises(OSError) as e:
        core.read(fh, 6 * MIB, 4096)
    assert e.value.errno == errno.ESTALE
    core.release(fh)


def test_of_two_reads_in_flight_when_the_file_is_replaced_only_one_version_is_delivered(
    s3_server, s3, bucket, tmp_path
):
    # The kernel sends a file's reads several at once. One may still be fetching the
    # version the file was opened at when another finds it replaced and, nothing of it
    # having been delivered yet, goes on with the new version: then the first one's
    # bytes, of the old version, must not be delivered too: it is read again, in the new.
    size = 16 * MIB
    old, new = b"o" * size, b"n" * size
    s3.put_object(Bucket=bucket, Key="r", Body=old)
    proxy = FaultProxy(s3_server.url).start()
    held = proxy.hold(
        lambda command, _path, headers: (
            command == "GET" and headers.get("range", "").startswith(f"bytes={4 * MIB}-")
        )
    )
    core = make_core(proxy.url, bucket, str(tmp_path))
    try:
        fh = core.open("/r", os.O_RDONLY).fh
        first: list[bytes | int] = []

        def read_first() -> None:
            try:
                first.append(bytes(core.read(fh, 4 * MIB, 4096)))
            except OSError as e:
                first.append(e.errno)

        reading = threading.Thread(target=read_first)
        reading.start()
        assert held.reached.wait(30), "the first read's GET never came"
        s3.put_object(Bucket=bucket, Key="r", Body=new)  # another client, same size
        second = bytes(core.read(fh, 12 * MIB, 4096))  # goes on with the new version
        held.release()
        reading.join(30)
        assert second == new[:4096]
        assert first == [new[:4096]]  # before: the old version's bytes, a mix
        core.release(fh)
    finally:
        held.release()
        core.engine.close()
        proxy.stop()


def test_an_open_after_a_replacement_gets_the_new_version_while_the_old_is_open(
    s3_server, s3, bucket, tmp_path
):
    # Readers that overlap (one opens before the last closes) must not pin the file to
    # the version the first of them opened: each open after a replacement sees it.
    core = make_core(s3_server.url, bucket, str(tmp_path))
    try:
        versions = [bytes([65 + n]) * (MIB + n) for n in range(3)]
        s3.put_object(Bucket=bucket, Key="v", Body=versions[0])
        held = core.open("/v", os.O_RDONLY).fh
        assert bytes(core.read(held, 0, 4096)) == versions[0][:4096]
        for n in (1, 2):
            s3.put_object(Bucket=bucket, Key="v", Body=versions[n])
            core.ns.forget("/v")  # as after kernel_timeout: the next open asks S3
            fh, keep, _ = core.open("/v", os.O_RDONLY)
            assert not keep  # the kernel must drop its pages of the old version
            assert core.getattr("/v").size == len(versions[n])
            assert core.getattr(None, fh).size == len(versions[n])
            assert bytes(core.read(fh, MIB - 8, 4096)) == versions[n][MIB - 8 :]
            core.release(held)
            held = fh
        core.release(held)
        assert core.files.all() == []
    finally:
        core.engine.close()


def test_a_new_version_opened_while_an_older_is_read_through_the_kernels_pages_is_direct(
    core, s3, bucket
):
    # One inode, one set of pages: the older reader would fill them with its version.
    s3.put_object(Bucket=bucket, Key="p", Body=b"1" * 100)
    old = core.open("/p", os.O_RDONLY)
    assert not old.direct_io
    s3.put_object(Bucket=bucket, Key="p", Body=b"2" * 200)
    core.ns.forget("/p")
    new = core.open("/p", os.O_RDONLY)
    assert new.direct_io and not new.keep_cache
    joined = core.open("/p", os.O_RDONLY)  # same new version, older still open
    assert joined.direct_io
    assert bytes(core.read(new.fh, 0, 300)) == b"2" * 200
    assert bytes(core.read(old.fh, 0, 300)) == b"1" * 100
    core.release(old.fh)
    # The older is closed: the next open reads through the pages again, after the kernel
    # drops those the older one left.
    cached = core.open("/p", os.O_RDONLY)
    assert not cached.direct_io and not cached.keep_cache
    assert bytes(core.read(cached.fh, 0, 300)) == b"2" * 200  # its open has returned
    again = core.open("/p", os.O_RDONLY)
    assert not again.direct_io and again.keep_cache
    for opened in (new, joined, cached, again):
        core.release(opened.fh)
    assert core.files.all() == []


def test_an_open_keeps_the_kernels_pages_only_once_the_open_that_dropped_them_returned(
    core, s3, bucket
):
    # The kernel drops a file's pages when an open that does not keep them returns to
    # its caller, after our answer. Another open answered meanwhile must not keep them:
    # its reader could read the old pages before they go, and the rest from us (before:
    # kept, and test_concurrency's readers saw two versions in one read).
    s3.put_object(Bucket=bucket, Key="k", Body=b"k" * 100)
    first = core.open("/k", os.O_RDONLY)
    second = core.open("/k", os.O_RDONLY)
    assert not first.keep_cache and not second.keep_cache
    core.release(second.fh)  # released unread: its open may never have returned
    assert not core.open("/k", os.O_RDONLY).keep_cache
    assert bytes(core.read(first.fh, 0, 100)) == b"k" * 100  # first's open has returned
    assert core.open("/k", os.O_RDONLY).keep_cache


def test_a_file_one_handle_read_through_kept_pages_never_goes_on_with_a_new_version(
    core, s3, bucket
):
    # A handle that kept the kernel's pages may have read some of them, which we never
    # see. A later open that drops the pages (here the path's entry went with a rename)
    # must not make the file renewable: that reader would go on in another version.
    s3.put_object(Bucket=bucket, Key="a", Body=b"1" * (2 * MIB))
    first = core.open("/a", os.O_RDONLY).fh
    assert bytes(core.read(first, 0, 10)) == b"1" * 10
    core.release(first)
    kept = core.open("/a", os.O_RDONLY)
    assert kept.keep_cache  # its reader reads the kernel's pages, not through us
    core.rename("/a", "/b")
    dropping = core.open("/b", os.O_RDONLY)
    assert not dropping.keep_cache
    s3.put_object(Bucket=bucket, Key="b", Body=b"2" * (2 * MIB))  # another client
    with pytest.raises(OSError) as e:
        core.read(kept.fh, MIB, 4096)  # before: b"2" * 4096, after pages of b"1"
    assert e.value.errno == errno.ESTALE
    core.release(kept.fh)
    core.release(dropping.fh)


def test_an_open_of_a_file_written_here_shares_its_unsaved_content(core, s3, bucket):
    s3.put_object(Bucket=bucket, Key="w", Body=b"old")
    writer = core.open("/w", os.O_RDWR).fh
    core.write(writer, b"new", 0)
    s3.put_object(Bucket=bucket, Key="w", Body=b"other")  # another client, meanwhile
    core.ns.forget("/w")
    reader = core.open("/w", os.O_RDONLY).fh
    assert bytes(core.read(reader, 0, 10)) == b"new"  # this mount's writes, not S3's
    assert core.getattr("/w").size == 3
    core.release(reader)
    core.release(writer)
    assert s3.get_object(Bucket=bucket, Key="w")["Body"].read() == b"new"


def test_stat_of_a_file_open_here_unchanged_shows_a_replacement(core, s3, bucket):
    # The kernel's getattr before an open must see the size the open will read.
    s3.put_object(Bucket=bucket, Key="s", Body=b"a" * 10)
    fh = core.open("/s", os.O_RDONLY).fh
    s3.put_object(Bucket=bucket, Key="s", Body=b"b" * 20)
    core.ns.forget("/s")  # as after the stat cache's expiry
    assert core.getattr("/s").size == 20
    assert core.getattr(None, fh).size == 10  # fstat: the handle's own version
    core.release(fh)


def test_another_mounts_new_file_shows_at_its_first_lookup_here(core, fresh, s3, bucket):
    """Close-to-open across mounts: a directory's lookup here lists it, but that listing
    is no answer for a name made elsewhere afterwards, which has never been asked here."""
    s3.put_object(Bucket=bucket, Key="shared/old", Body=b"o")
    assert core.lookup("/shared").is_dir  # its first page: the whole directory
    other = fresh()
    fh = other.create("/shared/new", 0o644, os.O_WRONLY, 0, 0)
    other.write(fh, b"made by the other mount", 0)
    other.flush(fh)
    other.release(fh)
    assert core.lookup("/shared/new").size == len(b"made by the other mount")
