"""Graceful stop on SIGTERM/SIGINT: let writers finish, upload, unmount, exit 0.

libfuse's own handlers would end the session at once, cutting off a process that is
still writing a file. Instead, the signals only wake a watcher thread (through Python's
wakeup fd: the main thread sits inside fuse_main and runs no Python). The watcher waits
until no file is open with unsaved data (bounded by a grace period, so supervisord's
stopwaitsecs is respected), then ends the FUSE session. Further signals are logged and
ignored: the shutdown already under way finishes every upload.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger("run_s3fs.fs")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    def __init__(
        self,
        busy: Callable[[], bool],
        grace: float,
        end_session: Callable[[int], None] | None = None,
    ) -> None:
        self.busy = busy  # True while a file is open with data not yet uploaded
        self.grace = grace
        self.end_session = end_session or _end_fuse_session
        self.requested = threading.Event()
        self.session: int | None = None  # `struct fuse *`, from init until destroy
        self._session_known = threading.Event()
        # fuse_exit writes into the session: it must not run once libfuse has started to
        # free it (an unmount ending the loop as a signal arrives corrupted the heap).
        self._session_lock = threading.Lock()
        self._read_fd, self._write_fd = os.pipe()

    def install(self) -> None:
        """Main thread, before mounting. Our handlers make libfuse keep its own out
        (it installs them only where the disposition is the default)."""
        os.set_blocking(self._write_fd, False)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in (*STOP_SIGNALS, signal.SIGUSR1):
            signal.signal(sig, _noop)
        # s3fs reopens its log on SIGHUP; we have nothing to reopen, and must not exit.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        threading.Thread(target=self._watch, name="signals", daemon=True).start()

    def session_started(self, fuse_ptr: int | None) -> None:
        """From init: the session pointer fuse_exit needs."""
        self.session = fuse_ptr
        self._session_known.set()

    def session_ended(self) -> None:
        """From destroy, which libfuse calls before it frees the session."""
        with self._session_lock:
            self.session = None
        self._session_known.set()

    def _watch(self) -> None:
        while True:
            data = os.read(self._read_fd, 64)
            stops = [s for s in data if s in STOP_SIGNALS]
            if not stops:
                continue
            if self.requested.is_set():
                log.warning(
                    "signal %d: already stopping; uploads in progress will finish", stops[0]
                )
                continue
            self.requested.set()
            name = signal.Signals(stops[0]).name
            log.info("%s: stopping once open files are closed (at most %.0fs)", name, self.grace)
            threading.Thread(target=self._stop, name="stop", daemon=True).start()

    def _stop(self) -> None:
        deadline = time.monotonic() + self.grace
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.busy():
            log.error("files still open for writing after %.0fs; unmounting anyway", self.grace)
        self._session_known.wait()
        with self._session_lock:
            if self.session:
                self.end_session(self.session)

    def ignore_further(self) -> None:
        """During the final uploads nothing may kill us (main thread only)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _end_fuse_session(fuse_ptr: int) -> None:
    """Make fuse_main return. Called only while the session lives: later, Python may be
    finalizing, with SIGUSR1 back at its default action (terminate the process)."""
    import mfusepy

    mfusepy._libfuse.fuse_exit(ctypes.c_void_p(fuse_ptr))
    # The main thread waits in sem_wait for the session to end: interrupt it.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)


def _noop(signum, frame) -> None:
    """The Python-level handler: the work happens in the watcher thread."""
