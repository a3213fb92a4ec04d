"""``bench live``: concurrent real-time G.711 calls through the recording hook.

Each step starts N calls on one :class:`~recstream.aio.RecordingHook` and feeds
them for ``--duration`` seconds of wall time, the way a media server would:
160-byte frames every 20 ms per call, paced in real time by one ticker task
for all calls.  Calls are spread over ``--slots`` phases of the 20 ms period
(packets do not all arrive at the same instant), and each starts with a
random part of a segment already buffered (calls start at different times, so
their 16 KiB segments do not all fill in the same tick).  Optionally some calls
also carry a screen stream at ``--screen-bitrate``, in 100 ms chunks.

The ramp (e.g. 500, 1000, 2000, 5000, 8000 calls) finds the most calls one
process sustains in real time: the ticker keeps up (p99 tick lag within one
frame period, no growing lag, every frame handed over), and p99
segment-complete-to-disk latency (:meth:`Flusher.statistics`) stays within the
flush interval, with no recording failing.  CPU is the process's
user+system time over wall time (200% = both cores).

A frame also waits for its segment to fill before it can be encrypted: 16 KiB
of G.711 is 2.048 s.  That wait is the format's, not the pipeline's, and is
reported separately from the flush latency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from recstream.aio import DEFAULT_FLUSH_INTERVAL, RecordingHook
from recstream.aio.run import run as run_uvloop
from recstream.bench.fixtures import make_identity, random_bytes, work_directory
from recstream.bench.machine import describe_machine
from recstream.bench.modes import DEFAULT_CALLS, Progress
from recstream.bench.report import Column, Report
from recstream.bench.stats import Summary, summarize
from recstream.envelope import Recipient
from recstream.errors import PipelineError, PipelineOverflowError
from recstream.format import SEGMENT_SIZE, MediaKind

__all__ = ["LiveConfig", "StepResult", "run_from_args", "run_live"]

FRAME_BYTES = 160  # 20 ms of G.711 at 8000 samples/s, one byte each
FRAME_SECONDS = 0.020
G711_BYTES_PER_SECOND = FRAME_BYTES / FRAME_SECONDS
SCREEN_CHUNK_SECONDS = 0.100
SEGMENT_FILL_SECONDS = SEGMENT_SIZE / G711_BYTES_PER_SECOND  # 2.048 s
_START_BATCH = 200  # calls started concurrently


@dataclass(frozen=True, slots=True)
class LiveConfig:
    calls: tuple[int, ...] = DEFAULT_CALLS
    duration: float = 10.0
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    sync: bool = True
    directory: Path | None = None
    screen_calls: int = 0
    screen_bitrate: int = 2_000_000
    repeat: int = 1
    keep_going: bool = False
    slots: int = 10
    loop: str = "uvloop"
    seed: int = 1


@dataclass(slots=True)
class StepResult:
    calls: int
    loop: str
    wall: float
    cpu_percent: float
    cpu_us_per_frame: float
    lag_p50: float
    lag_p99: float
    lag_max: float
    lag_end: float
    flush_p50: float
    flush_p99: float
    flush_max: float
    segments: int
    frames_sent: int
    frames_expected: int
    errors: int
    overflows: int
    rss_mib: float
    failures: list[str] = field(default_factory=list)

    @property
    def sustained(self) -> bool:
        return not self.failures


def _rss_mib() -> float:
    """This process's resident memory now (not its peak: steps run in one process)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * resource.getpagesize() / (1 << 20)


