"""The media-streams server's per-message Python cost, without sockets.

Feeds ``--streams`` :class:`~recstream.streams.connection.StreamConnection`
objects (a real :class:`~recstream.aio.RecordingHook` encrypting to a
temporary directory, fdatasync off) the exact bytes the load generator of
``bench streams`` writes -- one read of two masked media frames per stream per
tick -- and prints the process's CPU per message (the flusher thread's
encryption included), so each server-side change can be measured alone, without
the kernel's loopback TCP (``bench/streams_floor.py`` measures that part).

    .venv/bin/python bench/streams_path.py --streams 200 --ticks 500 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from recstream.aio import RecordingHook
from recstream.aio.run import run
from recstream.bench._streams_client import StreamSource, _Ticks
from recstream.bench.fixtures import make_identity
from recstream.envelope import Recipient
from recstream.pki.certs import load_certificate
from recstream.service.audit import AuditLog
from recstream.streams.connection import StreamConnection


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _main(ns: argparse.Namespace, work: Path) -> None:
    ident = make_identity(work, 2048)
    recipient = Recipient.from_certificate(load_certificate(ident.cert_path.read_bytes()))
    hook = RecordingHook(work / "rec", lambda _t, _k: [recipient], sync=False,
                         contact_center="bench")  # fmt: skip
    audit = AuditLog(work / "audit.jsonl")
    async with hook:
        conns: list[StreamConnection] = []
        gens: list[StreamSource] = []
        ticks = _Ticks()
        for _ in range(ns.streams):
            conn = StreamConnection(
                _Transport(),  # type: ignore[arg-type]
                hook,
                audit,
                allowed=("bench",),
                remote="127.0.0.1",
                idle_timeout=60,
                max_call_seconds=3600,
                tenant_parameter="tenant",
                max_message=65536,
                on_sealed=lambda _f, _l: None,
            )
            gen = StreamSource(ticks)
            conn.data_received(gen.opening())
            conns.append(conn)
            gens.append(gen)
        while any(c._starting for c in conns):
            await asyncio.sleep(0.01)
        # Pre-build every write, so only the server's side is measured.
        writes = [[g.tick() for g in gens] for _ in range(ns.ticks)]
        prof = cProfile.Profile() if ns.profile else None
        c0, w0, t0 = time.process_time(), time.perf_counter(), time.thread_time()
        if prof:
            prof.enable()
        for k, tick in enumerate(writes):
            for conn, data in zip(conns, tick, strict=True):
                conn.data_received(data)
            if k % 50 == 49:
                await asyncio.sleep(0)  # let the flusher's completions in
        if prof:
            prof.disable()
        c1, w1, t1 = time.process_time(), time.perf_counter(), time.thread_time()
        n = 2 * ns.ticks * ns.streams
        print(f"{n} messages: {1e6 * (c1 - c0) / n:.2f} us/msg CPU (process, flusher "
              f"included; {1e6 * (t1 - t0) / n:.2f} on the event loop's thread), "
              f"{1e6 * (w1 - w0) / n:.2f} us/msg wall")  # fmt: skip
        for conn, gen in zip(conns, gens, strict=True):
            conn.data_received(gen.closing())
        await asyncio.gather(*(c.done for c in conns))
        assert all(c.session.complete for c in conns), "a stream did not end complete"
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    audit.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=500)
    ap.add_argument("--profile", action="store_true")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        run(_main(ns, Path(tmp)))


if __name__ == "__main__":
    main()
