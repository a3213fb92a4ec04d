"""Issue 18: Range playback through the RCS from S3 (moto on loopback) against local disk.

One recording is encrypted once, written to a local directory and uploaded to a
``moto_server`` bucket on 127.0.0.1.  Two RCS instances run in this process (the
code ``recstream serve`` runs): one with ``[recordings] root`` the directory, one
with ``s3://BUCKET/PREFIX``.  An aiohttp client then asks both for the same seeded
Ranges (``bytes=OFF-OFF+LEN-1``, as a seeking media element does), alternating
local and S3 round by round, and checks every body against the plaintext.

Reported per source: plaintext MB/s over all ranges, p50/p90 time per range, and
for S3 the store's requests and bytes per range (read amplification: what it
served over what the client got) and moto's CPU.  The headline is the ratio of
S3 to local throughput in the same run.  moto is a Python server; a real S3 (or
MinIO) answers a ranged GET faster, so the ratio is a floor for the RCS's own cost.

    .venv/bin/python bench/store_playback.py [--size 64M] [--ranges 24] [--range-bytes 1M]
                                             [--rounds 3] [--json FILE]

Only 127.0.0.1 is contacted; moto is stopped at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import fsspec
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.bench.machine import describe_machine, machine_line
from recstream.envelope import EnvelopeEncryptor, IdentitySet, new_metadata
from recstream.format import MediaKind
from recstream.pki.ca import self_signed_recording_certificate
from recstream.pki.recipients import Identity, Recipient
from recstream.service import load_config, start_server
from recstream.service.context import CONTEXT
from recstream.service.objects import StoreArchive
from recstream.service.passwords import HashParams, hash_password
from recstream.service.store import Role, SettingsStore, User

BUCKET, PREFIX, NAME = "bench", "rec", "acme/bench.rsv"
USER, PASSWORD = "bench", "bench-password-1"
BLOCK = os.urandom(1 << 20)  # the plaintext is one random MiB repeated
CPU_FLAGS = ("aes", "pclmulqdq", "avx", "avx2", "avx512f", "vaes", "vpclmulqdq", "sha_ni")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.upper())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 64M")
    return int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[m[2]]


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS if f in have]
    return []


def plaintext(offset: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        at = (offset + len(out)) % len(BLOCK)
        out += BLOCK[at : at + n - len(out)]
    return bytes(out)


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def start_moto(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    moto = Path(sys.executable).with_name("moto_server")
    log = (work / "moto.log").open("wb")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", "0"], stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(rb"Running on (http://127\.0\.0\.1:\d+)", (work / "moto.log").read_bytes())
        if m:
            return proc, m[1].decode()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"moto_server did not start: {(work / 'moto.log').read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_recording(path: Path, size: int) -> IdentitySet:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = self_signed_recording_certificate(key, "recstream bench store", days=1, now=start)
    meta = new_metadata(
        recording_id="bench", tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/basic"
    )
    enc = EnvelopeEncryptor([Recipient.from_certificate(cert)], meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, len(BLOCK))
            fh.write(enc.update(BLOCK[:n]))
            left -= n
        fh.write(enc.finalize())
    return IdentitySet([Identity.from_private_key(key, cert)])


def write_config(d: Path, root: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "keystore.rsk").touch()  # the keys are passed in; the path must exist
    (d / "keystore.pass").write_text("unused\n")
    store = SettingsStore.open(d / "settings.sqlite")
    params = HashParams(memory_kib=1024, iterations=1, lanes=1)
    store.put_user(
        User(USER, Role.PLAYER, frozenset({"acme"})), hash_password(PASSWORD.encode(), params)
    )
    store.close()
    cfg = d / "rcs.toml"
    cfg.write_text(
        f"""[server]
