"""``bench rcs``: the Recording Crypto Server under load, over HTTP on loopback.

For each recording size a fresh ``recstream serve`` process (the real CLI, a
real keystore, a real user with a bearer token) listens on 127.0.0.1 and
serves one recording of that size.  This process drives it with aiohttp,
``--streams`` streams per run, ``--concurrency`` at a time, interleaving two
subjects round by round:

* decrypt: ``POST /rcs/decrypt`` of the whole envelope (streamed from the work
  directory, with Content-Length), reading the plaintext as it arrives;
* playback: ``GET /rcs/recordings/NAME`` with ``Range: bytes=OFFSET-`` from a
  random offset, as a media element seeking (seeded: the same offsets every
  round); 206 and Content-Range are checked.

Every stream's byte count and first plaintext bytes are checked.  Reported per
subject and size: plaintext MB/s over all streams, p50/p99 time to the first
and the last byte, the server's CPU, and its RSS before the run against its
peak during it (``VmHWM``, reset before each run through
``/proc/PID/clear_refs``).  Bounded memory means the peak does not grow with
the recording size.

Only 127.0.0.1 is ever contacted; the streams are counted and the whole run is
bounded by ``--time-limit``; every server is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.aio.run import loop_name, run
from recstream.bench.fixtures import BenchError, random_bytes, work_directory
from recstream.bench.machine import describe_machine
from recstream.bench.modes import DEFAULT_RCS_SIZES, Progress
from recstream.bench.report import Column, Report
from recstream.bench.stats import Summary, format_size, interleave, summarize
from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import MediaKind
from recstream.keystore import KdfParams, create, update
from recstream.pki.ca import self_signed_recording_certificate
from recstream.service.passwords import HashParams, hash_password
from recstream.service.store import Role, SettingsStore, User

__all__ = ["ENDPOINTS", "RcsConfig", "StreamRun", "run_from_args", "run_rcs"]

ENDPOINTS = ("decrypt", "playback")
MAX_STREAMS = 10_000
MAX_CONCURRENCY = 256
MAX_LISTING = 2_000_000
CHUNK = 256 * 1024
_BLOCK = 1 << 20  # the plaintext is one random MiB repeated
_CHECK = 64  # first bytes of each stream compared with the plaintext
_HOST = "127.0.0.1"
_START_SECONDS = 30.0
_STOP_SECONDS = 15.0
_TENANT = "acme"
_NAME = "load.rsv"
_USER, _PASSWORD = "loadtest", "load-test-password"
_KS_PASSWORD = b"load-test-keystore-password"
_KDF = KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)  # opening cost is not measured
_FLAT_SLACK_KIB = 8 << 10  # peaks within 8 MiB (or 10%) across sizes are "flat"


@dataclass(frozen=True, slots=True)
class RcsConfig:
    sizes: tuple[int, ...] = DEFAULT_RCS_SIZES
    streams: int = 16
    concurrency: int = 8
    repeat: int = 3
    time_limit: float = 150.0
    listing: int = 100_000  # recordings in the listing archive; 0 skips that part
    listing_clients: int = 8


@dataclass(slots=True)
class StreamRun:
    """One run of one subject: ``streams`` streams against one server."""

    wall: float  # seconds, first request to last byte of the last stream
    moved: int  # plaintext bytes received, all streams
    first: list[float]  # per stream, seconds from the request to the first plaintext byte
    last: list[float]  # per stream, seconds from the request to the last byte
    rss_before_kib: int
    peak_kib: int
    cpu_seconds: float  # the server's user + system time during the run


@dataclass(slots=True)
class _ServerResult:
    size: int
    envelope_bytes: int
    pid: int = 0
    idle_kib: int = 0
    stopped: str = "not started"
    runs: dict[str, list[StreamRun]] = field(default_factory=dict)


# --- fixtures: a keystore, a user, one recording per size ---------------------------------


def _certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return key, self_signed_recording_certificate(key, "recstream bench rcs", days=1, now=start)


def _write_recording(path: Path, recipient: Recipient, size: int, block: bytes) -> None:
    """Encrypt ``size`` bytes (``block`` repeated) into ``path``, streaming."""
    meta = new_metadata(
        recording_id=path.stem, tenant=_TENANT, media_kind=MediaKind.VOICE, media_type="audio/basic"
    )
    enc = EnvelopeEncryptor([recipient], meta)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, len(block))
            fh.write(enc.update(block[:n]))
            left -= n
        fh.write(enc.finalize())


def _prepare(work: Path, sizes: Sequence[int], block: bytes) -> dict[int, Path]:
    """A keystore, a user, and a recording and a config per size; returns the configs."""
    key, cert = _certificate()
    ks = work / "keystore.rsk"
    create(ks, _KS_PASSWORD, kdf=_KDF)
    with update(ks, _KS_PASSWORD) as store:
        store.add(_TENANT, MediaKind.VOICE, cert, key, now=dt.datetime.now(dt.UTC))
    (work / "keystore.pass").write_bytes(_KS_PASSWORD + b"\n")
    db = SettingsStore.open(work / "settings.sqlite")
    try:
        db.put_user(
            User(_USER, Role.PLAYER, frozenset({_TENANT})),
            hash_password(_PASSWORD.encode(), HashParams(8 * 1024, 1, 1)),
        )
    finally:
        db.close()
    recipient = Recipient.from_certificate(cert)
    (work / "bench-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    configs = {}
    for size in dict.fromkeys(sizes):
        root = work / f"recordings-{size}"
        root.mkdir()
        _write_recording(root / _NAME, recipient, size, block)
        config = work / f"rcs-{size}.toml"
        config.write_text(
            f'[server]\nlisten = "{_HOST}:0"\n'
            '[keystore]\npath = "keystore.rsk"\npassword_file = "keystore.pass"\n'
            f'[recordings]\nroot = "{root.name}"\n[audit]\nlog = "audit-{size}.jsonl"\n'
            '[settings]\ndb = "settings.sqlite"\n'
        )
        configs[size] = config
    return configs


# --- the server process ----------------------------------------------------------------------


class _Server:
    """``recstream serve`` as a child process, its stderr in a file (never a full pipe)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".stderr")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.peak_resettable = True

    def start(self) -> None:
        with self.log.open("wb") as err:
            # Our own CLI, with our own interpreter and a config file we wrote.
            self.proc = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "recstream", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
                if not url.startswith(f"http://{_HOST}:"):
                    msg = f"the server listens on {url}, not on loopback"
                    raise BenchError(msg)
                self.url = url
                return
            if self.proc.poll() is not None:
                msg = f"the server exited with {self.proc.returncode}: {text.strip()[-600:]}"
                raise BenchError(msg)
            time.sleep(0.02)
        msg = f"the server did not start within {_START_SECONDS:.0f} s"
        raise BenchError(msg)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _proc(self, name: str) -> str:
        """``/proc/PID/NAME`` of the server; a server that died is a failed run."""
        try:
            return Path(f"/proc/{self.pid}/{name}").read_text()
        except OSError:
            assert self.proc is not None
            self.proc.poll()
            tail = self.log.read_text(errors="replace").strip()[-600:]
            msg = f"the server (pid {self.pid}) is gone, exit {self.proc.returncode}: {tail}"
            raise BenchError(msg) from None

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server now."""
        found: dict[str, int] = {}
        for line in self._proc("status").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found["VmRSS"], found["VmHWM"]

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux >= 4.0); else peaks stay cumulative."""
        if not self.peak_resettable:
            return
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            self.peak_resettable = False

    def cpu_seconds(self) -> float:
        fields = self._proc("stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after a grace period; says how it ended."""
        proc = self.proc
        if proc is None:
            return "not started"
        if proc.poll() is not None:
            return f"had exited with {proc.returncode}"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            return f"killed after {_STOP_SECONDS:.0f} s (exit {proc.wait()})"
        return f"exit {code} on SIGTERM"


# --- the client ------------------------------------------------------------------------------


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


@dataclass(frozen=True, slots=True)
class _Target:
    """One server and the recording it serves, as the client sees them."""

    url: str
    token: str
    envelope: Path  # the encrypted recording, POSTed to /rcs/decrypt
    size: int  # its plaintext bytes
    ring: bytes  # the plaintext's repeated block, plus its first bytes again

    def expect(self, offset: int, data: bytes) -> bool:
        """Whether ``data`` is the plaintext from ``offset`` on (its first bytes)."""
        at = offset % _BLOCK
        k = min(_CHECK, len(data))
        return data[:k] == self.ring[at : at + k]


async def _stream(
    session: aiohttp.ClientSession, target: _Target, endpoint: str, offset: int
) -> tuple[float, float, int]:
    """One stream; returns (seconds to first byte, seconds to last byte, bytes)."""
    headers = {"Authorization": f"Bearer {target.token}"}
    size = target.size
    start = time.perf_counter()
    if endpoint == "decrypt":
        headers["Content-Length"] = str(target.envelope.stat().st_size)
        req = session.post(
            target.url + "/rcs/decrypt", data=_file_chunks(target.envelope), headers=headers
        )
        status, want = 200, size
    else:
        headers["Range"] = f"bytes={offset}-"
        req = session.get(f"{target.url}/rcs/recordings/{_NAME}", headers=headers)
        status, want = 206, size - offset
    first = 0.0
    got = 0
    async with req as resp:
        if resp.status != status:
            body = (await resp.read())[:200]
            msg = f"{endpoint}: HTTP {resp.status}, expected {status}: {body!r}"
            raise BenchError(msg)
        sent = resp.headers.get("Content-Range")
        if endpoint == "playback" and sent != f"bytes {offset}-{size - 1}/{size}":
            msg = f"playback from {offset} of {size} bytes: Content-Range {sent!r}"
            raise BenchError(msg)
        async for chunk in resp.content.iter_chunked(CHUNK):
            if not got:
                first = time.perf_counter() - start
                if not target.expect(offset, chunk):
                    msg = f"{endpoint}: the plaintext at offset {offset} is not what was encrypted"
                    raise BenchError(msg)
            got += len(chunk)
    if got != want:
        msg = f"{endpoint}: got {got} plaintext bytes, expected {want}"
        raise BenchError(msg)
    return first, time.perf_counter() - start, got


async def _token(url: str) -> str:
    auth = "Basic " + base64.b64encode(f"{_USER}:{_PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/rcs/tokens", headers={"Authorization": auth}) as resp,
    ):
        if resp.status != 201:  # Created
            msg = f"POST /rcs/tokens: HTTP {resp.status}"
            raise BenchError(msg)
        token: str = (await resp.json())["access_token"]
        return token


