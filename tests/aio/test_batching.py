"""Read batching (``recstream.aio.batching``): when it sleeps, for how long, and what
piles up meanwhile.  The server it serves is tested in tests/streams/test_read_batching.py."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable

import pytest

from recstream.aio.batching import MAX_CYCLE, ReadBatcher

HANG = 30.0  # a hang guard, not a timing assertion


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition()`` holds (bounded by HANG)."""
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cycle": -0.001}, "cycle must be 0 \\(off\\) or 0.001-0.1 s"),
        ({"cycle": 0.0001}, "cycle must be 0 \\(off\\) or 0.001-0.1 s"),
        ({"cycle": MAX_CYCLE * 2}, "cycle must be 0 \\(off\\) or 0.001-0.1 s"),
        ({"min_streams": 0}, "min_streams must be at least 1"),
        ({"min_nap": -0.001}, "min_nap must be 0 to the cycle"),
        ({"cycle": 0.002, "min_nap": 0.003}, "min_nap must be 0 to the cycle"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReadBatcher(lambda: 0, **kwargs)  # type: ignore[arg-type]


def test_off_means_no_task_work() -> None:
    batcher = ReadBatcher(lambda: 10_000, cycle=0)
    asyncio.run(asyncio.wait_for(batcher.run(), HANG))  # returns at once
    assert batcher.naps == 0


def test_sleeps_only_while_enough_streams_are_open() -> None:
    open_now = [0]

    async def scenario() -> None:
        batcher = ReadBatcher(lambda: open_now[0], cycle=0.002, min_streams=4)
        task = asyncio.get_running_loop().create_task(batcher.run())
        for _ in range(20):
            await asyncio.sleep(0)
        assert batcher.naps == 0  # 0 streams: it waits, it does not poll
        open_now[0] = 3
        batcher.check()
        for _ in range(20):
            await asyncio.sleep(0)
        assert batcher.naps == 0  # still under min_streams
        open_now[0] = 4
        batcher.check()
        await until(lambda: batcher.naps >= 5)
        open_now[0] = 1  # streams ended: it notices at the next round
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        stopped_at = batcher.naps
        for _ in range(20):
            await asyncio.sleep(0)
        assert batcher.naps == stopped_at  # back under: no more naps
        open_now[0] = 5
        batcher.check()
        await until(lambda: batcher.naps > stopped_at)  # and back on
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_nap_is_what_the_round_left_of_the_cycle_and_never_below_the_floor() -> None:
    naps: list[float] = []
    burn = [0.0]

    async def worker() -> None:
        # Another task on the loop doing burn[0] seconds of work in every round.
        while True:
            end = time.monotonic() + burn[0]
            while time.monotonic() < end:
                pass
            await asyncio.sleep(0)

    async def scenario() -> None:
        batcher = ReadBatcher(lambda: 1, cycle=0.004, min_streams=1, min_nap=0.0005,
                              sleep=naps.append)  # fmt: skip
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(batcher.run()), loop.create_task(worker())]
        await until(lambda: len(naps) >= 20)
        assert all(0.0005 <= n <= 0.004 for n in naps)
        # A round with next to no work leaves most of the cycle to sleep (one of 20
        # is enough: a loaded machine may stretch some rounds, not every one).
        assert max(naps) > 0.003
        burn[0] = 0.01  # each round's work outlasts the cycle: only the floor is given up
        seen = len(naps)
        await until(lambda: len(naps) >= seen + 5)
        assert naps[-3:] == [0.0005] * 3
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert batcher.naps == len(naps) and batcher.napped == pytest.approx(sum(naps))

    asyncio.run(scenario())


def test_writes_during_a_nap_are_read_together_after_it() -> None:
    """The point of it: what a peer writes while the loop sleeps costs one read, not one each.

    The peer is another thread writing 25 times while the loop's thread is in its nap;
    the nap ends only once the kernel holds all 25 in the socket (SIOCINQ), so the
    next round finds them all there.
    """
    writes = [b"x" * 300] * 25
    total = sum(map(len, writes))
    reads: list[bytes] = []
    conn: list[socket.socket] = []

    class Count(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn.append(transport.get_extra_info("socket"))

        def data_received(self, data: bytes) -> None:
            reads.append(data)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Count, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await until(lambda: bool(conn))
        started = [False]

        def peer() -> None:
            for w in writes:
                client.sendall(w)

        def nap(seconds: float) -> None:
            if not started[0]:  # the first nap: the peer writes all 25 during it
                started[0] = True
                writer = threading.Thread(target=peer)
                writer.start()
                writer.join(HANG)
                deadline = time.monotonic() + HANG
                while _queued(conn[0]) < total:  # delivered, even if softirq was deferred
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            time.sleep(seconds)

        batcher = ReadBatcher(lambda: 1, cycle=0.002, min_streams=1, sleep=nap)
        task = loop.create_task(batcher.run())
        await until(lambda: sum(map(len, reads)) >= total)
        task.cancel()
        client.close()
        server.close()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert b"".join(reads) == b"".join(writes)
    assert len(reads) == 1  # all 25 writes were waiting in the socket: one read


def _queued(sock: socket.socket) -> int:
    """Bytes waiting in a socket's receive queue (SIOCINQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])
