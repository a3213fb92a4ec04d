"""Issue 16 (RCS): Range playback of a signed recording against an unsigned one.

Usage: python bench/rcs_signed.py [--size 64M] [--range 256K] [--requests 200]
                                  [--concurrency 4] [--rounds 5] [--dir DIR] [--json FILE]

One ``recstream serve`` process (the real CLI: a real keystore, a user with a
bearer token, ``[policy.acme] require_signature = true`` with a signer CA) serves
two recordings of the same plaintext and size from one archive: ``unsigned.rsv``
(format version 1) and ``signed.rsv`` (signed by an ECDSA P-256 recorder
certificate).  The policy applies to both: the unsigned file's answers would be
refusals, so the unsigned subject is served by a second tenant without a policy
(``globex``), the same server, the same code path otherwise.

This process drives it over loopback with aiohttp: per round and subject,
``--requests`` GETs with ``Range: bytes=START-END`` of ``--range`` bytes at seeded
random offsets (the same offsets for both subjects and every round),
``--concurrency`` at a time; every body is checked against the plaintext.  Rounds
alternate the order of the two subjects.  Reported per subject: plaintext MB/s
and server CPU seconds per GiB (``/proc/PID/stat``), and per round the paired ratio
signed/unsigned; the figure the issue asks about is the median ratio (target:
signed keeps >= 90% of unsigned's throughput).  The first request to the signed
file pays for its one verification (a hash of the whole file); it is timed
separately, after a warm-up request to each file outside the rounds.

Only 127.0.0.1 is contacted; the server is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from recstream.bench.machine import describe_machine, machine_line
from recstream.bench.stats import format_size, parse_size
from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import MediaKind
from recstream.keystore import KdfParams, create, update
from recstream.pki.ca import self_signed_recording_certificate
from recstream.service.passwords import HashParams, hash_password
from recstream.service.store import Role, SettingsStore, User
from recstream.signing import Signer

HOST = "127.0.0.1"
USER, PASSWORD = "bench", "bench-password-16"
KS_PASSWORD = b"bench-keystore-password-16"
KDF = KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)  # opening cost is not measured
SUBJECTS = ("unsigned", "signed")
TENANT = {"unsigned": "globex", "signed": "acme"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _signer(work: Path) -> Signer:
    """A throwaway CA (its file is the policy's signer_ca) and a P-256 recorder signer."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench signers CA"))
        .issuer_name(_name("bench signers CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    cert = (
        x509.CertificateBuilder().subject_name(_name("bench-recorder"))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(usage, critical=True).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (work / "signers.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Signer.from_objects(key, cert)


def _prepare(work: Path, size: int, plain: bytes) -> Path:
    """Keystore, user, the two recordings and the config; returns the config path."""
    now = dt.datetime.now(dt.UTC)
    ks = work / "keystore.rsk"
    create(ks, KS_PASSWORD, kdf=KDF)
    certs = {}
    with update(ks, KS_PASSWORD) as store:
        for tenant in TENANT.values():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            cert = self_signed_recording_certificate(
                key, f"bench {tenant}", days=1, now=now - dt.timedelta(minutes=5)
            )
            store.add(tenant, MediaKind.VOICE, cert, key, now=now)
            certs[tenant] = cert
    (work / "keystore.pass").write_bytes(KS_PASSWORD + b"\n")
    db = SettingsStore.open(work / "settings.sqlite")
    try:
        db.put_user(
            User(USER, Role.PLAYER, frozenset(TENANT.values())),
            hash_password(PASSWORD.encode(), HashParams(8 * 1024, 1, 1)),
        )
    finally:
        db.close()
    signer = _signer(work)
    root = work / "recordings"
    for subject, tenant in TENANT.items():
        (root / tenant).mkdir(parents=True)
        meta = new_metadata(recording_id=subject, tenant=tenant, media_kind=MediaKind.VOICE,
                            media_type="audio/basic")  # fmt: skip
        enc = EnvelopeEncryptor(
            [Recipient.from_certificate(certs[tenant])],
            meta,
            signer=signer if subject == "signed" else None,
        )
        with (root / tenant / f"{subject}.rsv").open("wb") as fh:
            for pos in range(0, size, len(plain)):
                fh.write(enc.update(plain[: min(len(plain), size - pos)]))
            fh.write(enc.finalize())
    config = work / "rcs.toml"
    config.write_text(
        f'[server]\nlisten = "{HOST}:0"\n'
        '[keystore]\npath = "keystore.rsk"\npassword_file = "keystore.pass"\n'
        '[recordings]\nroot = "recordings"\n[audit]\nlog = "audit.jsonl"\n'
        '[settings]\ndb = "settings.sqlite"\n'
        '[policy.acme]\nrequire_signature = true\nsigner_ca = "signers.pem"\n'
    )
    return config


class Server:
    def __init__(self, config: Path) -> None:
        self.log = config.with_suffix(".stderr")
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recstream", "serve", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while "listening on " not in (text := self.log.read_text(errors="replace")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not start: {text[-600:]}")
            time.sleep(0.02)
        self.url = text.split("listening on ", 1)[1].split()[0]
        assert self.url.startswith(f"http://{HOST}:"), self.url

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _token(session: aiohttp.ClientSession, url: str) -> str:
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    async with session.post(url + "/rcs/tokens", headers={"Authorization": auth}) as resp:
        assert resp.status == 201, resp.status
        token: str = (await resp.json())["access_token"]
        return token


async def _get(
    session: aiohttp.ClientSession, url: str, token: str, subject: str, start: int, end: int
) -> bytes:
    path = f"{url}/rcs/recordings/{TENANT[subject]}/{subject}.rsv"
    headers = {"Authorization": f"Bearer {token}", "Range": f"bytes={start}-{end}"}
    async with session.get(path, headers=headers) as resp:
        body = await resp.read()
        if resp.status != 206:
            raise SystemExit(f"{subject}: HTTP {resp.status}: {body[:200]!r}")
        return body


async def _measure(args: argparse.Namespace, server: Server, plain: bytes) -> dict[str, Any]:
    rng = random.Random(16)
    offsets = [rng.randrange(0, args.size - args.range) for _ in range(args.requests)]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SUBJECTS}
    first: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=connector) as session:
        token = await _token(session, server.url)
        for subject in ("unsigned", "signed"):  # warm-up; the signed file is verified here
            t0 = time.perf_counter()
            await _get(session, server.url, token, subject, 0, 0)
            first[subject] = time.perf_counter() - t0

        async def one(subject: str, start: int) -> int:
            end = start + args.range - 1
            body = await _get(session, server.url, token, subject, start, end)
            at = start % len(plain)
            if body[:64] != (plain + plain)[at : at + 64]:
                raise SystemExit(f"{subject}: wrong plaintext at {start}")
            return len(body)

        for rnd in range(args.rounds):
            order = SUBJECTS if rnd % 2 == 0 else SUBJECTS[::-1]
            for subject in order:
                cpu0, t0 = server.cpu_seconds(), time.perf_counter()
                sem = asyncio.Semaphore(args.concurrency)

                async def bounded(start: int, subject: str = subject) -> int:
                    async with sem:
                        return await one(subject, start)

                got = sum(await asyncio.gather(*(bounded(o) for o in offsets)))
                wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
                results[subject].append(
                    {"mb_s": got / wall / 1e6, "cpu_s_per_gib": cpu / (got / 2**30), "bytes": got}
                )
    return {"rounds": results, "first_request_s": first}


def _report(args: argparse.Namespace, machine: dict[str, Any], res: dict[str, Any]) -> None:
    rounds = res["rounds"]
    ratios = [
        s["mb_s"] / u["mb_s"] for s, u in zip(rounds["signed"], rounds["unsigned"], strict=True)
    ]
    cpu_ratios = [
        s["cpu_s_per_gib"] / u["cpu_s_per_gib"]
        for s, u in zip(rounds["signed"], rounds["unsigned"], strict=True)
    ]
    print(machine_line(machine))
    print(
        f"size {format_size(args.size)}, {args.requests} Range GETs of {format_size(args.range)}"
        f" per subject and round, {args.concurrency} at a time, {args.rounds} rounds"
    )
    for subject in SUBJECTS:
        mbs = [r["mb_s"] for r in rounds[subject]]
        cpu = [r["cpu_s_per_gib"] for r in rounds[subject]]
        print(
            f"  {subject:<9} {statistics.median(mbs):8.0f} MB/s ({min(mbs):.0f}-{max(mbs):.0f})"
            f"   server CPU {statistics.median(cpu):.3f} s/GiB"
        )
    print(
        f"  signed/unsigned throughput: median {statistics.median(ratios):.3f} "
        f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}); server CPU per byte "
        f"{statistics.median(cpu_ratios):.3f}"
    )
    first = res["first_request_s"]
    print(
        f"  first request (1 byte): unsigned {first['unsigned'] * 1000:.1f} ms, signed "
        f"{first['signed'] * 1000:.1f} ms (includes the one verification of the whole file)"
    )
    res["summary"] = {
        "throughput_ratio_median": statistics.median(ratios),
        "throughput_ratios": ratios,
        "cpu_per_byte_ratio_median": statistics.median(cpu_ratios),
    }


