"""Re-wrap: give recordings a new recipient (and drop old ones) without touching media.

docs/FORMAT.md §7: only the header changes.  The file key is unwrapped with the
keystore, the body's key commitment and final segment are checked (the key really
opens this body, and it is not truncated: one segment's work, not a decryption),
and :func:`recstream.envelope.amend_header` builds the new header: kept stanzas
byte for byte (an escrow recipient whose certificate is not at hand is not lost),
the new recipient wrapped fresh, the MAC recomputed under the same file key.  The
result is checked before use: it parses, keeps the immutable part, authenticates,
has exactly the recipients asked for, and the new stanza unwraps to the file key
when the keystore holds its key.

Each file is replaced atomically: the new header and the body are written to a
temporary file beside it, fsynced, read back and compared (header as built, body
SHA-256 equal to the original's, the source unchanged meanwhile), then renamed
over the original.  On any failure the original is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from recstream import _crypto
from recstream.envelope import KeyRing, Recipient, amend_header, open_file_key
from recstream.errors import (
    IntegrityError,
    KeystoreEntryError,
    KeyUnwrapError,
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
from recstream.keystore.model import Keystore
from recstream.keystore.resolve import active_recipient
from recstream.reader import FileSource, read_header_at

__all__ = ["NewRecipient", "Rewrapped", "for_tenant", "rewrap_file"]

_CHUNK: Final = 1 << 20

NewRecipient = Callable[[Header], Recipient]


@dataclass(frozen=True, slots=True)
class Rewrapped:
    """What happened to one file.  ``changed`` is False when it was already up to date."""

    path: Path
    changed: bool
    before: tuple[str, ...]
    after: tuple[str, ...]


def for_tenant(
    ks: Keystore, tenant: str, *, now: datetime, ca_bundle: bytes | None = None
) -> NewRecipient:
    """The tenant's active certificate of each file's media kind (fail closed).

    A recording of another tenant is refused: its header names its tenant for good.
    """

    def pick(header: Header) -> Recipient:
        if header.metadata.tenant != tenant:
            msg = f"the recording belongs to tenant {header.metadata.tenant}, not {tenant}"
            raise KeystoreEntryError(msg)
        recipient, _ = active_recipient(
            ks, tenant, header.metadata.media_kind, now=now, ca_bundle=ca_bundle
        )
        return recipient

    return pick


def rewrap_file(
    path: str | os.PathLike[str],
    keys: KeyRing,
    new: NewRecipient,
    drop: frozenset[str] = frozenset(),
) -> Rewrapped:
    """Re-wrap one recording for ``new(header)``, without the cert IDs in ``drop``.

    Raises:
        EnvelopeFormatError, KeyAccessError, HeaderAuthError, IntegrityError: the
            file cannot be opened, or is not a complete recording.
        KeystoreError, CertificateError: no usable new recipient.
        ValueError: more than 16 recipients would result.
        OSError: on I/O failure.  In every case the file is unchanged.
    """
    shown = Path(path)
    real = shown.resolve()  # replace the file a symlink points to, not the link
    with open(real, "rb", buffering=0) as fh:
        source = FileSource(fh.fileno())
        before = os.fstat(fh.fileno())
        header = read_header_at(source)
        layout = BodyLayout(source.size - header.length)
        if not layout.complete:
            raise TruncatedStreamError(
                layout.full_segments,
                "not a complete recording (still being recorded, or interrupted); "
                "it is not re-wrapped: 'recstream recover' it first",
            )
        recipient = new(header)
        if recipient.cert_id_hex in drop:
            msg = "the new recipient cannot also be dropped"
            raise ValueError(msg)
        dropping = drop & set(header.cert_ids)
        if not dropping and recipient.cert_id_hex in header.cert_ids:
            return Rewrapped(shown, False, header.cert_ids, header.cert_ids)
        file_key = open_file_key(header, keys)
        _check_body(source, header, layout, file_key)
        new_raw = amend_header(header, file_key, add=[recipient], drop=dropping)
        new_header = _check_header(
            new_raw, header, file_key, recipient=recipient, dropping=dropping, keys=keys
        )
        with _replacement(real, before) as out:
            _write_all_fd(out, new_raw, 0)
            digest = _copy_body(fh.fileno(), header.length, source.size, out, len(new_raw))
            os.fsync(out)
            _verify_written(out, new_raw, digest, source.size - header.length)
            after = os.fstat(fh.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                msg = "the file changed while it was being re-wrapped; it was left as it is"
                raise IntegrityError(msg)
    return Rewrapped(shown, True, header.cert_ids, new_header.cert_ids)


def _check_body(source: FileSource, header: Header, layout: BodyLayout, file_key: bytes) -> None:
    """The key opens this body (its commitment, FORMAT.md §6.1) and the body ends where
    it should (its final segment authenticates at its index, §6.2): one segment's work.

    Raises:
        IntegrityError, SegmentAuthError: the body is not this header's, or truncated.
    """
    prefix = source.read_at(header.length, BODY_PREFIX_BYTES)
    cipher = _crypto.SegmentCipher(_crypto.body_key(file_key), prefix, header.context)
    last = layout.segments - 1
    wire = source.read_at(header.length + BodyLayout.segment_offset(last), SEGMENT_WIRE_SIZE)
    cipher.open_into(last, wire, bytearray(SEGMENT_WIRE_SIZE))


def _check_header(
    raw: bytes,
    old: Header,
    file_key: bytes,
    *,
    recipient: Recipient,
    dropping: frozenset[str],
    keys: KeyRing,
) -> Header:
    parsed = parse_header(raw)
    kept = tuple(s for s in old.recipients if s.cert_id_hex not in dropping)
    wanted = [s.cert_id_hex for s in kept]
    wanted += [] if recipient.cert_id_hex in wanted else [recipient.cert_id_hex]
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
        problem = _check_unwrap(parsed.recipients[-1], file_key, keys)
    if problem is not None:  # pragma: no cover - a bug, never an input problem
        msg = f"re-wrap self-check failed: {problem}; the file was left as it is"
        raise IntegrityError(msg)
    assert isinstance(parsed, Header)
    return parsed


def _check_unwrap(stanza: RecipientStanza, file_key: bytes, keys: KeyRing) -> str | None:
    key = keys.private_key_for(stanza)
    if key is None:
        return None  # a --to-cert whose key the keystore does not hold
    try:
        if _crypto.unwrap_file_key(key, stanza.wrapped_key, stanza.cert_id_hex) == file_key:
            return None
    except KeyUnwrapError:
        pass
    return "the new recipient's stanza does not unwrap to the file key"


def _copy_body(src: int, start: int, end: int, out: int, at: int) -> bytes:
    digest = hashlib.sha256()
    pos = start
    while pos < end:
        chunk = os.pread(src, min(_CHUNK, end - pos), pos)
        if not chunk:
            msg = "the file became shorter while it was being re-wrapped; it was left as it is"
            raise IntegrityError(msg)
        digest.update(chunk)
        _write_all_fd(out, chunk, at + pos - start)
        pos += len(chunk)
    return digest.digest()


def _verify_written(out: int, header: bytes, body_digest: bytes, body_length: int) -> None:
    """Read the temporary file back: the header as built, the body bytes unchanged."""
    if os.pread(out, len(header), 0) != header:
        msg = "the re-wrapped header did not read back as written; the file was left as it is"
        raise IntegrityError(msg)
    digest = hashlib.sha256()
    pos, end = len(header), len(header) + body_length
    while pos < end and (chunk := os.pread(out, min(_CHUNK, end - pos), pos)):
        digest.update(chunk)
        pos += len(chunk)
    if pos != end or os.fstat(out).st_size != end or digest.digest() != body_digest:
        msg = "the copied body differs from the original; the file was left as it is"
        raise IntegrityError(msg)


def _write_all_fd(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


@contextlib.contextmanager
def _replacement(target: Path, original: os.stat_result) -> Iterator[int]:
    """A read-write temporary file beside ``target``, renamed over it on success."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with contextlib.suppress(PermissionError):  # only root may give files away
            os.fchown(fd, original.st_uid, original.st_gid)
        os.fchmod(fd, stat.S_IMODE(original.st_mode))
        yield fd  # the caller writes, fsyncs and checks
        os.close(fd)
        fd = -1
        tmp.replace(target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
