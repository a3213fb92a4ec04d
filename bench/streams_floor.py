"""The floor under ``bench streams``: what this machine's loopback TCP costs at N streams.

Issue 19 asks for 2,000 concurrent two-track media streams on a 2-core machine:
100,000 writes/s (one write of two ~335-byte WebSocket frames per stream per
20 ms) from the load generator, 200,000 messages/s into the server.  Before any
Python of ours runs, both ends pay the kernel's loopback TCP and the event loop's
wake-ups.  This script measures exactly that and nothing else:

* **receiver**: a child process, uvloop, one ``asyncio.Protocol`` per connection
  whose ``data_received`` only counts bytes (no framing, no JSON, no recording);
* **sender**: this process, N plain TCP sockets (TCP_NODELAY, non-blocking), each
  sent the same 670-odd bytes (two masked frames of a Twilio media pair) every
  20 ms in ``--slots`` phases, by a bare loop of ``socket.send`` (no asyncio).

``--nap-ms MS`` makes the receiver batch its reads the way the server's
``read_batch_ms`` does (:mod:`recstream.aio.batching`: sleep between rounds of
reading), to see what that saves the kernel on each side.

For each N it prints both sides' user and system CPU (``getrusage``) over the
window, as percent of one core and as microseconds per write, and whether the
sender kept time.  Loopback TCP runs the receiver's TCP input inside the
sender's ``send()``, so most of the kernel's cost lands on the sender.

    .venv/bin/python bench/streams_floor.py --streams 1000,2000,2500 --duration 8 [--nap-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

WRITE = os.urandom(2 * 335)  # two masked frames of a media pair: the bench's write size
FRAME_SECONDS = 0.020


def _rusage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _receiver(conn: Connection, nap_ms: float) -> None:
    import uvloop

    from recstream.aio.batching import ReadBatcher

    class Drain(asyncio.Protocol):
        received = 0
        reads = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            Drain.received += len(data)
            Drain.reads += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Drain, "127.0.0.1", 0, backlog=4096)
        conn.send(server.sockets[0].getsockname()[1])
        tasks = []  # the batcher runs until the process ends
        if nap_ms:
            batcher = ReadBatcher(lambda: 1, cycle=nap_ms / 1000, min_streams=1)
            tasks.append(loop.create_task(batcher.run()))
        state: dict[str, Any] = {}
        while True:
            while not conn.poll():
                await asyncio.sleep(0.05)
            cmd = conn.recv()
            if cmd == "reset":
                state = {"ru": _rusage(), "t": time.monotonic(), "b": Drain.received,
                         "r": Drain.reads}  # fmt: skip
                conn.send("ok")
            elif cmd == "stats":
                u, s = _rusage()
                conn.send(
                    {
                        "user": u - state["ru"][0],
                        "sys": s - state["ru"][1],
                        "wall": time.monotonic() - state["t"],
                        "bytes": Drain.received - state["b"],
                        "reads": Drain.reads - state["r"],
                    }
                )
            else:
                server.close()
                return

    uvloop.run(main())


def _step(port: int, conn: Connection, n: int, duration: float, slots: int) -> dict[str, Any]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    time.sleep(0.5)  # the receiver accepts them all
    phases = [[s.send for s in socks[i::slots]] for i in range(slots)]
    conn.send("reset")
    conn.recv()
    sub = FRAME_SECONDS / slots
    u0, s0 = _rusage()
    start = t0 = time.monotonic()
    writes = short = 0
    lag = 0.0
    j = 0
    data = WRITE
    while (deadline := start + j * sub) < start + duration:
        now = time.monotonic()
        if deadline > now:
            time.sleep(deadline - now)
        else:
            lag = max(lag, now - deadline)
        for send in phases[j % slots]:
            try:
                if send(data) != len(data):
                    short += 1
            except BlockingIOError:
                short += 1
        writes += len(phases[j % slots])
        j += 1
    wall = time.monotonic() - t0
    u1, s1 = _rusage()
    conn.send("stats")
    recv = conn.recv()
    for s in socks:
        s.close()
    return {"n": n, "writes": writes, "wall": wall, "user": u1 - u0, "sys": s1 - s0,
            "short": short, "lag": lag, "recv": recv}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1000,2000,2500")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--slots", type=int, default=10)
    ap.add_argument("--nap-ms", type=float, default=0.0, help="batch the receiver's reads")
    ns = ap.parse_args(argv)
    steps = [int(x) for x in ns.streams.split(",")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * max(steps) + 256), hard))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, ns.nap_ms), daemon=True)
    proc.start()
    port = parent.recv()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)", file=sys.stderr)
    print("streams  writes/s  sender user%  sender sys%  sender us/write (user+sys)  "
          "short writes  max lag ms  receiver user%  receiver sys%  receiver us/write  "
          "reads/write  load")  # fmt: skip
    for n in steps:
        r = _step(port, parent, n, ns.duration, ns.slots)
        rc = r["recv"]
        w = r["writes"]
        print(
            f"{n:7d}  {w / r['wall']:8,.0f}  {100 * r['user'] / r['wall']:12.0f}  "
            f"{100 * r['sys'] / r['wall']:11.0f}  "
            f"{1e6 * r['user'] / w:11.2f} + {1e6 * r['sys'] / w:.2f} = "
            f"{1e6 * (r['user'] + r['sys']) / w:5.2f}  {r['short']:12d}  {1e3 * r['lag']:10.1f}  "
            f"{100 * rc['user'] / rc['wall']:14.0f}  {100 * rc['sys'] / rc['wall']:13.0f}  "
            f"{1e6 * (rc['user'] + rc['sys']) / w:17.2f}  {rc['reads'] / w:11.2f}  "
            f"{os.getloadavg()[0]:4.1f}",
            flush=True,
        )
    parent.send("stop")
    proc.join(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
