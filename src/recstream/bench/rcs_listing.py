"""``bench rcs --listing N``: listing latency over N recordings, and its effect on playback.

One ``recstream serve`` (the real CLI) serves an archive of ``N`` recordings of
the user's tenant (1,000 per directory) and ``N / 10`` of another tenant, plus
one 16 MiB recording to play.  Once the server's header index has every
recording (the first listing answers only then), three subjects are
interleaved round by round:

* ``listing``: ``--listing-clients`` clients, each paging through the listing
  (``?limit=100``, then ``after=`` the previous page's ``next``), every
  request timed;
* ``playback alone``: ``--streams`` Range streams of the 16 MiB recording from
  seeded random offsets, ``--concurrency`` at a time;
* ``playback + listing``: the same streams while the listing clients page as
  fast as they can; both are timed.

Reported: listing p50/p99 per request (alone and under playback), playback
p50/p99 time to the first and the last byte with and without the listing
clients, and the ratio of the two, measured in the same rounds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from recstream.aio.run import run
from recstream.bench.fixtures import BenchError
from recstream.bench.report import Column, Report
from recstream.bench.stats import interleave, summarize
from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import MediaKind

__all__ = ["ListingRun", "measure_listing", "write_archive"]

PER_DIRECTORY = 1000
PAGE = 100
PLAYBACK_BYTES = 16 << 20
_PLAY_NAME = "play/load.rsv"


@dataclass(slots=True)
class ListingRun:
    listing: list[float] = field(default_factory=list)  # seconds per listing request
    first: list[float] = field(default_factory=list)  # playback: seconds to the first byte
    last: list[float] = field(default_factory=list)  # playback: seconds to the last byte
    pages: int = 0


def write_archive(root: Path, recipient: Recipient, tenant: str, count: int) -> int:
    """``count`` small recordings of ``tenant`` and ``count // 10`` of another, plus the
    recording to play; returns the number of files written."""
    written = 0
    for t, n in ((tenant, count), ("other-tenant", count // 10)):
        for i in range(n):
            d = root / t / f"d{i // PER_DIRECTORY:04}"
            if i % PER_DIRECTORY == 0:
                d.mkdir(parents=True, exist_ok=True)
            meta = new_metadata(
                recording_id=f"{t}-{i}",
                tenant=t,
                media_kind=MediaKind.VOICE,
                media_type="audio/basic",
            )
            enc = EnvelopeEncryptor([recipient], meta)
            (d / f"r{i:07}.rsv").write_bytes(enc.update(b"\0" * 160) + enc.finalize())
            written += 1
    play = root / _PLAY_NAME
    play.parent.mkdir(parents=True, exist_ok=True)
    meta = new_metadata(
        recording_id="play", tenant=tenant, media_kind=MediaKind.VOICE, media_type="audio/basic"
    )
    enc = EnvelopeEncryptor([recipient], meta)
    block = random.Random(7).randbytes(1 << 20)  # noqa: S311 - filler, not a secret
    with play.open("wb") as fh:
        for _ in range(PLAYBACK_BYTES >> 20):
            fh.write(enc.update(block))
        fh.write(enc.finalize())
    return written + 1


async def _wait_indexed(url: str, token: str, seconds: float) -> None:
    """Until the server answers a listing: the first one waits for the whole index."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url}/rcs/recordings?limit=1", headers=headers) as r,
        ):
            if r.status != 200:
                msg = f"listing: HTTP {r.status}"
                raise BenchError(msg)
    except TimeoutError:
        msg = f"listing: the server had not indexed the archive after {seconds:g} s"
        raise BenchError(msg) from None


