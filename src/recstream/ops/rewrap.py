"""Re-wrap one recording: new recipients (and dropped ones) without touching the media.

docs/FORMAT.md §7: only the header changes.  The file key is unwrapped, the body's
key commitment and final segment are checked (the key really opens this body and
it is not truncated: one segment's work, not a decryption), and
:func:`recstream.envelope.amend_header` builds the new header: kept stanzas byte
for byte (an escrow recipient whose certificate is not at hand is not lost), new
ones wrapped fresh, the MAC recomputed under the same file key.  The new header is
checked before use: it parses, keeps the immutable part, authenticates, has
exactly the recipients asked for, and each new stanza unwraps to the file key when
the key ring holds its key.

Concurrency: the file is opened under an exclusive advisory lock, taken on the file
its name refers to when the lock is granted (a re-wrap that waited for another one
re-reads the result, so both apply); a file the live writer holds is ``busy``.
The new file (owner and mode kept) is written beside it, fsynced, read back and
compared (header as built, body SHA-256 equal to the original's), and committed
over the original while the lock is held.  On any failure the original is untouched.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Final

from recstream import _crypto, durable
from recstream.envelope import KeyRing, Recipient, amend_header, open_file_key
from recstream.errors import (
    IntegrityError,
    KeystoreEntryError,
    KeyUnwrapError,
    RecstreamError,
    TruncatedStreamError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    SEGMENT_WIRE_SIZE,
    BodyLayout,
    Header,
    RecipientStanza,
    parse_header,
)
from recstream.keystore.model import MIN_ID_PREFIX, Keystore
from recstream.keystore.resolve import active_recipient
from recstream.ops.outcome import BUSY, DONE, FAILED, SKIPPED, Outcome, failure_reason
from recstream.ops.tree import Opened, Tree, is_incomplete
from recstream.pki.certs import load_certificates
from recstream.reader import Source, read_header_at

__all__ = ["AddCertificates", "NewRecipients", "for_tenant", "resolve_cert_ids", "rewrap_one"]

_CHUNK: Final = 1 << 20

NewRecipients = Callable[[Header], Sequence[Recipient]]
"""The recipients a file should gain, chosen from its header (e.g. by tenant and kind)."""


@dataclass(frozen=True, slots=True)
class AddCertificates:
    """:data:`NewRecipients` for fixed certificates (PEM bytes: picklable for Dask)."""

    pems: tuple[bytes, ...]

    def __call__(self, header: Header) -> Sequence[Recipient]:
        return self.recipients()

    def recipients(self) -> list[Recipient]:
        return [Recipient.from_certificate(c) for pem in self.pems for c in load_certificates(pem)]


def for_tenant(
    ks: Keystore, tenant: str, *, now: datetime, ca_bundle: bytes | None = None
) -> NewRecipients:
    """The tenant's active certificate of each file's media kind (fail closed).

    A recording of another tenant is refused: its header names its tenant for good.
    """

    def pick(header: Header) -> list[Recipient]:
        if header.metadata.tenant != tenant:
            msg = f"the recording belongs to tenant {header.metadata.tenant}, not {tenant}"
            raise KeystoreEntryError(msg)
        kind = header.metadata.media_kind
        recipient, _ = active_recipient(ks, tenant, kind, now=now, ca_bundle=ca_bundle)
        return [recipient]

    return pick


def resolve_cert_ids(texts: Iterable[str], known: Iterable[str], *, what: str) -> frozenset[str]:
    """Full certificate IDs for IDs or unique prefixes of 8+ hex digits among ``known``.

    Raises:
        ValueError: not hex, too short, matching none of ``known`` or more than one.
    """
    pool = {k.lower() for k in known}
    out = set()
    for text in texts:
        cid = text.strip().lower().replace(":", "")
        if not MIN_ID_PREFIX <= len(cid) <= 64 or any(c not in "0123456789abcdef" for c in cid):
            msg = (
                f"{what} needs a certificate ID or a prefix of {MIN_ID_PREFIX}+ hex digits, "
                f"not {text!r}"
            )
            raise ValueError(msg)
        hits = sorted(k for k in pool if k.startswith(cid))
        if len(hits) > 1:
            msg = f"{what} {text}: the prefix matches {len(hits)} certificates; give more digits"
            raise ValueError(msg)
        if not hits:
            msg = f"{what} {text}: no such certificate in the keys or the recordings given"
            raise ValueError(msg)
        out.add(hits[0])
    return frozenset(out)


def rewrap_one(
    src: Tree,
    rel: str,
    dst: Tree | None,
    keys: KeyRing,
    new: NewRecipients,
    *,
    drop: frozenset[str] = frozenset(),
    wait: float = 0.0,
) -> Outcome:
    """Re-wrap ``src/rel`` in place (``dst`` None) or into ``dst/rel``; never raises for a file.

    ``wait``: seconds to wait for another process's lock on the file (0: report ``busy``).
    Returns an :class:`Outcome` (``done`` with ``info["before"]``/``["after"]`` cert IDs,
    ``skipped`` when already up to date or already in ``dst``, ``busy``, ``failed``).
    """
    t0 = time.perf_counter()
    if is_incomplete(rel):
        return Outcome(rel, BUSY, "still being recorded (*.incomplete); left alone")
    try:
        if dst is not None and dst.exists(rel):
            return Outcome(rel, SKIPPED, "already re-wrapped into the destination")
        with src.open(rel, exclusive=dst is None, wait=wait) as opened:
            return _rewrap(src, rel, dst, opened, keys, new, drop, t0)
    except durable.FileBusyError as exc:
        return Outcome(rel, BUSY, failure_reason(exc), seconds=time.perf_counter() - t0)
    except (RecstreamError, OSError, ValueError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc), seconds=time.perf_counter() - t0)


def _rewrap(  # noqa: PLR0917
    src: Tree,
    rel: str,
    dst: Tree | None,
    opened: Opened,
    keys: KeyRing,
    new: NewRecipients,
    drop: frozenset[str],
    t0: float,
) -> Outcome:
    source = opened.source()
    header = read_header_at(source)
    layout = BodyLayout(header.body_length(source.size))  # a signed file's trailer is not body
    if not layout.complete:
        raise TruncatedStreamError(
            layout.full_segments,
            "not a complete recording (still being recorded, or interrupted); "
            "it is not re-wrapped: 'recstream recover' it first",
        )
    adding = list(new(header))
    if any(r.cert_id_hex in drop for r in adding):
        msg = "a new recipient cannot also be dropped"
        raise ValueError(msg)
    dropping = drop & set(header.cert_ids)
    before = header.cert_ids
    if not dropping and all(r.cert_id_hex in before for r in adding):
        return Outcome(rel, SKIPPED, "already up to date", info={"before": list(before),
                       "after": list(before)})  # fmt: skip
    t1 = time.perf_counter()
    file_key = open_file_key(header, keys)
    unwrap = time.perf_counter() - t1
    _check_body(source, header, layout, file_key)
    new_raw = amend_header(header, file_key, add=adding, drop=dropping)
    new_header = _check_header(new_raw, header, file_key, adding=adding, dropping=dropping,
                               keys=keys)  # fmt: skip
    st = opened.stat
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o600
    owner = (st.st_uid, st.st_gid) if st is not None else None
    target, out_rel = (dst, rel) if dst is not None else _in_place(src, rel)
    with target.output(out_rel, replace=dst is None, mode=mode, owner=owner) as out:
        durable.write_all(out, new_raw)
        digest = _copy_body(opened.file, header.length, source.size, out)
        _verify_written(out, new_raw, digest, source.size - header.length)
        if dst is None and not src.still_at(rel, opened):  # pragma: no cover - lock breakers
            msg = "the file was replaced while it was being re-wrapped; it was left as it is"
            raise IntegrityError(msg)
        if opened.fd is not None:
            after = os.fstat(opened.fd)
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):  # type: ignore[union-attr]
                msg = "the file changed while it was being re-wrapped; it was left as it is"
                raise IntegrityError(msg)
    return Outcome(rel, DONE, bytes=source.size - header.length, envelope_bytes=source.size,
                   seconds=time.perf_counter() - t0, unwrap_seconds=unwrap, output=rel,
                   info={"before": list(before), "after": list(new_header.cert_ids),
                         "cert_ids": list(new_header.cert_ids)})  # fmt: skip


def _in_place(src: Tree, rel: str) -> tuple[Tree, str]:
    """Where an in-place re-wrap commits: the file a symlink points to, not the link."""
    if src.local is None:
        return src, rel
    real = (src.local / rel).resolve()
    return Tree(real.parent), real.name


def _check_body(source: Source, header: Header, layout: BodyLayout, file_key: bytes) -> None:
    """The key opens this body (its commitment, FORMAT.md §6.1) and the body ends where
    it should (its final segment authenticates at its index, §6.2): one segment's work.

    Raises:
        IntegrityError, SegmentAuthError: the body is not this header's, or truncated.
    """
    prefix = source.read_at(header.length, BODY_PREFIX_BYTES)
    cipher = _crypto.SegmentCipher(_crypto.body_key(file_key), prefix, header.context)
    last = layout.segments - 1
    wire = source.read_at(header.length + BodyLayout.segment_offset(last), layout.tail)
    cipher.open_into(last, wire, bytearray(SEGMENT_WIRE_SIZE))


def _check_header(
    raw: bytes,
    old: Header,
    file_key: bytes,
    *,
    adding: Sequence[Recipient],
    dropping: frozenset[str],
    keys: KeyRing,
) -> Header:
    parsed = parse_header(raw)
    kept = tuple(s for s in old.recipients if s.cert_id_hex not in dropping)
    wanted = [s.cert_id_hex for s in kept]
    for r in adding:
        wanted += [] if r.cert_id_hex in wanted else [r.cert_id_hex]
    problem = None
    if not isinstance(parsed, Header) or parsed.length != len(raw):
        problem = "the new header does not parse"
    elif parsed.context != old.context:
        problem = "the new header changed the immutable part"
    elif not _crypto.verify_header_mac(file_key, parsed.authenticated_bytes, parsed.mac):
        problem = "the new header does not authenticate"
    elif parsed.recipients[: len(kept)] != kept or list(parsed.cert_ids) != wanted:
        problem = "the new header's recipients are not the ones asked for"
    else:
        fresh = parsed.recipients[len(kept) :]
        problem = next(filter(None, (_check_unwrap(s, file_key, keys) for s in fresh)), None)
    if problem is not None:  # pragma: no cover - a bug, never an input problem
        msg = f"re-wrap self-check failed: {problem}; the file was left as it is"
        raise IntegrityError(msg)
    assert isinstance(parsed, Header)
    return parsed


def _check_unwrap(stanza: RecipientStanza, file_key: bytes, keys: KeyRing) -> str | None:
    key = keys.private_key_for(stanza)
    if key is None:
        return None  # a --to-cert whose key the key ring does not hold
    try:
        if _crypto.unwrap_file_key(key, stanza.wrapped_key, stanza.cert_id_hex) == file_key:
            return None
    except KeyUnwrapError:
        pass
    return "the new recipient's stanza does not unwrap to the file key"


def _copy_body(src: IO[bytes], start: int, end: int, out: IO[bytes]) -> bytes:
    digest = hashlib.sha256()
    src.seek(start)
    pos = start
    while pos < end:
        chunk = src.read(min(_CHUNK, end - pos))
        if not chunk:
            msg = "the file became shorter while it was being re-wrapped; it was left as it is"
            raise IntegrityError(msg)
        digest.update(chunk)
        durable.write_all(out, chunk)
        pos += len(chunk)
    return digest.digest()


def _verify_written(out: IO[bytes], header: bytes, body_digest: bytes, body_length: int) -> None:
    """Read the new file back: the header as built, the body bytes unchanged (local only:
    other stores' objects cannot be read before they are committed)."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    os.fsync(fd)  # read back what the disk was asked to keep
    if os.pread(fd, len(header), 0) != header:
        msg = "the re-wrapped header did not read back as written; the file was left as it is"
        raise IntegrityError(msg)
    digest = hashlib.sha256()
    pos, end = len(header), len(header) + body_length
    while pos < end and (chunk := os.pread(fd, min(_CHUNK, end - pos), pos)):
        digest.update(chunk)
        pos += len(chunk)
    if pos != end or os.fstat(fd).st_size != end or digest.digest() != body_digest:
        msg = "the copied body differs from the original; the file was left as it is"
        raise IntegrityError(msg)