listen = "127.0.0.1:0"
[keystore]
path = "keystore.rsk"
password_file = "keystore.pass"
[recordings]
root = "{root}"
rescan_interval = 3600
[audit]
log = "audit.jsonl"
[settings]
db = "settings.sqlite"
"""
    )
    return cfg


async def one_range(session: aiohttp.ClientSession, url: str, offset: int, n: int) -> float:
    t0 = time.perf_counter()
    headers = {"Range": f"bytes={offset}-{offset + n - 1}"}
    async with session.get(f"{url}/rcs/recordings/{NAME}", headers=headers) as resp:
        body = await resp.read()
    elapsed = time.perf_counter() - t0
    if resp.status != 206 or body != plaintext(offset, n):
        raise SystemExit(f"{url}: wrong answer for {headers['Range']}: {resp.status}")
    return elapsed


async def bench(
    args: argparse.Namespace, work: Path, endpoint: str, moto_pid: int
) -> dict[str, Any]:
    local_root = work / "local"
    keys = make_recording(local_root / NAME, args.size)
    fs = fsspec.filesystem("s3")
    fs.mkdir(BUCKET)
    fs.put_file(str(local_root / NAME), f"{BUCKET}/{PREFIX}/{NAME}")
    servers = {
        "local": await start_server(
            load_config(write_config(work / "rcs-local", str(local_root))), keys
        ),
        "s3": await start_server(
            load_config(write_config(work / "rcs-s3", f"s3://{BUCKET}/{PREFIX}")), keys
        ),
    }
    store = servers["s3"].runner.app[CONTEXT].archive
    assert isinstance(store, StoreArchive)
    rng = random.Random(18)
    offsets = [rng.randrange(0, args.size - args.range_bytes) for _ in range(args.ranges)]
    times: dict[str, list[float]] = {"local": [], "s3": []}
    cpu: dict[str, float] = {"local": 0.0, "s3": 0.0}
    moto_cpu = 0.0
    store_requests = store_bytes = 0
    auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    async with aiohttp.ClientSession(headers=auth) as session:
        for name, srv in servers.items():  # warm-up: headers cached, connections open
            await one_range(session, srv.url, 0, 1024)
        rss_before = proc_status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: the rounds' peak
        for r in range(args.rounds):
            order = ["local", "s3"] if r % 2 == 0 else ["s3", "local"]
            for name in order:
                c0, m0 = time.process_time(), cpu_seconds(moto_pid)
                q0, b0 = store.stats.requests, store.stats.bytes_read
                for off in offsets:
                    times[name].append(
                        await one_range(session, servers[name].url, off, args.range_bytes)
                    )
                cpu[name] += time.process_time() - c0
                if name == "s3":
                    moto_cpu += cpu_seconds(moto_pid) - m0
                    store_requests += store.stats.requests - q0
                    store_bytes += store.stats.bytes_read - b0
    rss_peak = proc_status_kib("VmHWM")
    for srv in servers.values():
        await srv.stop()
    n_ranges = args.ranges * args.rounds
    served = n_ranges * args.range_bytes
    result: dict[str, Any] = {}
    for name, ts in times.items():
        qs = statistics.quantiles(ts, n=10)
        result[name] = {
            "mb_per_s": served / sum(ts) / 1e6,
            "p50_ms": statistics.median(ts) * 1000,
            "p90_ms": qs[8] * 1000,
            "rcs_and_client_cpu_s_per_gb": cpu[name] / (served / 1e9),
        }
    result["s3"]["store_requests_per_range"] = store_requests / n_ranges
    result["s3"]["store_bytes_per_plaintext_byte"] = store_bytes / served
    result["s3"]["moto_cpu_s_per_gb"] = moto_cpu / (served / 1e9)
    result["ratio_s3_to_local_throughput"] = result["s3"]["mb_per_s"] / result["local"]["mb_per_s"]
    result["ratio_s3_to_local_p50"] = result["s3"]["p50_ms"] / result["local"]["p50_ms"]
    result["rss_before_rounds_mib"] = rss_before / 1024
    result["rss_peak_during_rounds_mib"] = rss_peak / 1024
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size("64M"), help="recording size")
    p.add_argument("--ranges", type=int, default=24, help="ranges per round and source")
    p.add_argument(
        "--range-bytes", type=parse_size, default=parse_size("1M"), help="bytes per range"
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds, alternating which source goes first"
    )
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args()
    if (
        not 0 < args.range_bytes < args.size
        or not 1 <= args.ranges <= 1000
        or not 1 <= args.rounds <= 20
    ):
        p.error("need 0 < --range-bytes < --size, 1 <= --ranges <= 1000, 1 <= --rounds <= 20")
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="rs-bench-store-") as tmp:
        work = Path(tmp)
        moto, endpoint = start_moto(work)
        # The RCS takes the store's credentials from the environment, as in production.
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL_S3=endpoint,
        )
        try:
            result = asyncio.run(bench(args, work, endpoint, moto.pid))
        finally:
            stop(moto)
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "params": {
            "size": args.size,
            "ranges": args.ranges,
            "range_bytes": args.range_bytes,
            "rounds": args.rounds,
        },
        "machine": machine,
        "cpu_flags": cpu_flags(),
        "load_average_at_end": os.getloadavg()[0],
        "result": result,
    }
    print(machine_line(machine))
    print(
        f"cpu flags: {' '.join(report['cpu_flags'])}; load {machine['load_average_at_start']} -> "
        f"{report['load_average_at_end']:.2f}"
    )
    for name in ("local", "s3"):
        r = result[name]
        print(
            f"{name:>5}: {r['mb_per_s']:7.1f} MB/s  p50 {r['p50_ms']:6.1f} ms  "
            f"p90 {r['p90_ms']:6.1f} ms"
            f"  RCS+client CPU {r['rcs_and_client_cpu_s_per_gb']:.2f} s/GB"
        )
    s3 = result["s3"]
    print(
        f"s3 store: {s3['store_requests_per_range']:.2f} requests/range, "
        f"{s3['store_bytes_per_plaintext_byte']:.4f} bytes read per plaintext byte, "
        f"moto CPU {s3['moto_cpu_s_per_gb']:.2f} s/GB"
    )
    cpu_ratio = (
        result["s3"]["rcs_and_client_cpu_s_per_gb"] / result["local"]["rcs_and_client_cpu_s_per_gb"]
    )
    result["ratio_s3_to_local_rcs_cpu"] = cpu_ratio
    print(
        f"ratio S3/local: throughput {result['ratio_s3_to_local_throughput']:.3f}, "
        f"p50 time {result['ratio_s3_to_local_p50']:.2f}x, RCS+client CPU per GB {cpu_ratio:.2f}x"
    )
    print(
        f"RSS (RCS servers + client, one process): {result['rss_before_rounds_mib']:.0f} MiB "
        f"before the rounds, peak {result['rss_peak_during_rounds_mib']:.0f} MiB during them"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
