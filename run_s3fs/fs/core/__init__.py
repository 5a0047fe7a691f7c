"""The filesystem itself, knowing nothing of FUSE: paths in, attributes, bytes and
errnos out. `Filesystem` (filesystem.py) is its face; the FUSE adapter calls nothing else.

Lock order (a thread holding one may take only those after it, never before):
  1. OpenFile.lock        one file's changes: content, spool and upload (handles.py)
     OpenFile.view        what a read of that file looks at (handles.py)
  2. Filesystem.lock      the table of open files and handles (filesystem.py)
     Filesystem._marker_lock  a directory marker's HEAD and rewrite (held over both)
  3. Reader._lock         one object's read blocks (reader.py) and its Regions
                          (regions.py, no lock of its own), then Budget's and
                          Backlog's (blocks.py), then its Line's and Pendings'
                          (prefetch.py; nothing is sent under these three)
  4. cache locks          each cache's own (caches.py), and the prefetchers' (prefetch.py)
A cache, reader, table or view lock is never held while waiting for S3. A file's lock
may be (an upload runs under it, so a close racing with a write cannot lose data; so does
the download of the object a first write makes; a streamed upload's write waits there for
room among the parts in flight, which the engine's threads free without taking any lock
of the core), and so may the marker lock (a chmod of a directory and the lazy store of its
mtime must not undo each other). Reads and opens take a file's view, not its lock (to
find its spool or reader and, once a read has its bytes, to deliver them; only the rare
renewal of a replaced version takes both), so neither waits for that file's upload or
download; reads wait for their bytes outside every lock.
"""
