"""The RCS's signature policy and its per-file verification cache (issue 16).

**Policy**, per tenant (``[policy.TENANT]`` in the service config, ``[policy."*"]``
for every tenant not named): ``signer_ca`` is the CA file of the recorders'
signing certificates, and ``require_signature = true`` makes playback refuse a
recording that is unsigned, whose signature is invalid, or whose signer does not
chain to ``signer_ca`` (403 ``signature_required`` / 403 ``signer_refused`` /
422 ``bad_signature``, audited like every playback).  Without ``signer_ca``
nothing is verified and the listing says ``unchecked``.

**Verification is once per file**, not per request: the first playback (or the
background pass after an index refresh) hashes the whole body
(:func:`recstream.signing.verify_source` with ``keep_digests=True``) and the
report, with its :class:`~recstream.signing.VerifiedBody`, is cached under the
file's identity (:func:`recstream.signing.file_identity`: device, inode, size,
mtime and ctime in ns) and the CA file's digest.  A changed or replaced file has
another identity, so it is verified again; a Range read on a verified file checks
only the segments it reads against the signed digests (``SegmentReader(verified=)``).
Concurrent first requests for one file wait for one verification.  The cache is
bounded by the digest bytes it holds (LRU).

**Listing**: each item gains ``"signature": {"status": "valid|invalid|unsigned|
unchecked", "signer": SUBJECT or null, "cert_id": ID or null}``.  ``unsigned``
comes from the header (format version 1), ``valid``/``invalid`` from a cached
verification of the file as it is now (a refused signer is ``invalid``: the
recording cannot be trusted), ``unchecked`` otherwise, with the signer the
header *claims*.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from recstream.errors import RecstreamError
from recstream.service.archive import Opened
from recstream.service.index import signature_json
from recstream.signing import (
    SignatureReport,
    SignatureStatus,
    file_identity,
    verify_source,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "SignatureCache",
    "SignaturePolicy",
    "Summary",
    "TenantPolicy",
    "listing_status",
    "verify_pending",
]

# Digests kept: 32 bytes per 16 KiB segment, so 64 MiB covers ~32 TiB of recordings.
DEFAULT_CACHE_BYTES: Final = 64 << 20
WILDCARD: Final = "*"

Identity = tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """One tenant's rule: the signer CA file's bytes, and whether a signature is required."""

    require_signature: bool = False
    signer_ca: bytes | None = field(default=None, repr=False)
    ca_digest: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        # once: the listing asks for it per item
        object.__setattr__(self, "ca_digest", hashlib.sha256(self.signer_ca or b"").digest())


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """Every tenant's rule; ``default`` (``[policy."*"]``) for tenants not named."""

    tenants: dict[str, TenantPolicy] = field(default_factory=dict)
    default: TenantPolicy = field(default_factory=TenantPolicy)

    def for_tenant(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default)

    @property
    def checks_any(self) -> bool:
        """True when some tenant has a ``signer_ca``: background verification is worth it."""
        return any(p.signer_ca for p in (*self.tenants.values(), self.default))


@dataclass(frozen=True, slots=True)
class Summary:
    """What a listing shows of a verified file (by its index stamp)."""

    stamp: tuple[int | str, ...]
    ca_digest: bytes
    status: str
    signer: str | None
    cert_id: str | None
    json: bytes = b""  # the listing's "signature" value, serialised once


def listing_status(report: SignatureReport) -> str:
    """A report's status in the listing's vocabulary (valid, invalid, unsigned)."""
    if report.status is SignatureStatus.VALID:
        return "valid"
    if report.status is SignatureStatus.UNSIGNED:
        return "unsigned"
    return "invalid"  # a bad signature, or a signer this tenant's CA does not vouch for


