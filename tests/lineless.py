"""A pytest plugin: a failure whose traceback has a frame with no line number is reported
as a failure, instead of crashing pytest's report and with it the whole session.

Python 3.11 gives such frames (tb_lineno None) when, for one, pytest-timeout's signal
interrupts a test inside a call; pytest 9 then dies rendering the traceback
(INTERNALERROR ... 'NoneType' - 'int') and no later test runs. CI lost two whole runs
to one hung test that way. Here each such frame gets its function's first line instead.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

import pytest


def _lineless(tb: TracebackType | None) -> bool:
    while tb is not None:
        if tb.tb_lineno is None:
            return True
        tb = tb.tb_next
    return False


def _numbered(tb: TracebackType | None) -> TracebackType | None:
    """The same chain of frames, each with a line number."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for entry in reversed(entries):
        line = entry.tb_lineno
        if line is None:
            line = entry.tb_frame.f_code.co_firstlineno
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, line)
    return rebuilt


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.excinfo is not None:
        seen: set[int] = set()
        exc: BaseException | None = call.excinfo.value
        changed = False
        # The chained exceptions are rendered too.
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if _lineless(exc.__traceback__):
                exc.__traceback__ = _numbered(exc.__traceback__)
                changed = True
            exc = exc.__cause__ or exc.__context__
        if changed:
            call.excinfo = pytest.ExceptionInfo.from_exception(call.excinfo.value)
    return (yield)
