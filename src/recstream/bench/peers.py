"""``bench peers``: the same file, the same RSA key, the tools a user would pick instead.

Every subject is a whole process (wall time and peak RSS from GNU time), on the
same input file on tmpfs, encrypted to the same RSA key, interleaved round by
round with ``recstream encrypt``/``decrypt``:

* ``openssl cms -encrypt -stream`` with AES-256-GCM where the installed OpenSSL
  accepts it (else AES-256-CBC, and the report says so), RSA-OAEP-SHA-256 key
  transport to the certificate; ``openssl cms -decrypt``.
* ``age`` (Debian package ``age``) to the key as an ``ssh-rsa`` recipient.
* the AWS Encryption SDK for Python, a raw RSA master key (OAEP-SHA-256), in
  streaming mode with its default algorithm suite and frame size.
* Google Tink's streaming AEAD (AES256_GCM_HKDF_1MB): bulk only, Tink has no
  RSA key wrapping.

A peer that is not installed is skipped with a note.  Install them with
``apt-get install -y age`` and ``pip install 'recstream[bench]'``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from recstream.bench.fixtures import (
    BenchError,
    BenchIdentity,
    file_sha256,
    make_identity,
    work_directory,
    write_random_file,
)
from recstream.bench.machine import describe_machine
from recstream.bench.modes import PEER_NAMES, Progress
from recstream.bench.proc import ProcResult, run_measured
from recstream.bench.report import Column, Report
from recstream.bench.stats import format_size, interleave, paired_ratio, rate, summarize

__all__ = ["Peer", "PeersConfig", "find_peers", "run_from_args", "run_peers"]

Argv = Callable[[Path, Path], list[str]]


@dataclass(frozen=True, slots=True)
class PeersConfig:
    size: int = 256 << 20
    repeat: int = 3
    warmup: int = 1
    rsa_bits: int = 3072
    only: tuple[str, ...] = PEER_NAMES
    directory: Path | None = None
    null: bool = False  # timed outputs go to /dev/null (issue 20)


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    method: str
    version: str
    encrypt: Argv
    decrypt: Argv


def _run_quietly(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run a set-up command (a probe, a key conversion, a version query)."""
    # The commands are the peers' executables found on PATH, with our own arguments.
    return subprocess.run(cmd, capture_output=True, check=False, timeout=60)  # noqa: S603


def _output(cmd: list[str]) -> str:
    """The first line a command prints (its version), or ``?``."""
    try:
        res = _run_quietly(cmd)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (res.stdout or res.stderr).decode(errors="replace").strip().splitlines()
    return lines[0] if lines else "?"


def _recstream(ident: BenchIdentity, *, one_thread: bool = False) -> Peer:
    from recstream import __version__
    from recstream.parallel import THREADS_ENV, default_pool

    # The multi-core path forced (the CLI leaves it aside on a loaded machine), and
    # the single-thread one (issue 20's reference), in the same run.
    threads = 1 if one_thread else default_pool().threads
    env = ["env", f"{THREADS_ENV}={threads}"]
    cli = [*env, sys.executable, "-m", "recstream"]

    def out(o: Path) -> str:  # /dev/null: recstream's stdout, which run_measured discards
        return "-" if str(o) == os.devnull else str(o)

    return Peer(
        "recstream 1 thread" if one_thread else "recstream",
        "Cobblestone-256 (AES-256-GCM, 16 KiB segments), RSA-OAEP-SHA-256"
        + (f", {THREADS_ENV}=1" if one_thread else ", segments on every core"),
        __version__,
        lambda i, o: [*cli, "encrypt", "--cert", str(ident.cert_path), str(i), out(o)],
        lambda i, o: [*cli, "decrypt", "--key", str(ident.key_path), str(i), out(o)],
    )


def _openssl(ident: BenchIdentity, work: Path) -> Peer | str:
    exe = shutil.which("openssl")
    if exe is None:
        return "openssl is not installed"
    probe, out = work / "probe.bin", work / "probe.cms"
    probe.write_bytes(b"probe")
    cipher = "-aes-256-gcm"
    oaep = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"]
    base = [exe, "cms", "-encrypt", "-binary", "-stream", "-outform", "DER"]
    probe_cmd = [*base, cipher, "-in", str(probe), "-out", str(out)]
    ok = _run_quietly([*probe_cmd, "-recip", str(ident.cert_path), *oaep]).returncode == 0
    if not ok:
        cipher = "-aes-256-cbc"
    return Peer(
        "openssl",
        f"cms -encrypt -stream {cipher[1:].upper()}"
        + ("" if ok else " (this OpenSSL refused AES-256-GCM for CMS)")
        + ", RSA-OAEP-SHA-256",
        _output([exe, "version"]).split(" (")[0],
        lambda i, o: [
            *base,
            cipher,
            "-in",
            str(i),
            "-out",
            str(o),
            "-recip",
            str(ident.cert_path),
            *oaep,
        ],
        lambda i, o: [
            exe,
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(i),
            "-out",
            str(o),
            "-inkey",
            str(ident.key_path),
            "-recip",
            str(ident.cert_path),
        ],
    )


