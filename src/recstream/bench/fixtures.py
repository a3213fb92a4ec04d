"""What benchmarks run on: a throwaway RSA identity, random input files, a work directory."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from recstream.envelope import Identity, IdentitySet, Recipient
from recstream.pki.ca import self_signed_recording_certificate

__all__ = [
    "BenchError",
    "BenchIdentity",
    "default_directory",
    "file_sha256",
    "make_identity",
    "random_bytes",
    "work_directory",
    "write_random_file",
]

# tmpfs: measures the code, not a disk.  Runs use a fresh mkdtemp() inside it.
DEFAULT_DIRECTORY = Path("/dev/shm")  # noqa: S108


class BenchError(RuntimeError):
    """A benchmark could not run (a subject failed, no room, a tool misbehaved)."""


@dataclass(frozen=True, slots=True)
class BenchIdentity:
    """An RSA key with its self-signed certificate, in memory and as files."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path
    bits: int

    @property
    def recipient(self) -> Recipient:
        return Recipient.from_certificate(self.cert)

    @property
    def keys(self) -> IdentitySet:
        return IdentitySet([Identity.from_private_key(self.key, self.cert)])

    def write_openssh(self, directory: Path) -> tuple[Path, Path]:
        """The same key as OpenSSH private and ``ssh-rsa`` public files (for age)."""
        priv = directory / f"bench-{self.bits}.ssh"
        pub = directory / f"bench-{self.bits}.ssh.pub"
        _write_private(
            priv,
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
        pub.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            + b" recstream-bench\n"
        )
        return priv, pub


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_identity(directory: Path, bits: int = 3072) -> BenchIdentity:
    """A fresh RSA key and a one-day self-signed certificate, written to ``directory``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = self_signed_recording_certificate(key, f"recstream bench {bits}", days=1, now=start)
    cert_path = directory / f"bench-{bits}.cert.pem"
    key_path = directory / f"bench-{bits}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return BenchIdentity(key, cert, cert_path, key_path, bits)


def random_bytes(n: int) -> bytearray:
    """``n`` pseudo-random bytes (AES-CTR keystream: fast, and nothing compresses it)."""
    out = bytearray(n)
    enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    enc.update_into(bytes(n), out)
    return out


def write_random_file(path: Path, size: int, block: int = 8 << 20) -> None:
    """Write ``size`` pseudo-random bytes to ``path``."""
    enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    zeros = bytes(block)
    out = bytearray(block + 16)
    with open(path, "wb", buffering=0) as fh:
        left = size
        while left:
            n = min(block, left)
            enc.update_into(zeros[:n], out)
            fh.write(memoryview(out)[:n])
            left -= n


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def default_directory() -> Path:
    """``/dev/shm`` where it is writable (tmpfs), else the system temporary directory."""
    if DEFAULT_DIRECTORY.is_dir() and os.access(DEFAULT_DIRECTORY, os.W_OK):
        return DEFAULT_DIRECTORY
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def work_directory(parent: Path | None, need_bytes: int = 0) -> Iterator[Path]:
    """A fresh directory under ``parent`` (default :func:`default_directory`), removed after.

    Raises:
        BenchError: ``parent`` has less than ``need_bytes`` free.
    """
    base = parent or default_directory()
    if not base.is_dir():
        msg = f"work directory does not exist: {base}"
        raise BenchError(msg)
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        msg = (
            f"{base} has {free / 2**30:.1f} GiB free; this benchmark needs "
            f"{need_bytes / 2**30:.1f} GiB (choose --dir or a smaller --size)"
        )
        raise BenchError(msg)
    path = Path(tempfile.mkdtemp(prefix="recstream-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
