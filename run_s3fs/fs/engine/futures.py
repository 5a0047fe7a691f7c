"""Chaining concurrent futures: the engine's requests complete in CRT threads, and what
waits on them (a part's ETag, a parsed listing, a prefetch) is a future of its own."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


def then(future: Future[T], fn: Callable[[T], U]) -> Future[U]:
    """A future of `fn(result)`; an exception (from either) is passed on."""
    out: Future[U] = Future()

    def done(f: Future[T]) -> None:
        try:
            out.set_result(fn(f.result()))
        except BaseException as e:
            out.set_exception(e)

    future.add_done_callback(done)
    return out


def settle(out: Future[T], inner: Future[T]) -> None:
    """Give `out` the outcome of the finished `inner`."""
    error = inner.exception()
    if error is not None:
        out.set_exception(error)
    else:
        out.set_result(inner.result())