async def _lister(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    out: ListingRun,
    *,
    stop: asyncio.Event | None,
    requests: int,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    after: str | None = None
    done = 0
    while (stop is not None and not stop.is_set()) or (stop is None and done < requests):
        q = f"?limit={PAGE}" + (f"&after={after}" if after else "")
        t0 = time.perf_counter()
        async with session.get(f"{url}/rcs/recordings{q}", headers=headers) as r:
            if r.status != 200:
                msg = f"listing: HTTP {r.status}"
                raise BenchError(msg)
            body = await r.json()
        out.listing.append(time.perf_counter() - t0)
        if len(body["recordings"]) != PAGE and body["next"] is not None:
            msg = "listing: a short page that is not the last"
            raise BenchError(msg)
        after = body["next"]
        out.pages += 1
        done += 1


async def _play(
    session: aiohttp.ClientSession, url: str, token: str, offset: int, out: ListingRun
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Range": f"bytes={offset}-"}
    t0 = time.perf_counter()
    got = 0
    async with session.get(f"{url}/rcs/recordings/{_PLAY_NAME}", headers=headers) as r:
        if r.status != 206:
            msg = f"playback: HTTP {r.status}"
            raise BenchError(msg)
        async for chunk in r.content.iter_chunked(256 * 1024):
            if not got:
                out.first.append(time.perf_counter() - t0)
            got += len(chunk)
    if got != PLAYBACK_BYTES - offset:
        msg = f"playback: {got} bytes from {offset}, expected {PLAYBACK_BYTES - offset}"
        raise BenchError(msg)
    out.last.append(time.perf_counter() - t0)


async def _round(
    url: str,
    token: str,
    *,
    listers: int,
    requests: int,
    offsets: Sequence[int],
    concurrency: int,
    with_listing: bool,
    with_playback: bool,
) -> ListingRun:
    out = ListingRun()
    connector = aiohttp.TCPConnector(limit=listers + concurrency + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        if not with_playback:
            await asyncio.gather(
                *(
                    _lister(session, url, token, out, stop=None, requests=requests)
                    for _ in range(listers)
                )
            )
            return out
        stop = asyncio.Event()
        background = [
            asyncio.create_task(_lister(session, url, token, out, stop=stop, requests=requests))
            for _ in range(listers if with_listing else 0)
        ]
        gate = asyncio.Semaphore(concurrency)

        async def one(offset: int) -> None:
            async with gate:
                await _play(session, url, token, offset, out)

        try:
            await asyncio.gather(*(one(o) for o in offsets))
        finally:
            stop.set()
            await asyncio.gather(*background)
    return out


def measure_listing(
    report: Report,
    url: str,
    token: str,
    count: int,
    *,
    listers: int,
    streams: int,
    concurrency: int,
    repeat: int,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Run the three subjects against the server at ``url``; add the tables to ``report``."""
    run(_wait_indexed(url, token, 600.0))
    rng = random.Random(count)  # noqa: S311 - seek offsets, not secrets
    offsets = [rng.randrange(PLAYBACK_BYTES) for _ in range(streams)]
    requests = 50

    def subject(with_listing: bool, with_playback: bool) -> Callable[[], ListingRun]:
        def go() -> ListingRun:
            return run(
                _round(
                    url,
                    token,
                    listers=listers,
                    requests=requests,
                    offsets=offsets,
                    concurrency=concurrency,
                    with_listing=with_listing,
                    with_playback=with_playback,
                )
            )

        return go

    try:
        runs = _interleaved(subject, repeat, progress)
    except (aiohttp.ClientError, TimeoutError) as exc:
        msg = f"listing: {exc!r}"
        raise BenchError(msg) from exc
    _tabulate(report, count, listers=listers, streams=streams, concurrency=concurrency, runs=runs)


def _interleaved(
    subject: Callable[[bool, bool], Callable[[], ListingRun]],
    repeat: int,
    progress: Callable[[str], None] | None,
) -> dict[str, list[ListingRun]]:
    return interleave(
        {
            "listing": subject(True, False),
            "playback alone": subject(False, True),
            "playback + listing": subject(True, True),
        },
        repeat,
        progress=progress,
    )


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def _tabulate(
    report: Report,
    count: int,
    *,
    listers: int,
    streams: int,
    concurrency: int,
    runs: dict[str, list[ListingRun]],
) -> None:
    lt = report.table(
        f"listing {count:,} recordings of the user's tenant (+{count // 10:,} of another): "
        f"GET /rcs/recordings?limit={PAGE}&after=..., {listers} clients paging",
        Column("subject", "subject"),
        Column("requests", "requests/run"),
        Column("p50_ms", "p50 ms", 2, noise_floor=5.0),
        Column("p99_ms", "p99 ms", 2, noise_floor=10.0),
        Column("max_ms", "max ms", 2, noise_floor=10.0),
    )
    for name in ("listing", "playback + listing"):
        rs = runs[name]
        lt.add(
            subject=f"{name} (listing requests)",
            requests=str(round(sum(len(r.listing) for r in rs) / len(rs))),
            p50_ms=summarize([_pct(r.listing, 50) * 1e3 for r in rs]),
            p99_ms=summarize([_pct(r.listing, 99) * 1e3 for r in rs]),
            max_ms=summarize([max(r.listing) * 1e3 for r in rs]),
        )
    pt = report.table(
        f"playback of a 16 MiB recording during the listing: {streams} Range streams, "
        f"{concurrency} at a time, alone and with {listers} listing clients",
        Column("subject", "subject"),
        Column("first_p50_ms", "1st byte p50 ms", 1, noise_floor=10.0),
        Column("first_p99_ms", "1st byte p99 ms", 1, noise_floor=10.0),
        Column("last_p50_s", "last byte p50 s", 3, noise_floor=0.02),
        Column("last_p99_s", "last byte p99 s", 3, noise_floor=0.02),
    )
    for name in ("playback alone", "playback + listing"):
        rs = runs[name]
        pt.add(
            subject=name,
            first_p50_ms=summarize([_pct(r.first, 50) * 1e3 for r in rs]),
            first_p99_ms=summarize([_pct(r.first, 99) * 1e3 for r in rs]),
            last_p50_s=summarize([_pct(r.last, 50) for r in rs]),
            last_p99_s=summarize([_pct(r.last, 99) for r in rs]),
        )
    alone, busy = runs["playback alone"], runs["playback + listing"]
    ratios = [_pct(b.last, 50) / _pct(a.last, 50) for a, b in zip(alone, busy, strict=True)]
    p99 = summarize([_pct(r.listing, 99) * 1e3 for r in runs["listing"]])
    report.notes.append(
        f"listing p99 at {count:,} recordings: {p99.median:.2f} ms (median of runs; "
        f"{p99.min:.2f}-{p99.max:.2f}); playback last-byte p50 with the listing clients / "
        f"without, round by round: {', '.join(f'{x:.2f}x' for x in ratios)}."
    )