def _age(ident: BenchIdentity, work: Path) -> Peer | str:
    exe = shutil.which("age")
    if exe is None:
        return "age is not installed (apt-get install -y age)"
    priv, pub = ident.write_openssh(work)
    keygen = shutil.which("ssh-keygen")
    if keygen is not None:  # let ssh-keygen derive the recipient, as a user would
        derived = _run_quietly([keygen, "-y", "-f", str(priv)])
        if derived.returncode == 0:
            pub.write_bytes(derived.stdout)
    return Peer(
        "age",
        "ssh-rsa recipient (RSA-OAEP-SHA-256), ChaCha20-Poly1305 64 KiB chunks",
        _output([exe, "--version"]),
        lambda i, o: [exe, "-R", str(pub), "-o", str(o), str(i)],
        lambda i, o: [exe, "-d", "-i", str(priv), "-o", str(o), str(i)],
    )


def _python_peer(module: str, dist: str) -> str | None:
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _aws(ident: BenchIdentity) -> Peer | str:
    version = _python_peer("aws_encryption_sdk", "aws-encryption-sdk")
    if version is None:
        return "the AWS Encryption SDK is not installed (pip install 'recstream[bench]')"
    run = [sys.executable, "-m", "recstream.bench._peerproc", "aws"]
    return Peer(
        "aws",
        "Encryption SDK streaming, raw RSA master key (OAEP-SHA-256), default suite "
        "(AES-256-GCM, HKDF, key commitment, ECDSA P-384 signature), 4 KiB frames",
        f"aws-encryption-sdk {version}",
        lambda i, o: [*run, "encrypt", str(i), str(o), str(ident.key_path)],
        lambda i, o: [*run, "decrypt", str(i), str(o), str(ident.key_path)],
    )


def _tink(work: Path) -> Peer | str:
    version = _python_peer("tink", "tink")
    if version is None:
        return "Tink is not installed (pip install 'recstream[bench]')"
    keyset = work / "tink-keyset.json"
    run = [sys.executable, "-m", "recstream.bench._peerproc", "tink"]
    made = _run_quietly([*run, "keygen", str(keyset)])
    if made.returncode != 0:
        return f"Tink could not make a keyset: {made.stderr.decode(errors='replace')[-300:]}"
    return Peer(
        "tink",
        "streaming AEAD AES256_GCM_HKDF_1MB, no RSA (Tink has no RSA key wrapping)",
        f"tink {version}",
        lambda i, o: [*run, "encrypt", str(i), str(o), str(keyset)],
        lambda i, o: [*run, "decrypt", str(i), str(o), str(keyset)],
    )


def find_peers(cfg: PeersConfig, ident: BenchIdentity, work: Path) -> tuple[list[Peer], list[str]]:
    """The peers to run (recstream first) and a note for each one skipped."""
    makers: dict[str, Callable[[], Peer | str]] = {
        "openssl": lambda: _openssl(ident, work),
        "age": lambda: _age(ident, work),
        "aws": lambda: _aws(ident),
        "tink": lambda: _tink(work),
    }
    peers, skipped = [_recstream(ident), _recstream(ident, one_thread=True)], []
    for name in cfg.only:
        found = makers[name]()
        if isinstance(found, Peer):
            peers.append(found)
        else:
            skipped.append(f"{name} skipped: {found}")
    return peers, skipped


class _Runs:
    """Reference ciphertexts per peer, checked once, and the timed subjects."""

    def __init__(self, peers: list[Peer], src: Path, work: Path, *, null: bool = False) -> None:
        self.src, self.work, self.peers = src, work, peers
        self.out = work / "output"
        self.timed_out = Path(os.devnull) if null else self.out
        self.sealed = {p.name: work / f"sealed.{p.name}" for p in peers}

    def prepare(self, progress: Progress) -> None:
        digest = file_sha256(self.src)
        for p in self.peers:
            progress(f"{p.name}: reference ciphertext and a round-trip check")
            run_measured(p.encrypt(self.src, self.sealed[p.name]))
            run_measured(p.decrypt(self.sealed[p.name], self.out))
            if file_sha256(self.out) != digest:
                msg = f"{p.name}: decrypting its own ciphertext did not give the input back"
                raise BenchError(msg)
            self.out.unlink()

    def _run(self, argv: list[str]) -> ProcResult:
        if self.timed_out == self.out:
            self.out.unlink(missing_ok=True)
        res = run_measured(argv)
        if self.timed_out == self.out:
            self.out.unlink(missing_ok=True)
        return res

    def subjects(self) -> dict[str, Callable[[], ProcResult]]:
        subjects: dict[str, Callable[[], ProcResult]] = {}
        for p in self.peers:
            subjects[f"{p.name} encrypt"] = partial(self._run, p.encrypt(self.src, self.timed_out))
            subjects[f"{p.name} decrypt"] = partial(
                self._run, p.decrypt(self.sealed[p.name], self.timed_out)
            )
        return subjects


