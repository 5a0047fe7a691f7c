"""What each path is: lookups, directory listings, their caches, and how our own changes
keep those caches right. Knows nothing of open files (filesystem.py lays those over it).

Where an answer comes from, cheapest first: the stat cache (`stat_cache_expire`; "no
such path" kept `negative_ttl`); a recent readdir of the parent that lacks the name
(kept as long); the attributes fetched ahead for a listed entry (prefetch.py); for a
directory, a listing of it a walk fetched ahead (its marker unchanged, or keys below and
no marker); S3: a HEAD of the key, then a LIST of `key/`'s first page, which tells a
directory marker from an implicit directory (asked together, with the marker's HEAD,
where the parent's last listing had no such name, or had it as a directory).
Other mounts' changes are seen when entries expire; readdir always lists anew.

Two things only this mount knows are kept beside the caches: when it last added or
removed an entry of each directory (its mtime and ctime as shown here; stored in the
marker later, a copy per directory per round rather than one per change: see
Filesystem.save_dir_times), and how many subdirectories a directory has, as its last
listing and our own changes since say (its st_nlink).
"""

from __future__ import annotations

import errno
import posixpath
import stat
import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime

from run_s3fs.fs import layout
from run_s3fs.fs.core.caches import Bounded, in_tree
from run_s3fs.fs.core.prefetch import NOT_LISTED, AttrsAhead, ListingsAhead
from run_s3fs.fs.engine import Engine, ListEntry, ObjectInfo, Page
from run_s3fs.fs.layout import Attr

MISSING = object()  # cached "no such path"
MAX_LISTED_DIRS = 1000
# Keys the listing that looks a directory up asks for. A directory this small is then
# known whole (`hints`), which says which names in it are likely free; a larger one only
# costs a longer first page, once a stat_ttl.
LOOKUP_PAGE = 200
# Lookups in a row that found nothing in a directory with no hint, after which the next
# asks both of its questions at once (see Namespace.misses).
MISSES_IN_A_ROW = 2
MAX_DIR_TIMES = 100_000  # directories whose entries changed here (~200 bytes each)


def seconds(when: datetime | None) -> int:
    return int(when.timestamp()) if when else 0


def as_dir(attr: Attr) -> Attr:
    """A marker's attributes; a marker with a file mode is a directory all the same (the
    key decides)."""
    if attr.is_dir:
        return attr
    return replace(attr, mode=stat.S_IFDIR | stat.S_IMODE(attr.mode), size=0)


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    empty: bool = False  # a zero-byte object: maybe an old-style directory object


@dataclass(frozen=True)
class NamespaceSettings:
    prefix: str  # "" or "sub/path/": the mount's place in the bucket
    uid: int  # who implicit directories and objects without an owner belong to
    gid: int
    stat_ttl: float
    negative_ttl: float
    max_entries: int
    max_in_flight: int  # HEADs fetched ahead at once
    compat_dir: bool = False


