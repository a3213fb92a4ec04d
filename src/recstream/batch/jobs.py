"""The batch jobs' tasks: :mod:`recstream.ops` with arguments a Dask worker can receive.

Each task takes URLs, a relative path and a :class:`~recstream.keysource.KeySource`
(paths only: each worker opens the keys itself, so nothing secret travels in a
task graph) and the runner's :class:`~recstream.durable.CommitGroup` (keyword
``group``), and returns the operation's :class:`~recstream.ops.Outcome`.  The
work and every check are the per-recording operations'; nothing is repeated here.
"""

from __future__ import annotations

import datetime as dt
import functools

from recstream.durable import CommitGroup
from recstream.errors import RecstreamError
from recstream.keysource import KeySource
from recstream.ops import FAILED, AddCertificates, Outcome, Tree, audit_one, decrypt_one, rewrap_one
from recstream.ops.outcome import failure_reason

__all__ = ["audit_task", "decrypt_task", "rewrap_task"]


@functools.lru_cache(maxsize=16)
def _tree(url: str) -> Tree:
    return Tree(url)


def decrypt_task(
    src: str, rel: str, dst: str, keys: KeySource, *, group: CommitGroup | None = None
) -> Outcome:
    """Decrypt ``src/rel`` into ``dst`` (named by :func:`recstream.ops.output_name`);
    an output already there was committed by an earlier run and is kept.  ``group``:
    the caller syncs it before recording the outcome (group commit)."""
    try:
        keyring = keys.keyring()
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc))
    return decrypt_one(_tree(src), rel, _tree(dst), keyring, existing="skip", group=group)


def rewrap_task(  # noqa: PLR0917 - positional: Dask's client.map passes them so
    src: str,
    rel: str,
    dst: str | None,
    keys: KeySource,
    add: AddCertificates,
    drop: frozenset[str],
    *,
    group: CommitGroup | None = None,
) -> Outcome:
    """Re-wrap ``src/rel`` in place, or into ``dst``.  (Each re-wrap fsyncs its own
    directory: ``group`` is taken for the runners' sake and not used.)"""
    try:
        keyring = keys.keyring()
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc))
    target = _tree(dst) if dst else None
    return rewrap_one(_tree(src), rel, target, keyring, add, drop=drop)


def audit_task(  # noqa: PLR0917 - positional: Dask's client.map passes them so
    src: str,
    rel: str,
    keys: KeySource,
    unwrap: bool,
    ca_pem: bytes | None,
    now_ts: float,
    *,
    group: CommitGroup | None = None,
) -> Outcome:
    """Audit ``src/rel`` against the keys (``now_ts``: the job's clock, for expiry), and
    its signature against ``ca_pem`` when given.  (Writes nothing: ``group`` unused.)"""
    try:
        opened = keys.open()
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc))
    now = dt.datetime.fromtimestamp(now_ts, tz=dt.UTC)
    return audit_one(_tree(src), rel, opened, unwrap=unwrap, now=now, ca_pem=ca_pem)