def run_peers(cfg: PeersConfig, progress: Progress = lambda _: None) -> Report:
    """Run the peers comparison; return its report."""
    report = Report(
        "peers",
        describe_machine(),
        {
            "size": format_size(cfg.size),
            "repeat": cfg.repeat,
            "warmup": cfg.warmup,
            "rsa_bits": cfg.rsa_bits,
            "output": "/dev/null" if cfg.null else "tmpfs",
        },
    )
    need = int(cfg.size * (len(cfg.only) + 3.5)) + (64 << 20)
    with work_directory(cfg.directory, need_bytes=need) as work:
        report.parameters["directory"] = str(work.parent)
        ident = make_identity(work, cfg.rsa_bits)
        peers, skipped = find_peers(cfg, ident, work)
        report.notes += skipped
        src = work / "input.bin"
        progress(f"writing {format_size(cfg.size)} of random input")
        write_random_file(src, cfg.size)
        runs = _Runs(peers, src, work, null=cfg.null)
        runs.prepare(progress)
        results = interleave(runs.subjects(), cfg.repeat, warmup=cfg.warmup, progress=progress)
    _tabulate(report, cfg, peers, results)
    report.check_noise()
    return report


def _tabulate(
    report: Report, cfg: PeersConfig, peers: list[Peer], results: dict[str, list[ProcResult]]
) -> None:
    table = report.table(
        f"peers: {format_size(cfg.size)} on tmpfs"
        f"{' to /dev/null' if cfg.null else ''}, RSA-{cfg.rsa_bits}, whole processes",
        Column("peer", "peer"),
        Column("encrypt_mb_s", "encrypt MB/s"),
        Column("decrypt_mb_s", "decrypt MB/s"),
        Column("encrypt_rss_mib", "enc RSS MiB"),
        Column("decrypt_rss_mib", "dec RSS MiB"),
        Column("encrypt_cpu", "enc CPU ns/B", 3),
        Column("decrypt_cpu", "dec CPU ns/B", 3),
        Column("encrypt_speedup", "recstream x enc", 2),
        Column("decrypt_speedup", "recstream x dec", 2),
    )
    secs = {k: [r.wall for r in v] for k, v in results.items()}
    for p in peers:
        row: dict[str, object] = {"peer": p.name}
        for op in ("encrypt", "decrypt"):
            key = f"{p.name} {op}"
            rss = [r.peak_rss_kib / 1024 for r in results[key] if r.peak_rss_kib]
            row[f"{op}_mb_s"] = rate(cfg.size, secs[key])
            row[f"{op}_rss_mib"] = summarize(rss) if rss else None
            cpu = [r.cpu / cfg.size * 1e9 for r in results[key] if r.cpu is not None]
            row[f"{op}_cpu"] = summarize(cpu) if cpu else None
            if p.name != "recstream":
                row[f"{op}_speedup"] = paired_ratio(secs[key], secs[f"recstream {op}"])
        table.add(**row)  # type: ignore[arg-type]
    methods = report.table(
        "what each peer ran",
        Column("peer", "peer"),
        Column("version", "version"),
        Column("method", "method"),
    )
    for p in peers:
        methods.add(peer=p.name, version=p.version, method=p.method)
    report.notes += [
        "recstream x = recstream's throughput / the peer's, per round (> 1: recstream is "
        "faster).  Wall time is the whole process: start-up, key loading, RSA, I/O.",
        "Peak RSS is each process's own (GNU time %M).",
    ]


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    unknown = set(ns.only) - set(PEER_NAMES)
    if unknown:
        msg = f"unknown peers: {', '.join(sorted(unknown))} (choose from {', '.join(PEER_NAMES)})"
        raise ValueError(msg)
    if ns.warmup < 0:
        msg = "--warmup cannot be negative"
        raise ValueError(msg)
    cfg = PeersConfig(
        size=ns.size,
        repeat=ns.repeat,
        warmup=ns.warmup,
        rsa_bits=ns.rsa_bits,
        only=tuple(ns.only),
        directory=ns.dir,
        null=ns.null,
    )
    return run_peers(cfg, progress)