def inprocess(args: argparse.Namespace, plain: bytes) -> dict[str, Any]:
    """CPU time of ``SegmentReader.read_at`` over the whole file in ``--range`` reads,
    in this process (no HTTP): unsigned; signed with the VerifiedBody the RCS uses
    (every segment read is hashed again and compared with the signed digest).  Process
    CPU time drops scheduling noise."""
    from recstream.envelope import Identity, IdentitySet
    from recstream.reader import BytesSource, SegmentReader
    from recstream.signing import verify_source

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="rcs-signed-ip-") as tmp:
        work = Path(tmp)
        signer = _signer(work)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self_signed_recording_certificate(
            key, "bench", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        )
        ring = IdentitySet([Identity.from_private_key(key, cert)])
        blobs = {}
        for subject in SUBJECTS:
            meta = new_metadata(recording_id=subject, tenant="t", media_kind=MediaKind.VOICE,
                                media_type="audio/basic")  # fmt: skip
            enc = EnvelopeEncryptor([Recipient.from_certificate(cert)], meta,
                                    signer=signer if subject == "signed" else None)  # fmt: skip
            parts = [enc.update(plain[: min(len(plain), args.size - p)])
                     for p in range(0, args.size, len(plain))]  # fmt: skip
            blobs[subject] = b"".join(parts) + enc.finalize()
        report = verify_source(
            BytesSource(blobs["signed"]), (work / "signers.pem").read_bytes(), keep_digests=True
        )
        assert report.verified is not None
    out: dict[str, list[float]] = {"unsigned": [], "signed_rehash": []}
    for _ in range(args.rounds):
        readers = {
            "unsigned": SegmentReader(BytesSource(blobs["unsigned"]), ring),
            "signed_rehash": SegmentReader(
                BytesSource(blobs["signed"]), ring, verified=report.verified
            ),
        }
        for label, reader in readers.items():
            t0 = time.process_time()
            for off in range(0, reader.size, args.range):
                reader.read_at(off, args.range)
            out[label].append(args.size / (time.process_time() - t0) / 1e6)
    for label, mbs in out.items():
        ratio = statistics.median(m / u for m, u in zip(mbs, out["unsigned"], strict=True))
        print(f"  in-process read_at {label:<18} {statistics.median(mbs):7.0f} MB/s of CPU"
              f"   ratio to unsigned {ratio:.3f}")  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--size", type=parse_size, default=parse_size("64M"))
    p.add_argument("--range", type=parse_size, default=parse_size("256K"))
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", help="work directory (default: a temporary one)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument(
        "--inprocess", action="store_true", help="also time SegmentReader.read_at in-process"
    )
    args = p.parse_args()
    if not 0 < args.range < args.size:
        raise SystemExit("--range must be smaller than --size")
    machine = describe_machine()
    plain = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="rcs-signed-") as tmp:
        work = Path(tmp)
        server = Server(_prepare(work, args.size, plain))
        try:
            res = asyncio.run(_measure(args, server, plain))
        finally:
            server.stop()
    _report(args, machine, res)
    if args.inprocess:
        res["inprocess_mb_s"] = inprocess(args, plain)
    if args.json:
        doc = {"machine": machine, "args": {k: v for k, v in vars(args).items()}, **res}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