class SignatureCache:
    """Verified signatures by (file identity, CA digest); thread-safe, bounded, single-flight."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._reports: OrderedDict[tuple[Identity, bytes], SignatureReport] = OrderedDict()
        self._bytes = 0
        self._running: dict[tuple[Identity, bytes], threading.Event] = {}
        self._by_name: dict[str, Summary] = {}
        self.verifications = 0  # files hashed (a test and the metrics read it)

    def lookup(self, rec: Opened, policy: TenantPolicy) -> SignatureReport | None:
        """The cached report for the opened recording as it is now, or None (never blocks
        on a verification: at most one ``fstat``, so the event loop may call it)."""
        key = (_identity(rec), policy.ca_digest)
        with self._lock:
            cached = self._reports.get(key)
            if cached is not None:
                self._reports.move_to_end(key)
            return cached

    def check(self, rec: Opened, name: str, policy: TenantPolicy) -> SignatureReport:
        """The signature of the opened recording ``rec`` (archive name ``name``) under ``policy``.

        The report's :class:`~recstream.signing.VerifiedBody` hashes every segment a
        Range reads and compares it with the signed digest, for a local file as for a
        store object.  (Trusting the verification for later reads as long as the
        file's identity held was tried and dropped: a write through a shared memory
        map changes a page without touching mtime or ctime once the page is dirty.)

        Verifies at most once per file version and CA; blocks (call it in a thread).

        Raises:
            ValueError: ``policy`` has no signer CA.
            EnvelopeFormatError, TruncatedStreamError, OSError: as verify_source.
        """
        if policy.signer_ca is None:
            msg = "no signer CA: nothing to verify against"
            raise ValueError(msg)
        key = (_identity(rec), policy.ca_digest)
        while True:
            with self._lock:
                cached = self._reports.get(key)
                if cached is not None:
                    self._reports.move_to_end(key)
                    return cached
                running = self._running.get(key)
                if running is None:
                    done = self._running[key] = threading.Event()
                    break
            running.wait()
        try:
            report = verify_source(rec.source, policy.signer_ca, keep_digests=True)
            self._store(key, report, name, rec.stamp)
            return report
        finally:
            with self._lock:
                del self._running[key]
            done.set()

    def _store(
        self,
        key: tuple[Identity, bytes],
        report: SignatureReport,
        name: str,
        stamp: tuple[int | str, ...],
    ) -> None:
        size = len(report.verified.digests) if report.verified is not None else 0
        status = listing_status(report)
        summary = Summary(
            stamp,
            key[1],
            status,
            report.signer_subject,
            report.cert_id,
            signature_json(status, report.signer_subject, report.cert_id),
        )
        with self._lock:
            self.verifications += 1
            self._by_name[name] = summary
            if size > self.max_bytes:
                return  # too big to keep: verified again next time
            self._reports[key] = report
            self._bytes += size
            while self._bytes > self.max_bytes and self._reports:
                _, old = self._reports.popitem(last=False)
                self._bytes -= len(old.verified.digests) if old.verified is not None else 0

    def summary(self, name: str, stamp: tuple[int | str, ...], ca_digest: bytes) -> Summary | None:
        """The last verdict for ``name`` if it is for this version of the file and this CA."""
        with self._lock:
            found = self._by_name.get(name)
        if found is None or found.stamp != stamp or found.ca_digest != ca_digest:
            return None
        return found

    def retain(self, names: set[str]) -> None:
        """Keep the listing verdicts of these archive names only (the others are gone)."""
        with self._lock:
            for name in [n for n in self._by_name if n not in names]:
                del self._by_name[name]

    def __len__(self) -> int:
        return len(self._reports)


def _identity(rec: Opened) -> Identity:
    """What identifies this version of a recording: a local file's device, inode, size,
    mtime and ctime (:func:`recstream.signing.file_identity`); a store object's stamp."""
    if rec.fd is not None:
        return file_identity(os.fstat(rec.fd))
    return ("store", *rec.stamp)


def verify_pending(
    names: Iterable[tuple[str, str, tuple[int | str, ...]]],
    cache: SignatureCache,
    policy: SignaturePolicy,
    open_file: Callable[[str], Opened],
    *,
    limit: int,
    stop: threading.Event | None = None,
) -> int:
    """Verify up to ``limit`` signed files not yet verified (the index's background pass).

    Args:
        names: (archive name, tenant, index stamp) of signed recordings.
        open_file: opens an archive name (no symbolic links; a local file or a store
            object), as :meth:`recstream.service.archive.Archive.open_recording`.

    Returns:
        How many files were verified.
    """
    done = 0
    for name, tenant, stamp in names:
        if done >= limit or (stop is not None and stop.is_set()):
            break
        rule = policy.for_tenant(tenant)
        if rule.signer_ca is None or cache.summary(name, stamp, rule.ca_digest) is not None:
            continue
        try:
            rec = open_file(name)
        except (RecstreamError, OSError):
            continue
        try:
            cache.check(rec, name, rule)
            done += 1
        except (RecstreamError, OSError, ValueError):
            pass  # a file that cannot be read stays unchecked; playback will say why
        finally:
            rec.close()
    return done
