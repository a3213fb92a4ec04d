"""Admission of SIP-over-TCP connections: a cap per address and a descriptor reserve.

Each TCP connection holds a file descriptor.  Without a cap, a few hundred idle
connections used up a 256-descriptor limit and the next call's recording could
not open its file (500, and nothing logged).  A connection is admitted only while

* its address has fewer than ``[sip] max_connections_per_address`` open, and
* the process keeps ``[sip] connection_reserve`` descriptors free of connections
  for recordings, RTP sockets and the keystore.

The bookkeeping is :mod:`recstream.admission`'s, shared with the RCS's listener;
this module adds the SRS's budget (what its calls hold counts against the limit)
and its log line, and :func:`srs_descriptors`: at start, the open-file limit is
raised to what ``max_calls`` needs (a call of two participants holds two RTP
sockets and its recording's file), or ``max_calls`` lowered to what it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from recstream.admission import (
    ConnectionLimiter,
    Throttle,
    capacity_within_limit,
    descriptor_limit,
)

__all__ = ["DESCRIPTORS_PER_CALL", "WARN_EVERY_SECONDS", "sip_tcp_limiter", "srs_descriptors"]

log = logging.getLogger("recstream.siprec")

WARN_EVERY_SECONDS: Final = 60.0
DESCRIPTORS_PER_CALL: Final = 3  # two participants' RTP sockets and the recording
BASE_RESERVE: Final = 64  # the SIP sockets, the keystore, the event loop, the flusher


def srs_descriptors(max_calls: int, connection_reserve: int) -> tuple[int, int]:
    """Raise this process's open-file limit for ``max_calls`` calls if it may; return
    ``(calls it holds, descriptors they need)``: fewer calls than asked when the hard
    limit is lower.

    Raises:
        ConfigError: the limit cannot hold a single call.
    """
    fixed = connection_reserve + BASE_RESERVE
    return capacity_within_limit(
        max_calls,
        DESCRIPTORS_PER_CALL,
        fixed,
        unit="call",
        kept=f"connection_reserve and the server keep {fixed}",
    )


def sip_tcp_limiter(
    per_address: int,
    reserve: int,
    in_use: Callable[[], int],
    now: Callable[[], float],
    limit: Callable[[], int] = descriptor_limit,
) -> ConnectionLimiter:
    """The SRS's limiter: ``reserve`` descriptors and those ``in_use`` by calls stay free.

    ``limit`` is read at each admission, so a limit changed with ``prlimit`` takes
    effect; refusals are logged at most once a minute per address.
    """
    warn = Throttle(WARN_EVERY_SECONDS)
    limiter: ConnectionLimiter

    def refused(address: str, reason: str, mine: int) -> None:
        if warn(address, now()):
            log.warning(
                "SIP/TCP: refusing connections from %s (%s; %d open from it, %d in all)",
                address,
                "per-address limit" if reason == "per_address" else "descriptor reserve reached",
                mine,
                limiter.count,
            )

    limiter = ConnectionLimiter(
        per_address, lambda: limit() - reserve - in_use(), on_refuse=refused
    )
    return limiter
