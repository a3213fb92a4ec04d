"""Load test of the Recording Crypto Server on loopback: concurrent streams of large recordings.

Usage: python bench/rcs_load.py [--sizes 16M,64M,256M] [--concurrency 8] [--requests 16]
                                [--endpoint decrypt|playback] [--time-limit 120] [--json FILE]

For each recording size, a fresh ``recstream serve`` process (the real CLI, with a
real keystore and a real user) listens on 127.0.0.1; this process then runs
``--requests`` streams, ``--concurrency`` at a time, each one either POSTing the
whole envelope to ``/rcs/decrypt`` (streamed from disk, with Content-Length) or
GETting it from ``/rcs/recordings/NAME`` with a Range request from a random
offset, and reading the plaintext as it arrives.  Reported per size:
throughput (plaintext MB/s, all streams), p50/p99 time to last byte, p50 time
to first byte, and the server's peak RSS (VmHWM) against its RSS before the
load: bounded memory means the peak does not grow with the recording size.

Only loopback is ever contacted; the number of requests and the wall time are
bounded (``--time-limit`` aborts the run).  ``run_load()`` is the entry point
for the ``recstream bench`` harness; it returns a JSON-ready dict.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import MediaKind
from recstream.keystore import KdfParams, create, update
from recstream.service.passwords import HashParams, hash_password
from recstream.service.store import Role, SettingsStore, User

CHUNK = 256 * 1024
USER, PASSWORD = "loadtest", "load-test-password"
KS_PASSWORD = b"load-test-keystore-password"
BENCH_KDF = KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)  # opening cost is not measured


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    suffix = text[-1].upper()
    return int(float(text[:-1]) * units[suffix]) if suffix in units else int(text)


def _certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rcs load test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(False, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_recording(path: Path, recipient: Recipient, size: int) -> None:
    """Encrypt ``size`` bytes (a random 1 MiB block repeated) into ``path``, streaming."""
    meta = new_metadata(
        recording_id=path.stem, tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/basic"
    )
    enc = EnvelopeEncryptor([recipient], meta)
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, len(block))
            fh.write(enc.update(block[:n]))
            left -= n
        fh.write(enc.finalize())


def _prepare(work: Path, size: int) -> Path:
    """Keystore, user, recording and config for one server; returns the config path."""
    key, cert = _certificate()
    ks = work / "keystore.rsk"
    create(ks, KS_PASSWORD, kdf=BENCH_KDF)
    with update(ks, KS_PASSWORD) as store:
        store.add("acme", MediaKind.VOICE, cert, key, now=dt.datetime.now(dt.UTC))
    (work / "keystore.pass").write_bytes(KS_PASSWORD + b"\n")
    (work / "recordings").mkdir()
    _write_recording(work / "recordings" / "load.rsv", Recipient.from_certificate(cert), size)
    db = SettingsStore.open(work / "settings.sqlite")
    db.put_user(
        User(USER, Role.PLAYER, frozenset({"acme"})),
        hash_password(PASSWORD.encode(), HashParams(8 * 1024, 1, 1)),
    )
    db.close()
    config = work / "rcs.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n'
        '[keystore]\npath = "keystore.rsk"\npassword_file = "keystore.pass"\n'
        '[recordings]\nroot = "recordings"\n[audit]\nlog = "audit.jsonl"\n'
        '[settings]\ndb = "settings.sqlite"\n'
    )
    return config


def _start_server(config: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recstream", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, line.split("listening on ")[1].split()[0]


def _memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    endpoint: str,
    envelope: Path,
    plain_size: int,
    headers: dict[str, str],
) -> tuple[float, float, int]:
    start = time.perf_counter()
    if endpoint == "decrypt":
        req = session.post(
            url + "/rcs/decrypt",
            data=_file_chunks(envelope),
            headers={**headers, "Content-Length": str(envelope.stat().st_size)},
        )
        want = plain_size
    else:
        offset = random.randrange(0, max(1, plain_size - 1))
        req = session.get(
            url + "/rcs/recordings/load.rsv", headers={**headers, "Range": f"bytes={offset}-"}
        )
        want = plain_size - offset
    first = 0.0
    got = 0
    async with req as resp:
        if resp.status not in (200, 206):
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
        async for chunk in resp.content.iter_chunked(CHUNK):
            if not got:
                first = time.perf_counter() - start
            got += len(chunk)
    if got != want:
        raise RuntimeError(f"got {got} plaintext bytes, expected {want}")
    return time.perf_counter() - start, first, got


async def _drive(
    url: str,
    endpoint: str,
    envelope: Path,
    plain_size: int,
    concurrency: int,
    requests: int,
    time_limit: float,
) -> dict[str, Any]:
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        async with session.post(url + "/rcs/tokens", headers={"Authorization": auth}) as r:
            token = (await r.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        gate = asyncio.Semaphore(concurrency)

        async def task() -> tuple[float, float, int]:
            async with gate:
                return await _one(session, url, endpoint, envelope, plain_size, headers)

        start = time.perf_counter()
        async with asyncio.timeout(time_limit):
            results = await asyncio.gather(*(task() for _ in range(requests)))
        wall = time.perf_counter() - start
    totals = sorted(r[0] for r in results)
    firsts = sorted(r[1] for r in results)
    moved = sum(r[2] for r in results)
    return {
        "wall_s": round(wall, 3),
        "plaintext_bytes": moved,
        "throughput_MBps": round(moved / wall / 1e6, 1),
        "p50_s": round(_pct(totals, 50), 3),
        "p99_s": round(_pct(totals, 99), 3),
        "ttfb_p50_ms": round(_pct(firsts, 50) * 1000, 1),
    }


def _pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(values) * p // 100))
    return values[int(rank) - 1]


def run_load(
    sizes: Sequence[int] = (16 << 20, 64 << 20, 256 << 20),
    *,
    concurrency: int = 8,
    requests: int = 16,
    endpoint: str = "decrypt",
    time_limit: float = 120.0,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, Any]:
    """Run the load test; return ``{"parameters", "machine", "results": [per size]}``."""
    if endpoint not in ("decrypt", "playback"):
        raise ValueError("endpoint must be decrypt or playback")
    rows = []
    deadline = time.monotonic() + time_limit
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for size in sizes:
            work = Path(tmp) / str(size)
            work.mkdir()
            progress(f"rcs_load: preparing a {size >> 20} MiB recording")
            config = _prepare(work, size)
            proc, url = _start_server(config)
            try:
                before = _memory_kib(proc.pid)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                progress(
                    f"rcs_load: {requests} x {endpoint} of {size >> 20} MiB, "
                    f"{concurrency} at a time, on {url}"
                )
                stats = asyncio.run(
                    _drive(
                        url,
                        endpoint,
                        work / "recordings" / "load.rsv",
                        size,
                        concurrency,
                        requests,
                        left,
                    )
                )
                after = _memory_kib(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
            rows.append(
                {
                    "recording_MiB": size >> 20,
                    **stats,
                    "server_rss_before_MiB": round(before["VmRSS"] / 1024, 1),
                    "server_peak_rss_MiB": round(after["VmHWM"] / 1024, 1),
                }
            )
    return {
        "parameters": {
            "endpoint": endpoint,
            "concurrency": concurrency,
            "requests": requests,
            "sizes_MiB": [s >> 20 for s in sizes],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
        },
        "results": rows,
    }


def _print_table(report: dict[str, Any]) -> None:
    p = report["parameters"]
    print(
        f"RCS load test: {p['endpoint']}, {p['requests']} streams per size, "
        f"{p['concurrency']} concurrent, loopback, {report['machine']['cpus']} CPUs"
    )
    head = ("size MiB", "MB/s", "p50 s", "p99 s", "TTFB p50 ms", "RSS before MiB", "peak RSS MiB")
    print("  ".join(f"{h:>14}" for h in head))
    for r in report["results"]:
        cells = (
            r["recording_MiB"],
            r["throughput_MBps"],
            r["p50_s"],
            r["p99_s"],
            r["ttfb_p50_ms"],
            r["server_rss_before_MiB"],
            r["server_peak_rss_MiB"],
        )
        print("  ".join(f"{c:>14}" for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", default="16M,64M,256M", help="recording sizes (default: %(default)s)"
    )
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=16, help="streams per size")
    ap.add_argument("--endpoint", choices=("decrypt", "playback"), default="decrypt")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds for the whole run")
    ap.add_argument("--dir", type=Path, help="work directory (default: the system temp dir)")
    ap.add_argument("--json", type=Path, help="also write the report as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.concurrency <= 256 or not 1 <= args.requests <= 10_000:
        ap.error("--concurrency must be 1..256 and --requests 1..10000")
    report = run_load(
        [parse_size(s) for s in args.sizes.split(",")],
        concurrency=args.concurrency,
        requests=args.requests,
        endpoint=args.endpoint,
        time_limit=args.time_limit,
        workdir=args.dir,
    )
    _print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
