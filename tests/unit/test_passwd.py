"""The passwd file: content, mode 0600 whatever the umask, atomic replace, no needless
rewrite, refusal of symlinks, non-files and directories others can write."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from run_s3fs import passwd
from run_s3fs.config import load
from run_s3fs.errors import CantCreateError

ACCESS = "AKIAPASSWDTEST123456"
SECRET = "pAsSwDsEcReT/0123456789abcdefghijklmnopq"


@pytest.fixture
def cfg():
    return load(
        {},
        {
            "S3FS_BUCKET": "pw-bucket",
            "S3FS_MOUNTPOINT": "/srv/store",
            "S3FS_ACCESSKEY": ACCESS,
            "S3FS_SECRETKEY": SECRET,
        },
        None,
        None,
    )


@pytest.fixture
def umask000():
    old = os.umask(0)
    yield
    os.umask(old)


def test_content_is_one_s3fs_line(cfg) -> None:
    assert passwd.content(cfg).reveal() == f"{ACCESS}:{SECRET}\n"
    assert SECRET not in passwd.redacted_content(cfg)
    assert SECRET not in repr(passwd.content(cfg))


def test_written_0600_under_umask_000(tmp_path: Path, cfg, umask000) -> None:
    path = tmp_path / "passwd"
    assert passwd.write(path, passwd.content(cfg)) is True
    st = os.lstat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert path.read_text() == f"{ACCESS}:{SECRET}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"]  # no temp file left


def test_private_default_dir_is_0700_under_umask_000(tmp_path: Path, cfg, umask000) -> None:
    path = tmp_path / "deep" / "run-s3fs" / "x.passwd"
    passwd.write(path, passwd.content(cfg), private_dir=True)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_private_dir_mode_is_repaired(tmp_path: Path, cfg) -> None:
    d = tmp_path / "run-s3fs"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    passwd.write(d / "x.passwd", passwd.content(cfg), private_dir=True)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_not_rewritten_when_unchanged(tmp_path: Path, cfg) -> None:
    path = tmp_path / "passwd"
    passwd.write(path, passwd.content(cfg))
    before = os.stat(path)
    assert passwd.write(path, passwd.content(cfg)) is False
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_rewritten_atomically_when_changed(tmp_path: Path, cfg) -> None:
    path = tmp_path / "passwd"
    path.write_text("OLDKEY:OLDSECRET\n")
    path.chmod(0o600)
    old_inode = os.stat(path).st_ino
    assert passwd.write(path, passwd.content(cfg)) is True
    # A new inode renamed over the old name: a reader never sees a half-written file.
    assert os.stat(path).st_ino != old_inode
    assert path.read_text() == f"{ACCESS}:{SECRET}\n"


def test_wrong_mode_is_fixed_even_with_same_content(tmp_path: Path, cfg) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"{ACCESS}:{SECRET}\n")
    path.chmod(0o644)
    assert passwd.write(path, passwd.content(cfg)) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_no_partial_file_is_ever_visible(tmp_path: Path) -> None:
    """A reader polling the path while it is rewritten sees only whole files, always 0600."""
    path = tmp_path / "passwd"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, stat, sys, time\n"
            f"p = {str(path)!r}\n"
            "bad = reads = 0\n"
            "end = time.monotonic() + 3\n"
            "while time.monotonic() < end and not os.path.exists(p + '.stop'):\n"
            "    try:\n"
            "        fd = os.open(p, os.O_RDONLY)\n"
            "    except FileNotFoundError:\n"
            "        continue\n"
            "    mode = stat.S_IMODE(os.fstat(fd).st_mode)\n"
            "    data = os.read(fd, 4096)\n"
            "    os.close(fd)\n"
            "    reads += 1\n"
            "    if mode != 0o600 or not data.endswith(b'\\n') or data.count(b':') != 1:\n"
            "        bad += 1\n"
            "print(bad, reads)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    import time

    from run_s3fs.config import Secret

    end, i = time.monotonic() + 1.0, 0
    while time.monotonic() < end:
        i += 1
        passwd.write(path, Secret(f"AKIA{i:016d}:{'s' * (40 + i % 7)}\n"))
    (tmp_path / "passwd.stop").touch()
    out, _ = reader.communicate(timeout=30)
    bad, reads = map(int, out.split())
    assert reads > 10  # the reader really raced the writer
    assert bad == 0


def test_symlink_refused(tmp_path: Path, cfg) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("x")
    link = tmp_path / "passwd"
    link.symlink_to(target)
    with pytest.raises(CantCreateError, match="symbolic link"):
        passwd.write(link, passwd.content(cfg))
    assert target.read_text() == "x"
    assert link.is_symlink()


def test_directory_at_path_refused(tmp_path: Path, cfg) -> None:
    (tmp_path / "passwd").mkdir()
    with pytest.raises(CantCreateError, match="not a regular file") as err:
        passwd.write(tmp_path / "passwd", passwd.content(cfg))
    assert err.value.exit_code == 73


def test_world_writable_parent_refused(tmp_path: Path, cfg) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(CantCreateError, match="writable by other users"):
        passwd.write(shared / "passwd", passwd.content(cfg))
    assert list(shared.iterdir()) == []


def test_uncreatable_directory_is_73(tmp_path: Path, cfg) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CantCreateError) as err:
        passwd.write(tmp_path / "file" / "sub" / "passwd", passwd.content(cfg), private_dir=True)
    assert err.value.exit_code == 73
    assert SECRET not in str(err.value)


def test_default_locations(cfg) -> None:
    root = passwd.default_path(cfg, {"HOME": "/root"}, 0)
    assert root.parent == Path("/run/run-s3fs") and root.name.startswith("pw-bucket.")
    user = passwd.default_path(cfg, {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"}, 1000)
    assert user.parent == Path("/run/user/1000/run-s3fs")
    bare = passwd.default_path(cfg, {"HOME": "/home/u"}, 1000)
    assert bare.parent == Path("/home/u/.run-s3fs")


def test_default_name_differs_per_mountpoint(cfg) -> None:
    from dataclasses import replace

    other = replace(cfg, mountpoint=Path("/srv/other"))
    assert passwd.default_path(cfg, {}, 0) != passwd.default_path(other, {}, 0)


def test_missing_parent_of_chosen_path_is_created_private(tmp_path: Path, cfg, umask000) -> None:
    path = tmp_path / "new" / "dir" / "passwd"
    passwd.write(path, passwd.content(cfg))
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.read_text() == f"{ACCESS}:{SECRET}\n"
