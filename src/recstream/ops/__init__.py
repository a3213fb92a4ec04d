"""Per-recording operations: decrypt one, re-wrap one, audit one, verify one.

Each takes a :class:`~recstream.ops.tree.Tree` (a local directory or an fsspec URL)
and a relative path, applies every safety check, writes through
:mod:`recstream.durable`, never raises for a bad recording (it returns an
:class:`~recstream.ops.outcome.Outcome` with the reason) and leaves alone a
recording that is still being recorded or that another process holds (``busy``).

The schedulers are elsewhere and only schedule: ``decrypt --out-dir`` and small
``recstream batch`` jobs run them on threads (:mod:`recstream.batch.local`),
larger batch jobs on Dask (:mod:`recstream.batch.runner`).
"""

from __future__ import annotations

from recstream.ops.audit import audit_one
from recstream.ops.decrypt import Existing, decrypt_one, output_name
from recstream.ops.outcome import BUSY, DONE, FAILED, SKIPPED, Outcome
from recstream.ops.rewrap import AddCertificates, NewRecipients, resolve_cert_ids, rewrap_one
from recstream.ops.tree import Tree, is_incomplete
from recstream.ops.verify import verify_one

__all__ = [
    "BUSY",
    "DONE",
    "FAILED",
    "SKIPPED",
    "AddCertificates",
    "Existing",
    "NewRecipients",
    "Outcome",
    "Tree",
    "audit_one",
    "decrypt_one",
    "is_incomplete",
    "output_name",
    "resolve_cert_ids",
    "rewrap_one",
    "verify_one",
]
