"""``bench streams``: concurrent two-track media streams over loopback, ramped.

The real endpoint (:mod:`recstream.streams.server`, uvloop, a recording hook
writing encrypted two-track recordings) runs in a child process
(:mod:`recstream.bench._streams_server`); this process is the platform: N
WebSockets on 127.0.0.1, each a Twilio-style fork (``connected``, ``start``
with both tracks, then an ``inbound`` and an ``outbound`` ``media`` message of
160 bytes every 20 ms, paced in real time by one ticker over ``--slots``
phases, then ``stop``).

A step is **sustained** when, over ``--duration`` seconds:

* the load generator sent every message and ended on time (its tick lag not
  growing) -- otherwise the machine could not even produce the load;
* the server kept real time: each chunk that sealed a segment was read at most
  ``--max-late`` (default 250 ms) after its timestamp said it was spoken, p99.
  This lateness includes the generator's own and the machine's scheduling
  delays: a recorder need not be interactive, but it must not fall behind;
* p99 segment-sealed-to-disk stays within the flush interval;
* every stream was accepted and ended as a complete recording.

Chunk-to-disk is reported as its parts, p99 each: how late the server read the
chunk, how long its 16 KiB segment took to fill (two tracks: ~1 s, the format's
share), and sealed-to-disk (the flusher); their sum bounds the p99.  CPU is each
process's user+system time over wall time (100% = one core of the two).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import secrets
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recstream.aio import DEFAULT_FLUSH_INTERVAL
from recstream.aio.batching import DEFAULT_CYCLE, MAX_CYCLE, MIN_CYCLE
from recstream.aio.run import run as run_uvloop
from recstream.bench._streams_client import FRAME_SECONDS, Platform
from recstream.bench.fixtures import BenchError, make_identity, work_directory
from recstream.bench.machine import cpu_times, describe_machine, machine_busy
from recstream.bench.modes import DEFAULT_STREAMS, Progress
from recstream.bench.report import Column, Report
from recstream.bench.stats import summarize

__all__ = ["DEFAULT_STREAMS", "StreamsConfig", "run_from_args", "run_streams"]


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    streams: tuple[int, ...] = DEFAULT_STREAMS
    duration: float = 10.0
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    sync: bool = True
    slots: int = 10
    max_late: float = 0.25
    keep_going: bool = False
    repeat: int = 1
    directory: Path | None = None
    processes: tuple[int, ...] = (1,)  # each step runs against each server size
    reference: bool = True
    read_batch: float = DEFAULT_CYCLE  # the server's [server] read_batch_ms, in seconds
    ticks_per_write: int = 1  # > 1: the generator coalesces ticks (not Twilio's cadence)


@dataclass(slots=True)
class StepResult:
    streams: int
    client_cpu: float
    server_cpu: float
    lag_p99: float
    lag_end: float
    late_p50: float
    late_p99: float
    late_max: float
    fill_p99: float
    flush_p99: float
    messages: int
    complete: int
    server: dict[str, Any]
    load: float = 0.0
    client_user: float = 0.0  # the generator's CPU seconds over the step, user and system
    client_system: float = 0.0
    # The whole machine over the step, % of one core: everything (server, generator,
    # kernel threads, anyone else) and the softirq part of it; None where unknown.
    machine: tuple[float, float] | None = None
    per_write: int = 1  # media ticks per write (the generator's --ticks-per-write)
    failures: list[str] = field(default_factory=list)

    @property
    def sustained(self) -> bool:
        return not self.failures

    @property
    def server_us_per_message(self) -> float:
        return 1e6 * float(self.server["cpu_seconds"]) / max(1, self.messages)

    @property
    def server_us_split(self) -> tuple[float, float]:
        """The server's user and system CPU per message."""
        n = max(1, self.messages)
        return 1e6 * self.server["user_seconds"] / n, 1e6 * self.server["system_seconds"] / n

    @property
    def client_us_per_write(self) -> tuple[float, float]:
        """The generator's user and system CPU per write (one write: two media messages)."""
        writes = max(1, self.messages // (2 * self.per_write))
        return 1e6 * self.client_user / writes, 1e6 * self.client_system / writes

    @property
    def chunk_to_disk_p99(self) -> float:
        return max(0.0, self.late_p99) + self.fill_p99 + self.flush_p99


def _pct(values: array[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def _step_blocking(cfg: StreamsConfig, n: int, url: str, conns: list[Any]) -> StepResult:
    """One step, in one thread: open ``n`` forks, reset the server's window, tick, stop."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    platform = Platform(host, port, target)
    try:
        platform.open(n)
        _ask_all(conns, ("reset",))
        before = cpu_times()
        # A generator that fell this far behind has failed the step: it stops there
        # instead of sending the backlog (on a loaded machine that took minutes).
        ticked = platform.run(
            cfg.duration,
            cfg.slots,
            give_up=max(2.0, 4 * cfg.max_late),
            per_write=cfg.ticks_per_write,
        )
        busy = machine_busy(before, cpu_times())
        server = _merge(_ask_all(conns, ("stats",)))
        done = platform.stop()
    finally:
        platform.close()
    lags = ticked.lags
    tail = lags[-max(1, int(1.0 / (FRAME_SECONDS / cfg.slots))) :]
    result = StepResult(
        streams=n,
        client_cpu=100 * (ticked.user + ticked.system) / ticked.wall,
        server_cpu=server["cpu_percent"],
        lag_p99=_pct(lags, 0.99),
        lag_end=sum(tail) / len(tail) if tail else 0.0,
        late_p50=server["late_p50"],
        late_p99=server["late_p99"],
        late_max=server["late_max"],
        fill_p99=server["fill_p99"],
        flush_p99=server["flush_p99"],
        messages=ticked.sent,
        complete=done,
        server=server,
        load=os.getloadavg()[0],
        client_user=ticked.user,
        client_system=ticked.system,
        machine=busy,
        per_write=cfg.ticks_per_write,
    )
    result.failures = _judge(result, cfg)
    return result


async def _step(cfg: StreamsConfig, n: int, url: str, conns: list[Any]) -> StepResult:
    return await asyncio.to_thread(_step_blocking, cfg, n, url, conns)


def _ask_all(conns: list[Any], command: tuple[str, ...]) -> list[Any]:
    for conn in conns:
        conn.send(command)
    return [conn.recv() for conn in conns]


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's figures from its processes' (CPU summed, samples pooled)."""
    wall = max(p["wall"] for p in parts)
    late = array("d", [x for p in parts for x in p["late"]])
    fill = array("d", [x for p in parts for x in p["fill"]])
    flush = array("d", [x for p in parts for x in p["flush"]])
    return {
        "cpu_percent": 100 * sum(p["cpu_seconds"] for p in parts) / wall,
        "cpu_seconds": sum(p["cpu_seconds"] for p in parts),
        "user_seconds": sum(p["user_seconds"] for p in parts),
        "system_seconds": sum(p["system_seconds"] for p in parts),
        "late_p50": _pct(late, 0.50),
        "late_p99": _pct(late, 0.99),
        "late_max": max(late, default=0.0),
        "fill_p99": _pct(fill, 0.99),
        "flush_p99": _pct(flush, 0.99),
        "segments": len(fill),
        **{k: sum(p[k] for p in parts) for k in ("open", "accepted", "refused", "hook_errors")},
        "rss_mib": sum(p["rss_mib"] for p in parts),
    }


def _timed(values: list[float]) -> Any:
    return summarize(values) if values else None


def _judge(r: StepResult, cfg: StreamsConfig) -> list[str]:
    out = []
    if not r.server["segments"]:
        out.append("no segment was sealed: lateness and chunk-to-disk not measured")
    expected = r.streams * 2 * int(cfg.duration / FRAME_SECONDS)
    if r.messages < 0.99 * expected or r.lag_end > FRAME_SECONDS:
        out.append(
            f"load generator behind ({r.messages / expected:.0%} of messages sent, "
            f"tick lag {r.lag_end * 1e3:.0f} ms at the end)"
        )
    if r.late_p99 > cfg.max_late:
        out.append(f"server read chunks {r.late_p99 * 1e3:.0f} ms late (p99)")
    if r.flush_p99 > cfg.flush_interval:
        out.append(f"flush p99 {r.flush_p99:.2f} s > {cfg.flush_interval:g} s")
    if r.complete != r.streams or r.server["refused"] or r.server["hook_errors"]:
        out.append(
            f"{r.complete}/{r.streams} complete recordings, {r.server['refused']} refused, "
            f"{r.server['hook_errors']} recording errors"
        )
    return out


async def _ramp(
    cfg: StreamsConfig,
    targets: dict[int, tuple[str, list[Any]]],
    bare: tuple[str, list[Any]] | None,
    progress: Progress,
) -> tuple[dict[int, dict[int, list[StepResult]]], dict[int, list[StepResult]]]:
    """Each step: the bare reference consumer (if any), then recstream with each number
    of server processes, same load; results by process count, then streams."""
    results: dict[int, dict[int, list[StepResult]]] = {
        p: {n: [] for n in cfg.streams} for p in targets
    }
    references: dict[int, list[StepResult]] = {n: [] for n in cfg.streams}
    limit: dict[int, int | None] = dict.fromkeys(targets)
    for rnd in range(cfg.repeat):
        for n in cfg.streams:
            wanted = [p for p in targets if cfg.keep_going or n <= (limit[p] or n)]
            if not wanted:
                continue
            if bare is not None:
                progress(f"round {rnd + 1}/{cfg.repeat}: {n} streams to the bare reference")
                references[n].append(await _step(cfg, n, *bare))
            for p in wanted:
                progress(
                    f"round {rnd + 1}/{cfg.repeat}: {n} two-track streams for {cfg.duration:g} s, "
                    f"{p} server process{'es' if p > 1 else ''}"
                )
                res = await _step(cfg, n, *targets[p])
                results[p][n].append(res)
                cu, cs = res.client_us_per_write
                su, ss = res.server_us_split
                verdict = (
                    "sustained" if res.sustained else "NOT sustained: " + "; ".join(res.failures)
                )
                whole = (
                    f", machine {res.machine[0]:.0f}% busy ({res.machine[1]:.0f}% softirq)"
                    if res.machine
                    else ""
                )
                progress(
                    f"  {n} streams: server CPU {res.server_cpu:.0f}% "
                    f"({su:.1f} us user + {ss:.1f} us sys per msg), client CPU "
                    f"{res.client_cpu:.0f}% ({cu:.1f} us user + {cs:.1f} us sys per write){whole}, "
                    f"late p99 {res.late_p99 * 1e3:.0f} ms, chunk-to-disk "
                    f"p99 <= {res.chunk_to_disk_p99:.2f} s: {verdict}"
                )
                if not res.sustained and limit[p] is None:
                    limit[p] = n
    return results, references


def run_streams(cfg: StreamsConfig, progress: Progress = lambda _: None) -> Report:
    """Run the ramp; return its report."""
    report = Report(
        "streams",
        describe_machine(),
        {
            "streams": ",".join(map(str, cfg.streams)),
            "duration_s": cfg.duration,
            "flush_interval_s": cfg.flush_interval,
            "sync": cfg.sync,
            "slots": cfg.slots,
            "max_late_s": cfg.max_late,
            "repeat": cfg.repeat,
            "processes": ",".join(map(str, cfg.processes)),
            "read_batch_ms": cfg.read_batch * 1000,
            "ticks_per_write": cfg.ticks_per_write,
        },
    )
    report.machine["cpu_flags"] = _cpu_flags()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(cfg.streams) * 2 + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    per_stream = cfg.duration * 16_000 * 1.3 + 8192
    need = int(max(cfg.streams) * per_stream * cfg.repeat * len(cfg.processes))
    with work_directory(cfg.directory, need_bytes=need) as work:
        report.parameters["directory"] = str(work.parent)
        ident = make_identity(work, 2048)
        secret = secrets.token_urlsafe(24)
        ctx = multiprocessing.get_context("spawn")
        opts = {
            "directory": str(work),
            "cert": str(ident.cert_path),
            "max_streams": max(cfg.streams) + 16,
            "flush_interval": cfg.flush_interval,
            "sync": cfg.sync,
            "secret": secret,
            "read_batch": cfg.read_batch,
        }
        procs: list[Any] = []
        try:
            bare = None
            if cfg.reference:
                conns, url = _start_servers(ctx, {**opts, "bare": True}, 1, procs)
                bare = (f"{url}?token=x", conns)
            targets = {}
            for p in cfg.processes:  # idle between their steps: they cost nothing then
                conns, url = _start_servers(ctx, opts, p, procs)
                targets[p] = (f"{url}?token={secret}", conns)
            results, references = run_uvloop(_ramp(cfg, targets, bare, progress))
            every = [c for _, cs in targets.values() for c in cs]
            _stop_servers([*every, *(bare[1] if bare else [])], procs)
        finally:
            for proc in procs:
                proc.join(60)
                if proc.is_alive():
                    proc.terminate()
    best = 0
    for p, by_streams in results.items():
        most = _tabulate(report, cfg, p, by_streams, references)
        report.parameters[f"max_sustained_streams_{p}proc"] = most
        best = max(best, most)
    report.parameters["max_sustained_streams"] = best
    report.notes += [
        f"most two-track streams sustained in real time: {best or 'none of the steps'} "
        f"(target 2,000; of {max(cfg.streams)} tried)",
        "each stream is 2 media messages per 20 ms (100 WebSocket messages/s), base64 JSON "
        "as Twilio sends them; server and load generator share the machine's cores",
        "client CPU: the load generator (one thread, raw non-blocking sockets, one send() of "
        "two ready-made masked frames per stream per 20 ms); it runs on the same 2 cores as "
        "the server, and on loopback its send() also runs the receiver's TCP input (system time)",
        "load avg: the machine's 1-minute load at the end of each step (2 cores): above 2, "
        "other work was taking CPU from both processes, and a step can fail for that alone",
        "chunk-to-disk p99 <= server late p99 + segment fill p99 + sealed-to-disk p99: the "
        "fill (16 KiB of two 8 kB/s tracks plus record headers, ~1 s) is the format's share",
        f"CPU features seen: {report.machine['cpu_flags'] or 'unknown'}",
    ]
    report.check_noise()
    return report


def _start_servers(
    ctx: Any, opts: dict[str, Any], n: int, procs: list[Any]
) -> tuple[list[Any], str]:
    """Start ``n`` server processes (the first binds a port, the others share it)."""
    from recstream.bench._streams_server import serve

    opts = {**opts, "port": 0, "reuse_port": n > 1}
    conns: list[Any] = []
    url = ""
    for i in range(n):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child, opts), daemon=True)
        proc.start()
        procs.append(proc)
        conns.append(parent)
        if not parent.poll(120):
            msg = f"streams server process {i} did not start within 120 s"
            raise BenchError(msg)
        url = parent.recv()[1]
        opts["port"] = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    return conns, url


def _stop_servers(conns: list[Any], procs: list[Any]) -> None:
    for parent in conns:
        parent.send(("stop",))
    for proc in procs:
        proc.join(60)


def _cpu_flags() -> str:
    """The SIMD and AES features the CPU reports (what the AES-GCM and JSON paths can use)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover - not Linux
        return ""
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith(("flags", "Features"))), [])  # fmt: skip
    wanted = ("aes", "pclmulqdq", "vaes", "vpclmulqdq", "avx", "avx2", "avx512f", "sha_ni",
              "sse4_2", "pmull", "sha2")  # fmt: skip
    return " ".join(f for f in wanted if f in flags)


def _tabulate(
    report: Report,
    cfg: StreamsConfig,
    processes: int,
    results: dict[int, list[StepResult]],
    references: dict[int, list[StepResult]],
) -> int:
    """One table (and curves) for one server size; return the most streams it sustained."""
    table = report.table(
        f"two-track media streams over loopback, {processes} server process(es), "
        f"{cfg.duration:g} s per step, flush interval "
        f"{cfg.flush_interval:g} s, sync={'on' if cfg.sync else 'off'}, "
        f"read batching {cfg.read_batch * 1000:g} ms"
        + (
            f", the generator writing {cfg.ticks_per_write} ticks at once (not Twilio's cadence)"
            if cfg.ticks_per_write > 1
            else ""
        ),
        Column("streams", "streams"),
        Column("sustained", "sustained"),
        Column("complete", "complete recordings"),
        Column("server_cpu", "server CPU %", noise_floor=5),
        Column("client_cpu", "client CPU %", noise_floor=5),
        Column("client_us", "client us/write user+sys", noise_floor=float("inf")),
        Column("machine", "machine busy % (softirq)", noise_floor=float("inf")),
        Column("msgs", "msgs/s", noise_floor=float("inf")),
        Column("us_msg", "server us/msg", 1, noise_floor=3),
        Column("server_split", "server us/msg user+sys", noise_floor=float("inf")),
        Column("bare_us", "bare us/msg", 1, noise_floor=3),
        Column("x_bare", "x bare", 2, noise_floor=0.3),
        Column("lag_p99_ms", "client lag p99 ms", 1, noise_floor=5),
        Column("late_p99_ms", "server late p99 ms", 0, noise_floor=20),
        Column("fill_p99_ms", "fill p99 ms", noise_floor=50),
        Column("flush_p99_ms", "flush p99 ms", noise_floor=50),
        Column("c2d_p99_ms", "chunk-to-disk p99 <= ms", noise_floor=50),
        Column("rss_mib", "server RSS MiB", noise_floor=float("inf")),
        Column("load", "load avg", 1, noise_floor=float("inf")),
    )
    cpu = report.curve(
        f"server CPU, {processes} process(es) (100% = one core)", "concurrent streams", "CPU %"
    )
    c2d = report.curve(f"chunk-to-disk p99 (bound), {processes} process(es)", "streams", "ms")
    note = (
        "reference, same run and load, just before each step: a bare aiohttp WebSocket "
        "consumer (receive + json.loads, no checks, no recording); 'bare us/msg' is its "
        "CPU per message and 'x bare' recstream's server CPU per message over it"
    )
    if any(references.values()) and note not in report.notes:
        report.notes.append(note)
    best = 0
    for n, runs in results.items():
        if not runs:
            continue
        passed = sum(r.sustained for r in runs)
        ok = passed * 2 > len(runs)
        best = max(best, n) if ok else best
        refs = references.get(n, [])
        # The timings come from sealed segments: a step too short or too starved to seal
        # one measured none (shown empty, never as 0 ms).
        sealed = [r for r in runs if r.server["segments"]]
        row = {
            "server_cpu": summarize([r.server_cpu for r in runs]),
            "c2d_p99_ms": _timed([r.chunk_to_disk_p99 * 1e3 for r in sealed]),
        }
        table.add(
            streams=n,
            sustained=f"{'yes' if ok else 'no'} ({passed}/{len(runs)})",
            complete=f"{min(r.complete for r in runs)}/{n}",
            client_cpu=summarize([r.client_cpu for r in runs]),
            client_us=" / ".join(
                f"{u:.1f}+{k:.1f}" for u, k in (r.client_us_per_write for r in runs)
            ),
            machine=" / ".join(
                f"{b:.0f} ({si:.0f})" for b, si in (r.machine for r in runs if r.machine)
            )
            or None,
            msgs=summarize([r.messages / cfg.duration for r in runs]),
            us_msg=summarize([r.server_us_per_message for r in runs]),
            server_split=" / ".join(
                f"{u:.1f}+{k:.1f}" for u, k in (r.server_us_split for r in runs)
            ),
            bare_us=summarize([b.server_us_per_message for b in refs]) if refs else None,
            x_bare=summarize(
                [
                    r.server_us_per_message / b.server_us_per_message
                    for r, b in zip(runs, refs, strict=False)
                ]
            )
            if refs
            else None,
            lag_p99_ms=summarize([r.lag_p99 * 1e3 for r in runs]),
            late_p99_ms=_timed([r.late_p99 * 1e3 for r in sealed]),
            fill_p99_ms=_timed([r.fill_p99 * 1e3 for r in sealed]),
            flush_p99_ms=_timed([r.flush_p99 * 1e3 for r in sealed]),
            rss_mib=summarize([r.server["rss_mib"] for r in runs]),
            load=summarize([r.load for r in runs]),
            **row,
        )
        cpu.point("server", n, row["server_cpu"])
        if row["c2d_p99_ms"] is not None:
            c2d.point("chunk-to-disk p99", n, row["c2d_p99_ms"])
        for r in runs:
            if r.failures:
                report.notes.append(
                    f"{n} streams, {processes} process(es), not sustained: {'; '.join(r.failures)}"
                )
    return best


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    flush = DEFAULT_FLUSH_INTERVAL if ns.flush_interval is None else ns.flush_interval
    if ns.duration <= 0 or flush <= 0 or ns.max_late <= 0:
        msg = "--duration, --flush-interval and --max-late must be positive"
        raise ValueError(msg)
    ms = ns.read_batch_ms
    if ms != 0 and not MIN_CYCLE * 1000 <= ms <= MAX_CYCLE * 1000:
        msg = f"--read-batch-ms must be 0 (off) or {MIN_CYCLE * 1000:g} to {MAX_CYCLE * 1000:g}"
        raise ValueError(msg)
    cfg = StreamsConfig(
        streams=tuple(sorted(set(ns.streams))),
        duration=ns.duration,
        flush_interval=flush,
        sync=not ns.no_sync,
        slots=ns.slots,
        max_late=ns.max_late,
        keep_going=ns.keep_going,
        repeat=ns.repeat,
        directory=ns.dir,
        processes=tuple(sorted(set(ns.processes))),
        reference=not ns.no_reference,
        read_batch=ns.read_batch_ms / 1000,
        ticks_per_write=ns.ticks_per_write,
    )
    return run_streams(cfg, progress)
