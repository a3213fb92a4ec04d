"""Admission of SIP-over-TCP connections: a cap per address and a descriptor reserve.

Each TCP connection holds a file descriptor.  Without a cap, a few hundred idle
connections used up a 256-descriptor limit and the next call's recording could
not open its file (500, and nothing logged).  A connection is admitted only while

* its address has fewer than ``[sip] max_connections_per_address`` open, and
* the process keeps ``[sip] connection_reserve`` descriptors free of connections
  for recordings, RTP sockets and the keystore.

The RCS's listener (``service/listener.py``) applies the same rule to HTTP; this is
the SRS's own copy because siprec must not import service/ (pure bookkeeping,
time is an argument, so it is tested without sockets as well).
"""

from __future__ import annotations

import logging
import resource
from typing import Final

__all__ = ["ConnectionLimiter", "descriptor_limit"]

log = logging.getLogger("recstream.siprec")

WARN_EVERY_SECONDS: Final = 60.0
MAX_REMEMBERED: Final = 10_000  # addresses whose last warning time is kept


def descriptor_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


class ConnectionLimiter:
    """Open connections per address; refusals counted and logged once a minute per address.

    Args:
        per_address: connections one address may hold.
        reserve: descriptors kept free of connections.
        limit: the descriptor limit (when not given, the soft ``RLIMIT_NOFILE``, read
            at each admission so that a limit changed with ``prlimit`` takes effect).
    """

    def __init__(self, per_address: int, reserve: int, limit: int | None = None) -> None:
        self.per_address = per_address
        self.reserve = reserve
        self._limit = limit
        self._open: dict[str, int] = {}
        self.count = 0
        self.refused: dict[str, int] = {"per_address": 0, "descriptors": 0}
        self._warned: dict[str, float] = {}

    def admit(self, address: str, in_use: int, now: float) -> bool:
        """Admit a connection from ``address``; ``in_use`` descriptors are held otherwise."""
        mine = self._open.get(address, 0)
        if mine >= self.per_address:
            reason = "per_address"
        elif self.count + in_use + self.reserve >= (self._limit or descriptor_limit()):
            reason = "descriptors"
        else:
            self._open[address] = mine + 1
            self.count += 1
            return True
        self.refused[reason] += 1
        if now - self._warned.get(address, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            if len(self._warned) >= MAX_REMEMBERED:
                self._warned.clear()
            self._warned[address] = now
            log.warning(
                "SIP/TCP: refusing connections from %s (%s; %d open from it, %d in all)",
                address,
                "per-address limit" if reason == "per_address" else "descriptor reserve reached",
                mine,
                self.count,
            )
        return False

    def release(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)
        self.count = max(0, self.count - 1)
