"""Admission of connections: a cap per client address and a total the descriptors allow.

Each connection holds a file descriptor.  Without a cap, a few hundred idle
connections from one client used up the descriptor limit, and every other request
(and the server's own file opens: recordings, the keystore, the audit log) failed
with nothing logged.  The RCS (``service/listener.py``, HTTP) and the SIPREC server
(``siprec/server.py``, SIP over TCP) admit a connection only while

* its address holds fewer than ``per_address`` connections (addresses ``exempt``
  from it, such as trusted proxies, still count in the total), and
* fewer than ``total()`` connections are open: the descriptor limit less a reserve
  (and, for the SRS, less the descriptors its calls hold at that moment).

Pure bookkeeping, stdlib only: the callers do the sockets and the logging.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Callable
from typing import Final

from recstream.errors import ConfigError

__all__ = [
    "ConnectionLimiter",
    "Throttle",
    "capacity_within_limit",
    "descriptor_limit",
    "raise_descriptor_limit",
]

MAX_REMEMBERED: Final = 10_000  # keys a Throttle remembers before it forgets them all


def descriptor_limit() -> int:
    """The soft ``RLIMIT_NOFILE``, read now (``prlimit`` may change it); large if unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def raise_descriptor_limit(need: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` toward ``need`` (never past the hard limit, never
    down); return the soft limit now.  What servers do at start (Go's runtime raises
    it to the hard limit itself): the soft 1,024 of many systems holds ~500 streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return descriptor_limit()
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):  # a platform that refuses: as it is
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return descriptor_limit()


def capacity_within_limit(
    count: int, each: int, reserve: int, *, unit: str, kept: str
) -> tuple[int, int]:
    """Raise the open-file limit for ``count`` units (streams, calls) of ``each``
    descriptors plus ``reserve`` if it may; return ``(units it holds, descriptors they
    need)``: fewer units than asked when the hard limit is lower.  ``kept`` says who
    keeps the reserve, for the message.

    Raises:
        ConfigError: the limit cannot hold a single unit.
    """
    need = each * count + reserve
    limit = raise_descriptor_limit(need)
    held = (limit - reserve) // each
    if held < 1:
        msg = (
            f"the open-file limit ({limit}) leaves no room for a {unit}: {kept} and a "
            f"{unit} needs {each}; raise it ('ulimit -n {need}')"
        )
        raise ConfigError(msg)
    return min(count, held), need


class ConnectionLimiter:
    """Open connections, per address and in total.

    Args:
        per_address: connections one address may hold.
        total: the most connections that may be open, or a callable giving it now
            (called at each admission).
        on_refuse: called with (address, reason, that address's open connections);
            ``reason`` is ``"per_address"`` or ``"total"``.
        exempt: addresses with no per-address cap; they still count in the total.
    """

    def __init__(
        self,
        per_address: int,
        total: int | Callable[[], int],
        on_refuse: Callable[[str, str, int], None] = lambda *_: None,
        exempt: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.per_address = per_address
        self._total = total if callable(total) else (lambda: total)
        self._exempt = exempt
        self._on_refuse = on_refuse
        self._open: dict[str, int] = {}
        self.count = 0
        self.refused: dict[str, int] = {"per_address": 0, "total": 0}

    @property
    def total(self) -> int:
        """The most connections that may be open now."""
        return self._total()

    def admit(self, address: str) -> bool:
        mine = self._open.get(address, 0)
        if mine >= self.per_address and not self._exempt(address):
            reason = "per_address"
        elif self.count >= self._total():
            reason = "total"
        else:
            self._open[address] = mine + 1
            self.count += 1
            return True
        self.refused[reason] += 1
        self._on_refuse(address, reason, mine)
        return False

    def release(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)
        self.count = max(0, self.count - 1)

    def statistics(self) -> dict[str, int]:
        return {
            "open": self.count,
            "addresses": len(self._open),
            "refused": sum(self.refused.values()),
        }


class Throttle:
    """True at most once per ``interval`` per key (for warnings a flood would repeat)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, key: str, now: float) -> bool:
        if now - self._last.get(key, -self.interval) < self.interval:
            return False
        if len(self._last) >= MAX_REMEMBERED:
            self._last.clear()
        self._last[key] = now
        return True
