"""The per-recording work of each batch job (run in chunks by the runner).

Each function takes URLs and a relative path, opens keys through a
:class:`~recstream.batch.keys.KeySpec` in the worker, never raises for a bad
file (it returns a failed :class:`Outcome` with the reason), and writes its
output atomically: a temporary name, then a move.  A file already committed
by an earlier, interrupted run is recognised and not processed again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import mimetypes
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from recstream.batch.archive import url_to_fs
from recstream.batch.keys import KeySpec
from recstream.durable import atomic_output, write_all
from recstream.envelope import EnvelopeDecryptor, Recipient, amend_header, open_file_key
from recstream.errors import RecstreamError
from recstream.format import Header
from recstream.pki.certs import load_certificates
from recstream.reader import StreamPrefix, read_header_at

__all__ = ["Outcome", "audit_one", "decrypt_one", "rewrap_one"]

READ_SIZE = 1 << 20
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass
class Outcome:
    path: str
    status: str  # done | skipped | failed | ok | orphan | expired | expiring
    detail: str = ""
    bytes: int = 0
    seconds: float = 0.0
    unwrap_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_header(fs: Any, path: str) -> Header:
    with fs.open(path, "rb") as fh:
        return read_header_at(StreamPrefix(fh))


@contextlib.contextmanager
def _output(fs: Any, path: str) -> Iterator[IO[bytes]]:
    """Write ``path`` atomically: all of it or nothing, and never readable by others.

    On a local filesystem this is :func:`recstream.files.atomic_output` (owner-only
    from the first byte, fsync, rename, directory fsync: a crash leaves the old
    file or the new one).  Elsewhere (fsspec URLs) a ``.partial`` object is
    written and moved; durability and permissions are then the store's own.
    """
    fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
    if type(fs).__name__ == "LocalFileSystem":
        # A run killed mid-file (SIGKILL, a lost worker) leaves its temporary file;
        # one task owns each output, so whatever is there is stale: remove it.
        target = Path(path)
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
            stale.unlink(missing_ok=True)
        with atomic_output(path) as fh:
            yield fh
        return
    tmp = path + ".partial"
    try:
        with fs.open(tmp, "wb") as fh:
            yield fh
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    fs.mv(tmp, path)


def plain_name(rel: str, header: Header) -> str:
    """Output name for a decrypted envelope: drop ``.rsv``, add the media extension."""
    p = PurePosixPath(rel)
    stem = p.name[: -len(".rsv")] if p.name.endswith(".rsv") else p.name + ".plain"
    if not PurePosixPath(stem).suffix:
        ext = mimetypes.guess_extension(header.metadata.media_type) or ".bin"
        stem += ext
    return str(p.with_name(stem))


def decrypt_one(src: str, rel: str, dst: str, spec: KeySpec) -> Outcome:
    """Decrypt ``src/rel`` into ``dst`` (same relative path, plaintext name)."""
    t0 = time.perf_counter()
    sfs, sroot = url_to_fs(src)
    dfs, droot = url_to_fs(dst)
    try:
        header = _read_header(sfs, f"{sroot}/{rel}")
        out = f"{droot}/{plain_name(rel, header)}"
        if dfs.exists(out):
            return Outcome(rel, "skipped", "already decrypted by an earlier run")
        keys = spec.open().keyring
        dec = EnvelopeDecryptor(keys)
        total = 0
        with sfs.open(f"{sroot}/{rel}", "rb") as fin, _output(dfs, out) as fout:
            while chunk := fin.read(READ_SIZE):
                piece = dec.update(chunk)
                write_all(fout, piece)
                total += len(piece)
            piece = dec.finalize()
            write_all(fout, piece)
            total += len(piece)
        return Outcome(rel, "done", bytes=total, seconds=time.perf_counter() - t0)
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, "failed", str(exc), seconds=time.perf_counter() - t0)


def rewrap_one(  # noqa: PLR0917 - positional: Dask's client.map passes them so
    src: str,
    rel: str,
    dst: str | None,
    spec: KeySpec,
    add_pem: tuple[bytes, ...],
    drop: tuple[str, ...],
) -> Outcome:
    """Re-wrap ``src/rel``'s file key: add certificates, drop others; the body is copied as is."""
    t0 = time.perf_counter()
    sfs, sroot = url_to_fs(src)
    dfs, droot = url_to_fs(dst) if dst else (sfs, sroot)
    path = f"{sroot}/{rel}"
    out = f"{droot}/{rel}"
    try:
        header = _read_header(sfs, path)
        add = [Recipient.from_certificate(c) for pem in add_pem for c in load_certificates(pem)]
        target = {r.cert_id_hex for r in add}
        have = set(header.cert_ids)
        if (dst and dfs.exists(out)) or (target <= have and not (set(drop) & have)):
            return Outcome(rel, "skipped", "already re-wrapped")
        t1 = time.perf_counter()
        file_key = open_file_key(header, spec.open().keyring)
        unwrap = time.perf_counter() - t1
        new_header = amend_header(header, file_key, add=add, drop=[d for d in drop if d in have])
        body = 0
        with sfs.open(path, "rb") as fin, _output(dfs, out) as fout:
            fin.seek(header.length)
            write_all(fout, new_header)
            while chunk := fin.read(READ_SIZE):
                write_all(fout, chunk)
                body += len(chunk)
        return Outcome(
            rel,
            "done",
            bytes=body,
            seconds=time.perf_counter() - t0,
            unwrap_seconds=unwrap,
            info={"cert_ids": list(_read_header(dfs, out).cert_ids)},
        )
    except (RecstreamError, OSError, ValueError) as exc:
        return Outcome(rel, "failed", str(exc), seconds=time.perf_counter() - t0)


