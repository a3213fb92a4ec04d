"""Read batching: let a busy event loop take its sockets' data a few milliseconds at a time.

A front door with thousands of live streams gets a small write on every socket
every 20 ms.  Left alone, the event loop drains each one as soon as it arrives:
it goes to sleep in ``epoll_wait`` between writes, and every write then costs
the kernel a wake-up (an inter-processor interrupt on a VM), a context switch,
an ``epoll_wait`` and a ``recv`` for a few hundred bytes.  On this project's
2-vCPU machines that is ~6.5 us of kernel time per write on the receiving side
alone (``bench/streams_floor.py``), more than the Python that handles it.

:class:`ReadBatcher` is interrupt moderation done in user space.  While at
least ``min_streams`` streams are open, a task on the loop alternates between

1. yielding once, so that the loop runs one iteration: every socket that became
   readable is read and handled, every ready callback runs; and
2. sleeping (``time.sleep``, on purpose: it blocks the loop) for what is left of
   ``cycle`` after that iteration's work, at least ``min_nap``.

While the loop thread sleeps it is not waiting in ``epoll_wait``, so the kernel
wakes nobody when data arrives: the writes queue in the sockets' buffers and the
next iteration reads them in one ``recv`` per socket.  ``time.sleep`` releases the
GIL, so the recording hook's flusher thread gets it for the whole nap instead of
fighting the loop for it.  Nothing is dropped or reordered: TCP holds what
arrives, and the loop handles it in order.

The cost is latency, per trip through the loop.  On uvloop (what the servers
run on) data arriving on a socket waits at most about one ``cycle`` (5 ms by
default, against the 20 ms a media chunk covers and the second a segment stays
in memory).  Anything else that wakes through the loop -- a timer, a finished
executor job, a task woken by another -- waits for the nap in progress too, so a
coroutine that awaits N such things takes up to about N cycles longer: a
stream's start and end (the recording hook opens and closes its file on a
thread) take some tens of milliseconds more while batching is on.  On asyncio's
own loop (used only when uvloop is missing) the nap falls between polling and
handling, so socket data can wait up to two cycles.

Under overload the iteration's own work exceeds ``cycle`` and the nap shrinks
to ``min_nap``, which bounds what batching can take from a saturated loop to
``min_nap`` per iteration.  With fewer than ``min_streams`` open it stays out
of the way: it waits until the server calls :meth:`ReadBatcher.check` (on each
new stream), so an idle server does not wake up at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_CYCLE", "DEFAULT_MIN_STREAMS", "MAX_CYCLE", "MIN_CYCLE", "ReadBatcher"]

DEFAULT_CYCLE: Final = 0.005  # a quarter of a 20 ms media chunk
MAX_CYCLE: Final = 0.1  # past this the delay is felt (pings, handshakes), for little gain
MIN_NAP: Final = 0.0005  # the least a saturated loop gives up per iteration
# Shorter cycles would be mostly the floor: a saturated loop would give up to half its
# time to naps (min_nap / (work + min_nap)), for wake-ups it saves anyway.
MIN_CYCLE: Final = 0.001
DEFAULT_MIN_STREAMS: Final = 32  # below this, wake-ups cost little: read at once


@dataclass(slots=True)
class ReadBatcher:
    """Batch a loop's reads while ``open_streams()`` is at least ``min_streams``.

    ``cycle`` is the time from one batch of reads to the next: 0 (off) or
    :data:`MIN_CYCLE` to :data:`MAX_CYCLE` seconds.  Run :meth:`run` once, as a
    task on the loop it batches (one loop: its event binds to it); cancel it to
    stop.  Call :meth:`check` when a stream opens.

    Raises:
        ValueError: a cycle, ``min_streams`` (at least 1) or ``min_nap`` (0 to the
            cycle) out of range.
    """

    open_streams: Callable[[], int]
    cycle: float = DEFAULT_CYCLE
    min_streams: int = DEFAULT_MIN_STREAMS
    min_nap: float = MIN_NAP
    sleep: Callable[[float], None] = time.sleep  # blocks the loop's thread (tests replace it)
    naps: int = 0  # how many times it slept (tests and the bench read it)
    napped: float = 0.0  # seconds the loop spent in them
    _enough: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.cycle != 0 and not MIN_CYCLE <= self.cycle <= MAX_CYCLE:
            msg = f"cycle must be 0 (off) or {MIN_CYCLE}-{MAX_CYCLE} s, not {self.cycle!r}"
            raise ValueError(msg)
        if self.min_streams < 1:
            msg = f"min_streams must be at least 1, not {self.min_streams!r}"
            raise ValueError(msg)
        if not 0 <= self.min_nap <= max(self.cycle, MIN_NAP):
            msg = f"min_nap must be 0 to the cycle, not {self.min_nap!r}"
            raise ValueError(msg)

    async def run(self) -> None:
        if self.cycle == 0:
            return
        clock, sleep = time.monotonic, self.sleep
        while True:
            if self.open_streams() < self.min_streams:
                self._enough.clear()
                await self._enough.wait()
                continue
            start = clock()
            await asyncio.sleep(0)  # one iteration of the loop: read and handle everything ready
            nap = max(self.min_nap, self.cycle - (clock() - start))
            sleep(nap)  # blocks the loop on purpose (module docstring)
            self.naps += 1
            self.napped += nap

    def check(self) -> None:
        """A stream opened: start batching if there are now enough (cheap; call it each time)."""
        if not self._enough.is_set() and self.open_streams() >= self.min_streams:
            self._enough.set()
