"""Rename, as s3fs does it: S3 has no rename, so a file is a server-side copy then a
delete, and a directory is every object below it copied then deleted (not atomic; time
proportional to its size). Open files follow their new names; the caller (filesystem.py)
has checked the POSIX rules and invalidates the caches afterwards."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from run_s3fs.fs import layout
from run_s3fs.fs.core.handles import OpenFile, OpenFiles
from run_s3fs.fs.core.namespace import Namespace
from run_s3fs.fs.engine import Engine, ListEntry
from run_s3fs.fs.layout import Attr

log = logging.getLogger("run_s3fs.fs.ops")

PARALLEL_COPIES = 16


class Renamer:
    def __init__(
        self,
        engine: Engine,
        namespace: Namespace,
        files: OpenFiles,
        after_upload: Callable[[OpenFile], None],
    ) -> None:
        self.engine = engine
        self.ns = namespace
        self.files = files
        self.after_upload = after_upload

    def rename_file(self, old: str, new: str) -> None:
        """s3fs's rename_object: a copy carrying all the metadata, a new ctime and the
        Content-Type of the new name; then the original is deleted."""
        f = self.files.get(old)
        if f is not None and f.flush():
            self.after_upload(f)
        old_key, new_key = self.ns.key(old), self.ns.key(new)
        current = self.engine.head(old_key)
        if current is None:
            raise OSError(errno.ENOENT, "no such file or directory")
        now = time.time_ns()

        def copy() -> str:
            meta = layout.renamed_meta(current.metadata, now)
            ctype = layout.content_type_for(new)
            return self.engine.copy(old_key, new_key, current.size, meta, ctype, current)

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
            self.files.unname(new, target)
        self.engine.delete(old_key)
        if f is not None and etag:
            with f.lock:
                # Its reads are pinned to the copy now.
                f.attr = replace(f.attr, etag=etag, ctime_ns=now)
        self.files.rename(old, new, new_key)

    def dir_keys(self, old: str, new: str) -> list[ListEntry]:
        """Every key below `old/` (open files' pending data uploaded first, so theirs are
        among them); ENAMETOOLONG if one of them would be too long under `new/`, before
        anything is copied: a move is all or nothing as far as names go."""
        for f in self.files.under(old):
            if f.flush():
                self.after_upload(f)
        old_prefix, new_prefix = self.ns.dkey(old), self.ns.dkey(new)
        listed = list(self.engine.iter_keys(old_prefix))
        grow = layout.byte_length(new_prefix) - layout.byte_length(old_prefix)
        longest = max((layout.byte_length(e.key) for e in listed), default=0)
        if longest + grow > layout.KEY_MAX:
            raise OSError(errno.ENAMETOOLONG, f"a key below {new} would exceed 1,024 bytes")
        return listed

    def rename_dir(self, old: str, new: str, attr: Attr, listed: list[ListEntry]) -> None:
        """Every key below `old/` (`listed`: dir_keys) is copied, then the originals
        deleted: not atomic. The directory itself gets a fresh marker with a new ctime,
        as s3fs gives it, whatever it had (a marker, an old-style `dir` object, or
        nothing)."""
        old_prefix, new_prefix = self.ns.dkey(old), self.ns.dkey(new)
        meta = layout.object_meta(replace(attr, ctime_ns=time.time_ns()))
        self.engine.put(new_prefix, b"", meta, layout.DIR_CONTENT_TYPE)
        entries = [e for e in listed if e.key != old_prefix]
        with ThreadPoolExecutor(PARALLEL_COPIES, thread_name_prefix="s3-copy") as pool:
            copies = [
                pool.submit(self.engine.copy, e.key, new_prefix + e.key[len(old_prefix) :], e.size)
                for e in entries
            ]
            etags = {
                new_prefix + e.key[len(old_prefix) :]: c.result()
                for e, c in zip(entries, copies, strict=True)
            }
        old_keys = [e.key for e in listed]
        # An old-style directory object `dir` (no slash) goes too.
        info = self.engine.head(self.ns.key(old))
        if info is not None and self.ns.decode(info).is_dir:
            old_keys.append(info.key)
        self.engine.delete_many(old_keys)
        for f in self.files.under(old):
            new_path = new + f.path[len(old) :]
            new_key = self.ns.key(new_path)
            self.files.rename(f.path, new_path, new_key)
            if etags.get(new_key):
                with f.lock:
                    f.attr = replace(f.attr, etag=etags[new_key])