def audit_one(src: str, rel: str, spec: KeySpec, unwrap: bool, now_ts: float) -> Outcome:
    """Read the header only: is there a usable key for at least one recipient?"""
    t0 = time.perf_counter()
    fs, root = url_to_fs(src)
    now = dt.datetime.fromtimestamp(now_ts, tz=dt.UTC)
    try:
        header = _read_header(fs, f"{root}/{rel}")
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, "failed", str(exc))
    opened = spec.open()
    md = header.metadata
    info: dict[str, Any] = {
        "tenant": md.tenant,
        "recording_id": md.recording_id,
        "kind": md.media_kind.name.lower(),
        "cert_ids": list(header.cert_ids),
    }
    usable = [
        opened.certs[c] for c in header.cert_ids if c in opened.certs and opened.certs[c].has_key
    ]
    if not usable:
        held = [s for s in header.recipients if opened.keyring.private_key_for(s) is not None]
        if not held:
            return Outcome(
                rel,
                "orphan",
                "no key held for any of its certificates",
                seconds=time.perf_counter() - t0,
                info=info,
            )
    unwrap_s = 0.0
    if unwrap:
        t1 = time.perf_counter()
        try:
            open_file_key(header, opened.keyring)
        except RecstreamError as exc:
            return Outcome(
                rel,
                "orphan",
                f"the key held does not open it: {exc}",
                seconds=time.perf_counter() - t0,
                info=info,
            )
        unwrap_s = time.perf_counter() - t1
    status, detail = "ok", ""
    if usable:
        best = max(usable, key=lambda c: c.not_after)
        info["key_expires"] = best.not_after.isoformat()
        if best.not_after <= now:
            status = "expired"
            detail = f"its only usable certificate(s) expired {best.not_after:%Y-%m-%d}"
        elif best.not_after - now <= EXPIRY_WARNING:
            status = "expiring"
            detail = f"its usable certificate(s) expire {best.not_after:%Y-%m-%d}"
    return Outcome(
        rel, status, detail, seconds=time.perf_counter() - t0, unwrap_seconds=unwrap_s, info=info
    )