def _fetch_token(url: str) -> str:
    try:
        return run(_token(url))
    except aiohttp.ClientError as exc:
        msg = f"POST /rcs/tokens: {exc!r}"
        raise BenchError(msg) from exc


async def _drive(
    target: _Target, endpoint: str, offsets: Sequence[int], concurrency: int, seconds: float
) -> tuple[float, list[tuple[float, float, int]]]:
    """A stream per offset, ``concurrency`` at a time, within ``seconds``."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=min(60.0, seconds))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False
    ) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one(offset: int) -> tuple[float, float, int]:
            async with gate:
                return await _stream(session, target, endpoint, offset)

        start = time.perf_counter()
        async with asyncio.timeout(seconds):
            results = await asyncio.gather(*(one(o) for o in offsets))
        return time.perf_counter() - start, list(results)


# --- the benchmark ---------------------------------------------------------------------------


class _Subjects:
    """The decrypt and playback subjects against one running server."""

    def __init__(self, cfg: RcsConfig, server: _Server, target: _Target, deadline: float) -> None:
        self.cfg = cfg
        self.server = server
        self.target = target
        self.deadline = deadline
        # The same seeks in every round: rounds differ by the machine, not by the offsets.
        rng = random.Random(target.size)  # noqa: S311 - seek offsets, not secrets
        self.offsets = [rng.randrange(target.size) for _ in range(cfg.streams)]

    def measure(self, endpoint: str, streams: int, concurrency: int) -> StreamRun:
        """Run ``streams`` streams of ``endpoint``, ``concurrency`` at a time."""
        size = self.target.size
        left = self.deadline - time.monotonic()
        if left <= 0:
            msg = f"stopped at --time-limit {self.cfg.time_limit:g} s"
            raise BenchError(msg)
        offsets = [0] * streams if endpoint == "decrypt" else self.offsets[:streams]
        self.server.reset_peak()
        rss_before, _ = self.server.memory_kib()
        cpu_before = self.server.cpu_seconds()
        try:
            wall, results = run(_drive(self.target, endpoint, offsets, concurrency, left))
        except TimeoutError:
            msg = (
                f"{endpoint} of {format_size(size)}: stopped at --time-limit "
                f"{self.cfg.time_limit:g} s (fewer --streams or smaller --sizes)"
            )
            raise BenchError(msg) from None
        except aiohttp.ClientError as exc:
            msg = f"{endpoint} of {format_size(size)}: {exc!r}"
            raise BenchError(msg) from exc
        _, peak = self.server.memory_kib()
        return StreamRun(
            wall=wall,
            moved=sum(r[2] for r in results),
            first=[r[0] for r in results],
            last=[r[1] for r in results],
            rss_before_kib=rss_before,
            peak_kib=peak,
            cpu_seconds=self.server.cpu_seconds() - cpu_before,
        )

    def subject(self, endpoint: str) -> Callable[[], StreamRun]:
        concurrency = min(self.cfg.concurrency, self.cfg.streams)

        def measure() -> StreamRun:
            return self.measure(endpoint, self.cfg.streams, concurrency)

        return measure


def run_rcs(
    cfg: RcsConfig, progress: Progress = lambda _: None, directory: Path | None = None
) -> Report:
    """Run the RCS load benchmark; return its report."""
    concurrency = min(cfg.concurrency, cfg.streams)
    sizes = tuple(dict.fromkeys(cfg.sizes))
    report = Report(
        "rcs",
        describe_machine(),
        {
            "sizes": ",".join(format_size(s) for s in sizes),
            "streams": cfg.streams,
            "concurrency": concurrency,
            "repeat": cfg.repeat,
            "time_limit": f"{cfg.time_limit:g} s",
            "client": f"aiohttp {aiohttp.__version__} on {loop_name()}",
        },
    )
    deadline = time.monotonic() + cfg.time_limit
    block = bytes(random_bytes(_BLOCK))
    ring = block + block[:_CHECK]
    servers: list[_ServerResult] = []
    resettable = True
    listing_bytes = cfg.listing * 1.1 * 4096 + (17 << 20) if cfg.listing else 0
    need = int(sum(sizes) * 1.01 + listing_bytes) + (16 << 20)
    with work_directory(directory, need) as work:
        progress(f"a keystore, a user and recordings of {report.parameters['sizes']}")
        configs = _prepare(work, sizes, block)
        for size, config in configs.items():
            label = format_size(size)
            envelope = work / f"recordings-{size}" / _NAME
            res = _ServerResult(size, envelope.stat().st_size)
            servers.append(res)
            server = _Server(config)
            try:
                server.start()
                res.pid = server.pid
                res.idle_kib, _ = server.memory_kib()
                progress(
                    f"{label}: server pid {res.pid} on {server.url}, "
                    f"{res.idle_kib / 1024:.1f} MiB idle; one stream of each endpoint to warm up"
                )
                target = _Target(server.url, _fetch_token(server.url), envelope, size, ring)
                subjects = _Subjects(cfg, server, target, deadline)
                for endpoint in ENDPOINTS:
                    subjects.measure(endpoint, 1, 1)

                def say(message: str, label: str = label) -> None:
                    progress(f"{label}: {message}")

                res.runs = interleave(
                    {e: subjects.subject(e) for e in ENDPOINTS}, cfg.repeat, progress=say
                )
            finally:
                res.stopped = server.stop()
                resettable = resettable and server.peak_resettable
            progress(f"{label}: server {res.stopped}")
        before = len(report.tables)
        if cfg.listing:
            _listing(report, cfg, work, progress)
        listing_tables = report.tables[before:]
        del report.tables[before:]
    _tabulate(report, cfg, concurrency, servers, resettable)
    report.tables += listing_tables  # after the decrypt/playback tables, as before
    report.check_noise()
    if any("at the end of the run" in w for w in report.warnings):
        start = report.machine.get("load_average_at_start")
        report.notes.append(
            "this mode keeps the cores busy itself (the server and the client), so the load "
            "average at the end of the run counts its own work; the one at the start "
            f"({start if start is None else f'{start:.2f}'}) is the one that speaks of neighbours."
        )
    return report


def _listing(report: Report, cfg: RcsConfig, work: Path, progress: Progress) -> None:
    """The listing part (:mod:`recstream.bench.rcs_listing`), on its own server."""
    from recstream.bench.rcs_listing import measure_listing, write_archive

    root = work / "recordings-listing"
    root.mkdir()
    ks_cert = (work / "bench-cert.pem").read_bytes()
    recipient = Recipient.from_certificate(x509.load_pem_x509_certificate(ks_cert))
    progress(f"listing: writing {cfg.listing:,} + {cfg.listing // 10:,} recordings")
    started = time.monotonic()
    files = write_archive(root, recipient, _TENANT, cfg.listing)
    progress(f"listing: {files:,} files in {time.monotonic() - started:.0f} s; starting a server")
    config = work / "rcs-listing.toml"
    config.write_text(
        f'[server]\nlisten = "{_HOST}:0"\n'
        '[keystore]\npath = "keystore.rsk"\npassword_file = "keystore.pass"\n'
        f'[recordings]\nroot = "{root.name}"\nrescan_interval = 30\n'
        '[audit]\nlog = "audit-listing.jsonl"\n[settings]\ndb = "settings.sqlite"\n'
    )
    server = _Server(config)
    try:
        server.start()
        started = time.monotonic()
        token = _fetch_token(server.url)
        concurrency = min(cfg.concurrency, cfg.streams)
        measure_listing(
            report,
            server.url,
            token,
            cfg.listing,
            listers=cfg.listing_clients,
            streams=cfg.streams,
            concurrency=concurrency,
            repeat=cfg.repeat,
            progress=lambda m: progress(f"listing: {m}"),
        )
        report.notes.append(
            f"listing: the server indexed {files:,} files and answered its first listing "
            f"{time.monotonic() - started:.1f} s after it started (the index is built once)."
        )
    finally:
        progress(f"listing: server {server.stop()}")


def _pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def _over_runs(runs: Sequence[StreamRun], func: Callable[[StreamRun], float]) -> Summary:
    return summarize([func(r) for r in runs])


def _tabulate(
    report: Report,
    cfg: RcsConfig,
    concurrency: int,
    servers: Sequence[_ServerResult],
    resettable: bool,
) -> None:
    table = report.table(
        f"{cfg.streams} streams per run, {concurrency} at a time, HTTP on {_HOST}: "
        "plaintext MB/s of all streams; latency per stream, from its request",
        Column("subject", "subject"),
        Column("mb_s", "MB/s"),
        # Scheduling jitter with the client on the same cores: ~5-10 ms.
        Column("first_p50_ms", "1st byte p50 ms", 1, noise_floor=10.0),
        Column("first_p99_ms", "1st byte p99 ms", 1, noise_floor=10.0),
        Column("last_p50_s", "last byte p50 s", 3, noise_floor=0.02),
        Column("last_p99_s", "last byte p99 s", 3, noise_floor=0.02),
        Column("server_cpu_pct", "server CPU %", 0, noise_floor=10.0),
        # Memory the allocator keeps after the first run is not noise; growth with the
        # recording size is judged by _flatness.
        Column("rss_before_mib", "RSS before MiB", 1, noise_floor=32.0),
        Column("peak_rss_mib", "peak RSS MiB", 1, noise_floor=32.0),
    )
    for endpoint in ENDPOINTS:
        for res in servers:
            runs = res.runs[endpoint]
            table.add(
                subject=f"{endpoint} {format_size(res.size)}",
                mb_s=_over_runs(runs, lambda r: r.moved / r.wall / 1e6),
                first_p50_ms=_over_runs(runs, lambda r: _pct(r.first, 50) * 1e3),
                first_p99_ms=_over_runs(runs, lambda r: _pct(r.first, 99) * 1e3),
                last_p50_s=_over_runs(runs, lambda r: _pct(r.last, 50)),
                last_p99_s=_over_runs(runs, lambda r: _pct(r.last, 99)),
                server_cpu_pct=_over_runs(runs, lambda r: 100 * r.cpu_seconds / r.wall),
                rss_before_mib=_over_runs(runs, lambda r: r.rss_before_kib / 1024),
                peak_rss_mib=_over_runs(runs, lambda r: r.peak_kib / 1024),
            )
    peaks = {
        res.size: max(r.peak_kib for runs in res.runs.values() for r in runs) for res in servers
    }
    procs = report.table(
        "servers: a fresh 'recstream serve' per recording size",
        Column("recording", "recording"),
        Column("envelope_mib", "envelope MiB", 1),
        Column("pid", "pid"),
        Column("idle_rss_mib", "RSS idle MiB", 1),
        Column("peak_rss_mib", "peak RSS MiB", 1),
        Column("stopped", "stopped"),
    )
    for res in servers:
        procs.add(
            recording=format_size(res.size),
            envelope_mib=res.envelope_bytes / (1 << 20),
            pid=str(res.pid),
            idle_rss_mib=res.idle_kib / 1024,
            peak_rss_mib=peaks[res.size] / 1024,
            stopped=res.stopped,
        )
        if not res.stopped.startswith("exit 0 "):
            report.warnings.append(f"the {format_size(res.size)} server: {res.stopped}")
    _flatness(report, peaks)
    streams = "the slowest stream" if cfg.streams <= 100 else "nearest rank"
    report.notes += [
        f"decrypt: POST /rcs/decrypt of the whole envelope, streamed with Content-Length. "
        f"playback: GET /rcs/recordings/{_NAME} with 'Range: bytes=OFFSET-' from a random "
        "(seeded) offset, the same offsets every round, so a stream moves half the "
        "recording on average; 206 and Content-Range are checked.  Every stream's length "
        "and first bytes are checked.",
        f"p99 of {cfg.streams} streams is {streams}; latencies are per run, then the "
        "median (min-max) over the runs.  One untimed stream of each endpoint warms up "
        "each server.",
        "server CPU % = the server's user + system time over the run's wall time "
        f"(100 = one core); the client (aiohttp) shares the same "
        f"{report.machine.get('usable_cores')} cores, so MB/s is a floor for the server.",
        "peak RSS = the server's VmHWM during the run, reset to the current RSS before it "
        "(/proc/PID/clear_refs)."
        if resettable
        else "peak RSS = the server's VmHWM since it started (this kernel cannot reset it).",
    ]


def _flatness(report: Report, peaks: dict[int, int]) -> None:
    """Say whether the server's peak RSS grows with the recording size."""
    if len(peaks) < 2:
        return
    small, large = min(peaks), max(peaks)
    growth = peaks[large] - peaks[small]
    figures = (
        f"server peak RSS {peaks[small] / 1024:.1f} MiB with {format_size(small)} recordings, "
        f"{peaks[large] / 1024:.1f} MiB with {format_size(large)} "
        f"({large / small:.3g}x the size)"
    )
    if growth <= max(_FLAT_SLACK_KIB, peaks[small] // 10):
        report.notes.append(f"{figures}: flat in recording size (bounded memory).")
    else:
        report.warnings.append(
            f"{figures}: it grows by {growth / 1024:.1f} MiB with the recording size."
        )


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    if any(s < 1 for s in ns.sizes):
        msg = "--sizes must all be at least 1 byte"
        raise ValueError(msg)
    if ns.streams > MAX_STREAMS:
        msg = f"--streams is at most {MAX_STREAMS}"
        raise ValueError(msg)
    if ns.concurrency > MAX_CONCURRENCY:
        msg = f"--concurrency is at most {MAX_CONCURRENCY}"
        raise ValueError(msg)
    if not 0 <= ns.listing <= MAX_LISTING:
        msg = f"--listing is from 0 to {MAX_LISTING}"
        raise ValueError(msg)
    if ns.time_limit <= 0:
        msg = "--time-limit must be positive"
        raise ValueError(msg)
    cfg = RcsConfig(
        sizes=ns.sizes,
        streams=ns.streams,
        concurrency=ns.concurrency,
        repeat=ns.repeat,
        time_limit=ns.time_limit,
        listing=ns.listing,
        listing_clients=ns.listing_clients,
    )
    return run_rcs(cfg, progress, ns.dir)