class Namespace:
    def __init__(self, engine: Engine, settings: NamespaceSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.prefix = settings.prefix
        self.stats: Bounded[str, Attr | object] = Bounded(settings.max_entries, settings.stat_ttl)
        # A readdir's listings answer "no such name" for lookups; kept as briefly as
        # negative stat entries, so names other mounts create appear as soon. readdir
        # always lists anew.
        self.listings: Bounded[str, dict[str, DirEntry]] = Bounded(
            MAX_LISTED_DIRS, settings.negative_ttl
        )
        # The names a listing of a directory saw in it (a readdir's, or its lookup's
        # when the first page held them all), each True where no object had that name,
        # only keys below it (a directory); patched by our own changes. A guess, never
        # an answer (another client may have changed a name since): it only says which
        # questions a lookup asks together. A name not among them is probably free, and
        # one seen as a directory probably still is one: S3 is asked all that decides
        # (an object? a marker? keys below?) at once, not one question after the
        # other: the same requests, one round trip. A file's lookup stays one HEAD.
        self.hints: Bounded[str, dict[str, bool]] = Bounded(MAX_LISTED_DIRS, settings.stat_ttl)
        # key → (ETag, Last-Modified second, Attr). An object's headers change only with
        # its ETag (content) or its Last-Modified (a metadata-replacing copy bumps it),
        # so a listing entry carrying the same pair proves the cached attributes still
        # hold: a re-listed directory needs no HEAD per entry.
        self.objects: Bounded[str, tuple[str, int, Attr]] = Bounded(settings.max_entries)
        self.attrs_ahead = AttrsAhead(
            self._fetch_listed, self._store_listed, settings.stat_ttl, settings.max_in_flight
        )
        self.listings_ahead = ListingsAhead(
            lambda path: engine.list_dir_async(self.dkey(path)), settings.negative_ttl
        )
        # path → when an entry was last added or removed here (ns), until the mount ends.
        self.dir_times: Bounded[str, int] = Bounded(MAX_DIR_TIMES)
        self._unsaved_times: set[str] = set()  # of those, the ones not in S3 yet
        self._unsaved_lock = threading.Lock()
        # path → number of subdirectories, from a listing (or a mkdir here), as long as
        # attributes are kept; patched by our own mkdir, rmdir and renames.
        self.subdirs: Bounded[str, int] = Bounded(settings.max_entries, settings.stat_ttl)
        # Directory → how many lookups in a row found nothing there, where no hint says
        # which names are free (a directory too large for one page): files being made
        # one after the other. After MISSES_IN_A_ROW, lookups there ask both questions
        # at once until one finds something.
        self.misses: Bounded[str, int] = Bounded(MAX_LISTED_DIRS, settings.stat_ttl)

    # --- keys and attributes ----------------------------------------------------------

    def key(self, path: str) -> str:
        return layout.path_to_key(path, self.prefix)

    def dkey(self, path: str) -> str:
        return layout.dir_key(path, self.prefix)

    def decode(self, info: ObjectInfo) -> Attr:
        s = self.settings
        attr = layout.decode_attr(
            info.key,
            info.metadata,
            info.content_type,
            info.size,
            info.last_modified,
            s.uid,
            s.gid,
            info.etag,
        )
        if info.etag:
            self.objects.put(info.key, (info.etag, seconds(info.last_modified), attr))
        return attr

    def _as_dir(self, info: ObjectInfo) -> Attr:
        return as_dir(self.decode(info))

    def implicit_dir(self) -> Attr:
        return layout.implicit_dir_attr(self.settings.uid, self.settings.gid)

    # --- the stat cache ---------------------------------------------------------------

    def cached(self, path: str, max_age: float | None = None) -> Attr | object | None:
        """The cached Attr, MISSING for a cached absence, or None if nothing (fresh
        enough) is known."""
        return self.stats.get(path, max_age)

    def store(self, path: str, attr: Attr | None) -> None:
        if attr is None:
            self.stats.put(path, MISSING, self.settings.negative_ttl)
        else:
            self.stats.put(path, attr)

    def forget(self, path: str) -> None:
        self.stats.pop(path)

    # --- lookups ----------------------------------------------------------------------

    def lookup(self, path: str) -> Attr:
        """Attributes of `path` (as stored, before mount overrides), or ENOENT."""
        cached = self.stats.get(path)
        if cached is MISSING:
            raise OSError(errno.ENOENT, "no such file or directory")
        if isinstance(cached, Attr):
            return cached
        parent, name = posixpath.split(path)
        listing = self.listings.get(parent)
        if listing is not None and name not in listing:
            raise OSError(errno.ENOENT, "no such file or directory")
        listed = self.attrs_ahead.lookup(path)
        if isinstance(listed, Attr):
            return listed
        if listed is NOT_LISTED:  # it may have just landed in the cache
            cached = self.stats.get(path)
            if isinstance(cached, Attr):
                return cached
        attr = self._dir_unchanged(path)
        if attr is not None:
            return attr
        attr = self.fetch(path)
        if attr is None:
            raise OSError(errno.ENOENT, "no such file or directory")
        return attr

    def _dir_unchanged(self, path: str) -> Attr | None:
        """A directory's attributes, again, where a walk has fetched its listing ahead:
        the walk outlived the stat cache (`find` over 20,000 files on a slow server), and
        a listing moments old is as good a witness as the lookup's own listing. If it
        shows the marker as we last saw it (ETag, Last-Modified), the marker's attributes
        still hold; if it shows keys below and no marker, the directory is implicit. A
        marker shown changed, or never seen, is asked for. Whether an object of the same
        name has appeared since is for the parent's next listing to tell (as in read_dir).
        """
        listing = self.listings_ahead.peek(path)
        if listing is None:
            return None
        if listing.files and listing.files[0].key == self.dkey(path):
            known = self._unchanged(listing.files[0])  # a marker sorts first below it
            if known is None:
                return None
            attr = as_dir(known)
        elif (listing.files or listing.prefixes) and not self.settings.compat_dir:
            attr = self.implicit_dir()  # (with compat_dir, a `dir_$folder$` may say more)
        else:
            return None
        self.stats.put(path, attr)
        return attr

    def _unchanged(self, item: ListEntry) -> Attr | None:
        """The attributes last decoded from object `item.key`, if a listing shows it with
        the same ETag and Last-Modified (its headers change only with those)."""
        known = self.objects.get(item.key, touch=True)
        if known and item.etag and known[:2] == (item.etag, seconds(item.last_modified)):
            return known[2]
        return None

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
            return True
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise

    def fetch(self, path: str) -> Attr | None:
        """Ask S3 what `path` is: a file/symlink/dir object, a dir marker, an implicit
        directory, or nothing. 1–3 requests; the answer goes into the stat cache."""
        parent, name = posixpath.split(path)
        hint = self.hints.get(parent)
        misses = (self.misses.get(parent) or 0) if hint is None else 0
        # Probably nothing, or a directory: ask everything at once.
        if misses >= MISSES_IN_A_ROW or (hint is not None and hint.get(name, True)):
            head = self.engine.head_async(self.key(path))
            page = self.engine.list_page_async(self.dkey(path), max_keys=LOOKUP_PAGE)
            is_dir = hint is not None and name in hint
            marker = self.engine.head_async(self.dkey(path)) if is_dir else None
            info = head.result()
            attr = (
                self.decode(info)
                if info is not None
                else self._dir_from(path, page.result(), marker)
            )
        else:
            info = self.engine.head(self.key(path))
            if info is not None:
                attr = self.decode(info)
            else:
                attr = self._dir_from(
                    path, self.engine.list_page(self.dkey(path), max_keys=LOOKUP_PAGE)
                )
        if hint is None:
            if attr is None:
                self.misses.put(parent, misses + 1)
            else:
                self.misses.pop(parent)
        self.store(path, attr)
        return attr

    def _dir_from(
        self, path: str, page: Page, marker: Future[ObjectInfo | None] | None = None
    ) -> Attr | None:
        """What `path` is, given the first page of a listing of `path/` (and the HEAD of
        its marker, if one was sent with it); a page that holds the whole directory
        becomes its hint."""
        dkey = self.dkey(path)
        attr: Attr | None = None
        # The marker `dir/` sorts before every other key under `dir/`: one listing says
        # both whether a marker exists and whether the directory is implicit.
        if page.files and page.files[0].key == dkey:
            info = marker.result() if marker is not None else self.engine.head(dkey)
            if info is not None:
                attr = self._as_dir(info)
        if attr is None and (page.files or page.prefixes):
            attr = self.implicit_dir()
        if attr is None and self.settings.compat_dir:
            info = self.engine.head(self.key(path) + layout.COMPAT_DIR_SUFFIX)
            if info is not None:
                attr = self._as_dir(info)
        if attr is not None:
            self.hint_from(path, page)
        return attr

    def hint_from(self, path: str, page: Page) -> None:
        """Keep what the first page of a listing of directory `path` shows as its hint,
        if that page holds the whole directory. A hint only, not a listing that answers
        "no such name": a file another mount makes now must show at its first lookup
        here."""
        if page.next_token is not None:
            return
        dkey = self.dkey(path)
        hint: dict[str, bool] = {}
        for item in page.files:
            name = layout.child_name(item.key, dkey)
            if name is not None:
                base = name.removesuffix(layout.COMPAT_DIR_SUFFIX)
                if base == name:
                    hint[name] = False
                else:
                    hint.setdefault(base, True)
        for common in page.prefixes:
            name = layout.child_name(common, dkey)
            if name is not None:
                hint.setdefault(name, True)
        self.hints.put(path, hint)

    def _fetch_listed(self, key: str, is_prefix: bool) -> Future[Attr | None]:
        """Attributes of an entry a listing showed: a HEAD of its object (or, for a common
        prefix, of its marker: none makes it an implicit directory)."""
        out: Future[Attr | None] = Future()

        def done(f: Future[ObjectInfo | None]) -> None:
            try:
                info = f.result()
                if is_prefix:
                    out.set_result(self.implicit_dir() if info is None else self._as_dir(info))
                else:
                    out.set_result(None if info is None else self.decode(info))
            except BaseException as e:
                out.set_exception(e)

        self.engine.head_async(key).add_done_callback(done)
        return out

    def _store_listed(self, path: str, attr: Attr | None) -> None:
        if attr is not None:
            self.stats.put(path, attr)

    # --- listings ---------------------------------------------------------------------

    def read_dir(self, path: str) -> dict[str, DirEntry]:
        """The directory's entries, from a fresh listing (other mounts' new files show at
        the next `ls`). Attributes are not fetched here (`find` needs only names and
        kinds); they are fetched ahead when lookups ask (`ls -l`)."""
        prefix = self.dkey(path)
        listing = self.listings_ahead.take(path)
        if listing is None:
            listing = self.engine.list_dir(prefix)
        entries: dict[str, DirEntry] = {}
        hint: dict[str, bool] = {}  # name → no object of that name (see `hints`)
        todo: dict[str, tuple[str, bool]] = {}  # name → (key, from a common prefix)
        for item in listing.files:
            name = layout.child_name(item.key, prefix)
            if name is None:
                continue
            if name.endswith(layout.COMPAT_DIR_SUFFIX):
                if self.settings.compat_dir:
                    base = name[: -len(layout.COMPAT_DIR_SUFFIX)]
                    if base:
                        entries.setdefault(base, DirEntry(base, True))
                        hint.setdefault(base, True)
                continue
            hint[name] = False
            child = posixpath.join(path, name)
            known = self._unchanged(item)
            if known is not None:
                # Unchanged since we last saw it: its attributes are as good as fetched
                # now (a fresh TTL, or a long `ls -l` outlives the earlier entries).
                entries[name] = DirEntry(name, known.is_dir)
                self.stats.put(child, known)
                continue
            entries[name] = DirEntry(name, False, empty=item.size == 0)
            if self._unknown(child):
                todo[name] = (item.key, False)
        for common in listing.prefixes:
            name = layout.child_name(common, prefix)
            if name is None or name in entries:
                continue  # both `x` and `x/…` exist: the object wins, as in s3fs
            entries[name] = DirEntry(name, True)
            hint[name] = True
            if self._unknown(posixpath.join(path, name)):
                todo[name] = (common, True)
        self.attrs_ahead.listed(path, todo)
        subdirs = [posixpath.join(path, n) for n, e in entries.items() if e.is_dir]
        self.subdirs.put(path, len(subdirs))
        self.listings_ahead.listed(path, subdirs)
        self.listings.put(path, entries)
        self.hints.put(path, hint)
        return entries

    def _unknown(self, path: str) -> bool:
        """True if `path`'s attributes are not cached. A cached absence is overruled by
        the listing that shows the entry (forgotten, so the next lookup asks S3)."""
        cached = self.stats.get(path)
        if cached is MISSING:
            self.stats.pop(path)
        return not isinstance(cached, Attr)

    def dir_is_empty(self, path: str) -> bool:
        """No key below the directory but its own marker (what S3 holds; open files
        created here but not uploaded yet are the caller's to consider)."""
        dkey = self.dkey(path)
        return all(k.key == dkey for k in self.engine.first_keys(dkey, 2))

    def delete_dir_objects(self, path: str) -> None:
        """Every object that can make `path` a directory: `dir/`, an old-style `dir`
        object with a directory type, `dir_$folder$`."""
        keys = [self.dkey(path)]
        info = self.engine.head(self.key(path))
        if info is not None and self.decode(info).is_dir:
            keys.append(self.key(path))
        if self.settings.compat_dir:
            keys.append(self.key(path) + layout.COMPAT_DIR_SUFFIX)
        self.engine.delete_many(keys)

    # --- our own changes --------------------------------------------------------------

    def changed(self, path: str, exists: bool | None = None, is_dir: bool = False) -> None:
        """Our own change to `path`: forget its attributes; keep the parent's cached
        listing right (`exists` says whether `path` is there now; None: unknown)."""
        self.attrs_ahead.forget(path)
        parent = posixpath.dirname(path)
        self.listings_ahead.forget(parent)
        self.stats.pop(path)
        if exists is None:
            self.listings.pop(parent)
            self.hints.pop(parent)
        else:
            name = posixpath.basename(path)

            def patch(entries: dict[str, DirEntry]) -> dict[str, DirEntry]:
                patched = dict(entries)
                if exists:
                    patched[name] = DirEntry(name, is_dir)
                else:
                    patched.pop(name, None)
                return patched

            self.listings.update(parent, patch)
            self.hints.update(
                parent,
                lambda hint: (
                    {**hint, name: is_dir}
                    if exists
                    else {n: d for n, d in hint.items() if n != name}
                ),
            )
        self.objects.pop(self.key(path))
        self.objects.pop(self.dkey(path))

    def changed_tree(self, path: str, exists: bool, is_dir: bool = True) -> None:
        """`changed`, and everything cached below `path` too (rmdir, renames)."""
        self.changed(path, exists=exists, is_dir=is_dir)
        self.attrs_ahead.forget_tree(path)
        self.listings_ahead.forget_tree(path)
        self.stats.pop_tree(path)
        self.listings.pop_tree(path)
        self.hints.pop_tree(path)
        # Gone, or a moved tree now there: what we knew of the directories is not theirs.
        self.dir_times.pop_tree(path)
        self.subdirs.pop_tree(path)
        with self._unsaved_lock:
            self._unsaved_times -= {p for p in self._unsaved_times if in_tree(p, path)}

    def moved(self, old: str, new: str, is_dir: bool) -> None:
        """A rename: `changed_tree` for both names; a moved directory keeps what we knew
        of its own entries (the count and times of those below it are asked anew)."""
        count, when = (self.subdirs.get(old), self.dir_times.get(old)) if is_dir else (None, None)
        self.changed_tree(old, exists=False, is_dir=is_dir)
        self.changed_tree(new, exists=True, is_dir=is_dir)
        if count is not None:
            self.subdirs.put(new, count)
        if when is not None:
            self.dir_times.put(new, when)
            with self._unsaved_lock:
                self._unsaved_times.add(new)

    # --- what only this mount knows of directories ---------------------------------------

    def entry_changed(self, path: str, now: int, subdirs: int = 0) -> None:
        """An entry of the parent of `path` was added or removed here: the parent's mtime
        and ctime are now; `subdirs` (+1, -1) adjusts its count of subdirectories."""
        parent = posixpath.dirname(path)
        self.dir_times.put(parent, now)
        with self._unsaved_lock:
            self._unsaved_times.add(parent)
        if subdirs:
            self.subdirs.update(parent, lambda n: max(n + subdirs, 0))

    def with_local_times(self, path: str, attr: Attr) -> Attr:
        """A directory's attributes with this mount's later entry changes applied (the
        later of the two, so another mount's later change to the marker shows too)."""
        when = self.dir_times.get(path)
        if when is None or (when <= attr.mtime_ns and when <= attr.ctime_ns):
            return attr
        return replace(attr, mtime_ns=max(when, attr.mtime_ns), ctime_ns=max(when, attr.ctime_ns))

    def times_set(self, path: str) -> None:
        """utimens on a directory: its stored times are the truth again."""
        self.dir_times.pop(path)
        with self._unsaved_lock:
            self._unsaved_times.discard(path)

    def unsaved_times(self) -> dict[str, int]:
        """The directories whose times changed here since the last call, and when."""
        with self._unsaved_lock:
            paths, self._unsaved_times = self._unsaved_times, set()
        times = {p: self.dir_times.get(p) for p in paths}
        return {p: t for p, t in times.items() if t is not None}

    def unsaved_again(self, path: str) -> None:
        with self._unsaved_lock:
            self._unsaved_times.add(path)

    def nlink(self, path: str) -> int:
        """A directory's link count: 2 + its subdirectories if a listing (or our own mkdir)
        told us, else 1: "unknown", which find and fts take as "do not count on it"."""
        count = self.subdirs.get(path)
        return 1 if count is None else 2 + count

    def created_dir(self, path: str) -> None:
        """mkdir here, after a lookup found nothing under the name: it is empty (as far
        as anyone knows now: a hint, see `hints`)."""
        self.subdirs.put(path, 0)
        self.hints.put(path, {})