def _pct(values: array[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class _Ticker:
    """One task feeding every call: frames every 20 ms, spread over ``slots`` phases."""

    def __init__(self, hook: RecordingHook, ids: list[str], screen: list[str], cfg: LiveConfig):
        self.hook = hook
        self.sub = FRAME_SECONDS / cfg.slots
        self.voice = [ids[i :: cfg.slots] for i in range(cfg.slots)]
        phases = max(1, round(SCREEN_CHUNK_SECONDS / self.sub))
        self.screen = [screen[i::phases] for i in range(phases)]
        self.frame = bytes(random_bytes(FRAME_BYTES))
        chunk = int(cfg.screen_bitrate / 8 * SCREEN_CHUNK_SECONDS)
        self.chunk = bytes(random_bytes(chunk)) if screen else b""
        self.lags: array[float] = array("d")
        self.sent = self.errors = self.overflows = 0

    def _deliver(self, calls: list[str], data: bytes, kind: MediaKind) -> None:
        media = self.hook.media
        for cid in calls:
            try:
                media(cid, data, kind)
            except PipelineOverflowError:
                self.overflows += 1
            except PipelineError:
                self.errors += 1
        if kind is MediaKind.VOICE:
            self.sent += len(calls)

    async def run(self, duration: float) -> None:
        start = time.monotonic()
        j = 0
        while (deadline := start + j * self.sub) < start + duration:
            now = time.monotonic()
            if deadline > now:
                await asyncio.sleep(deadline - now)
                now = time.monotonic()
            elif j % 8 == 0:
                await asyncio.sleep(0)  # behind: still let the flusher run
            self.lags.append(max(0.0, now - deadline))
            self._deliver(self.voice[j % len(self.voice)], self.frame, MediaKind.VOICE)
            if self.chunk:
                self._deliver(self.screen[j % len(self.screen)], self.chunk, MediaKind.SCREEN)
            j += 1


async def _start_calls(hook: RecordingHook, ids: list[str], screen: set[str]) -> None:
    for i in range(0, len(ids), _START_BATCH):
        batch = ids[i : i + _START_BATCH]
        await asyncio.gather(
            *(
                hook.start(
                    cid,
                    tenant="bench",
                    kinds=(MediaKind.VOICE, MediaKind.SCREEN)
                    if cid in screen
                    else (MediaKind.VOICE,),
                )
                for cid in batch
            )
        )


async def _stop_calls(hook: RecordingHook, ids: list[str]) -> None:
    for i in range(0, len(ids), _START_BATCH):
        await asyncio.gather(*(hook.stop(cid) for cid in ids[i : i + _START_BATCH]))


async def _step(cfg: LiveConfig, n: int, directory: Path, recipient: Recipient) -> StepResult:
    rng = random.Random(cfg.seed + n)  # noqa: S311 - staggering, not secrets
    ids = [f"call{i:05d}" for i in range(n)]
    screen = ids[: min(cfg.screen_calls, n)]
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    async with RecordingHook(
        directory, lambda _t, _k: [recipient], flush_interval=cfg.flush_interval, sync=cfg.sync
    ) as hook:
        await _start_calls(hook, ids, set(screen))
        preroll = bytes(SEGMENT_SIZE)
        for cid in ids:  # calls started at different times: segments fill out of step
            hook.media(cid, preroll[: rng.randrange(SEGMENT_SIZE // FRAME_BYTES) * FRAME_BYTES])
        await hook.flusher.flush_now()
        hook.flusher.latencies.clear()
        ticker = _Ticker(hook, ids, screen, cfg)
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        segments0 = hook.flusher.statistics().samples
        await ticker.run(cfg.duration)
        r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        rss = _rss_mib()
        stats = hook.flusher.statistics()
        await _stop_calls(hook, ids)
        errors = ticker.errors + len(hook.errors)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    tail = ticker.lags[-max(1, int(1.0 / ticker.sub)) :]
    result = StepResult(
        calls=n,
        loop=loop_name,
        wall=w1 - w0,
        cpu_percent=100 * cpu / (w1 - w0),
        cpu_us_per_frame=1e6 * cpu / max(1, ticker.sent),
        lag_p50=_pct(ticker.lags, 0.50),
        lag_p99=_pct(ticker.lags, 0.99),
        lag_max=max(ticker.lags, default=0.0),
        lag_end=sum(tail) / len(tail) if tail else 0.0,
        flush_p50=stats.latency_p50,
        flush_p99=stats.latency_p99,
        flush_max=stats.latency_max,
        segments=stats.samples - segments0,
        frames_sent=ticker.sent,
        frames_expected=int(cfg.duration / FRAME_SECONDS) * n,
        errors=errors,
        overflows=ticker.overflows,
        rss_mib=rss,
    )
    result.failures = _judge(result, cfg)
    return result


def _judge(r: StepResult, cfg: LiveConfig) -> list[str]:
    """Why a step was not sustained in real time (empty: it was)."""
    out = []
    if r.lag_p99 > FRAME_SECONDS:
        out.append(f"tick lag p99 {r.lag_p99 * 1e3:.0f} ms > {FRAME_SECONDS * 1e3:.0f} ms")
    if r.lag_end > FRAME_SECONDS:
        out.append(f"lag still {r.lag_end * 1e3:.0f} ms at the end (growing)")
    if r.frames_sent < 0.99 * r.frames_expected:
        out.append(f"only {r.frames_sent / max(1, r.frames_expected):.0%} of frames handed over")
    if r.flush_p99 > cfg.flush_interval:
        out.append(f"flush p99 {r.flush_p99:.2f} s > flush interval {cfg.flush_interval} s")
    if r.errors or r.overflows:
        out.append(f"{r.errors} errors, {r.overflows} overflows")
    return out


async def _ramp(
    cfg: LiveConfig, work: Path, recipient: Recipient, progress: Progress
) -> dict[int, list[StepResult]]:
    results: dict[int, list[StepResult]] = {n: [] for n in cfg.calls}
    limit: int | None = None
    for r in range(cfg.repeat):
        for n in cfg.calls:
            if limit is not None and n > limit and not cfg.keep_going:
                continue
            progress(f"round {r + 1}/{cfg.repeat}: {n} calls for {cfg.duration:g} s")
            step_dir = work / f"step-{r}-{n}"
            step_dir.mkdir()
            res = await _step(cfg, n, step_dir, recipient)
            shutil.rmtree(step_dir, ignore_errors=True)
            results[n].append(res)
            verdict = "sustained" if res.sustained else "NOT sustained: " + "; ".join(res.failures)
            progress(
                f"  {n} calls: CPU {res.cpu_percent:.0f}%, tick lag p99 "
                f"{res.lag_p99 * 1e3:.1f} ms, flush p99 {res.flush_p99 * 1e3:.0f} ms: {verdict}"
            )
            if not res.sustained and limit is None:
                limit = n
    return results


def _raise_fd_limit(calls: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = calls * 2 + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_live(cfg: LiveConfig, progress: Progress = lambda _: None) -> Report:
    """Run the live ramp; return its report."""
    report = Report(
        "live",
        describe_machine(),
        {
            "calls": ",".join(map(str, cfg.calls)),
            "duration_s": cfg.duration,
            "flush_interval_s": cfg.flush_interval,
            "sync": cfg.sync,
            "screen_calls": cfg.screen_calls,
            "screen_bitrate": cfg.screen_bitrate,
            "repeat": cfg.repeat,
            "loop": cfg.loop,
        },
    )
    _raise_fd_limit(max(cfg.calls) + cfg.screen_calls)
    per_call = cfg.duration * G711_BYTES_PER_SECOND * 1.2 + 4096
    screen = cfg.screen_calls * cfg.duration * cfg.screen_bitrate / 8 * 1.2
    with work_directory(cfg.directory, need_bytes=int(max(cfg.calls) * per_call + screen)) as work:
        report.parameters["directory"] = str(work.parent)
        recipient = make_identity(work, 2048).recipient
        coro = _ramp(cfg, work, recipient, progress)
        results = asyncio.run(coro) if cfg.loop == "asyncio" else run_uvloop(coro)
    _tabulate(report, cfg, results)
    report.check_noise()
    return report


def _ms(values: list[float]) -> Summary:
    return summarize([v * 1e3 for v in values])


def _tabulate(report: Report, cfg: LiveConfig, results: dict[int, list[StepResult]]) -> None:
    loops = {r.loop for runs in results.values() for r in runs}
    report.machine["event_loop"] = ",".join(sorted(loops))
    table = report.table(
        f"live G.711 calls, {cfg.duration:g} s per step, flush interval {cfg.flush_interval:g} s, "
        f"sync={'on' if cfg.sync else 'off'}, loop {report.machine['event_loop']}",
        Column("calls", "calls"),
        Column("sustained", "sustained"),
        Column("cpu_percent", "CPU %", noise_floor=5),
        Column("cpu_us_frame", "CPU us/frame", 2, noise_floor=0.3),
        Column("lag_p99_ms", "tick lag p99 ms", 1, noise_floor=5),
        Column("lag_max_ms", "tick lag max ms", 1, noise_floor=10),
        Column("flush_p50_ms", "flush p50 ms", noise_floor=50),
        Column("flush_p99_ms", "flush p99 ms", noise_floor=50),
        Column("flush_max_ms", "flush max ms", noise_floor=50),
        Column("segments", "segments", noise_floor=float("inf")),
        Column("rss_mib", "RSS MiB", noise_floor=float("inf")),
    )
    lat = report.curve(
        "segment-complete to disk, p99",
        "concurrent calls",
        "ms",
        hlines={"flush interval": cfg.flush_interval * 1e3},
    )
    cpu = report.curve("CPU (200% = both cores)", "concurrent calls", "CPU %")
    lag = report.curve(
        "ticker lag p99",
        "concurrent calls",
        "ms",
        hlines={"one frame (20 ms)": FRAME_SECONDS * 1e3},
    )
    best = 0
    for n, runs in results.items():
        if not runs:
            continue
        passed = sum(r.sustained for r in runs)
        ok = passed * 2 > len(runs)
        best = max(best, n) if ok else best
        row = {
            "cpu_percent": summarize([r.cpu_percent for r in runs]),
            "cpu_us_frame": summarize([r.cpu_us_per_frame for r in runs]),
            "lag_p99_ms": _ms([r.lag_p99 for r in runs]),
            "flush_p99_ms": _ms([r.flush_p99 for r in runs]),
        }
        table.add(
            calls=n,
            sustained=f"{'yes' if ok else 'no'} ({passed}/{len(runs)})",
            lag_max_ms=_ms([r.lag_max for r in runs]),
            flush_p50_ms=_ms([r.flush_p50 for r in runs]),
            flush_max_ms=_ms([r.flush_max for r in runs]),
            segments=summarize([r.segments for r in runs]),
            rss_mib=summarize([r.rss_mib for r in runs]),
            **row,
        )
        lat.point("flush p99", n, row["flush_p99_ms"])
        cpu.point("process CPU", n, row["cpu_percent"])
        lag.point("tick lag p99", n, row["lag_p99_ms"])
        for r in runs:
            if r.failures:
                report.notes.append(f"{n} calls not sustained: {'; '.join(r.failures)}")
    report.parameters["max_sustained_calls"] = best
    report.notes += [
        f"most calls sustained in real time: {best or 'none of the steps'}"
        + (f" (of {max(results)} tried)" if results else ""),
        f"frame-to-disk = segment fill + flush: a G.711 frame waits up to "
        f"{SEGMENT_FILL_SECONDS:.3f} s (mean {SEGMENT_FILL_SECONDS / 2:.2f} s) for its 16 KiB "
        "segment to fill before it can be encrypted; the flush columns are "
        "segment-complete-to-disk (Flusher.statistics), the part the pipeline controls.",
        "sustained = ticker p99 lag <= 20 ms and not growing, >= 99% of frames handed over, "
        "flush p99 <= the flush interval, no errors or overflows (in most runs).",
        "RSS MiB is this whole process's resident memory at the end of the step's "
        "feeding (all calls open), harness included.",
        "CPU us/frame = the process's CPU time over the frames handed over (the ticker, the "
        "hook, encryption and the flusher's thread): steadier than wall-clock verdicts when "
        "neighbours load the machine.  The Python side is bound to one core by the GIL, so "
        "1e6 / (CPU us/frame) / 50 is a rough ceiling on calls per process.",
    ]


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    flush = DEFAULT_FLUSH_INTERVAL if ns.flush_interval is None else ns.flush_interval
    if ns.duration <= 0 or flush <= 0 or ns.screen < 0 or ns.screen_bitrate <= 0:
        msg = "--duration, --flush-interval and --screen-bitrate must be positive, --screen >= 0"
        raise ValueError(msg)
    cfg = LiveConfig(
        calls=tuple(sorted(set(ns.calls))),
        duration=ns.duration,
        flush_interval=flush,
        sync=not ns.no_sync,
        directory=ns.dir,
        screen_calls=ns.screen,
        screen_bitrate=int(ns.screen_bitrate),
        repeat=ns.repeat,
        keep_going=ns.keep_going,
        slots=ns.slots,
        loop=ns.loop,
    )
    return run_live(cfg, progress)
