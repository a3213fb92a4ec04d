"""Stop requests for commands that finish their work on SIGINT/SIGTERM (``record``).

:func:`catch_stop_requests` runs before anything slow (before the command's
modules are even imported): a signal that arrives while certificates load or
the keystore opens is remembered, never lost, and the command finishes with
what it has instead of dying with nothing.  Only the standard library here.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopRequest", "catch_stop_requests", "stop_request"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A latch that SIGINT or SIGTERM sets; ``wait``/``is_set`` from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    def set(self, signum: int = signal.SIGTERM) -> None:
        """Record a stop request (signal handlers and the event loop call this)."""
        if self.signal is None:
            self.signal = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def clear(self) -> None:
        self.signal = None
        self._event.clear()


_REQUEST = StopRequest()


def stop_request() -> StopRequest:
    """The process's stop request, set by the handlers :func:`catch_stop_requests` installs."""
    return _REQUEST


def catch_stop_requests() -> Callable[[], None]:
    """Install SIGINT/SIGTERM handlers that only set :func:`stop_request`.

    Returns a function that restores the previous handlers (``main`` may run
    in-process, in a test or an embedding program).
    """
    _REQUEST.clear()
    previous: dict[int, Any] = {}

    def handle(signum: int, _frame: FrameType | None) -> None:
        _REQUEST.set(signum)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
