"""The archive layout and the listing of envelopes under a directory or fsspec URL.

Archives follow the vendor's layout::

    {contact-centre-id}/{tenant}/{yyyy-mm-dd}/{recording-id}/{kind}.rsv
    {contact-centre-id}/{tenant}/{yyyy-mm-dd}/{recording-id}/recording.json

and the batch jobs also read plain directories of envelopes.  An envelope is
any file whose first bytes are the format's magic (docs/FORMAT.md §2).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec

from recstream.format import MAGIC, MediaKind, Metadata

__all__ = ["ArchiveLayout", "list_envelopes", "url_to_fs"]

_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")
SKIP_DIRS = {".recstream-batch"}


def url_to_fs(url: str) -> tuple[Any, str]:
    """(filesystem, root path) for a directory or fsspec URL."""
    fs, root = fsspec.core.url_to_fs(url)
    return fs, str(root).rstrip("/") or "/"


def _component(text: str) -> str:
    """A path component from untrusted text: no separators, no dot-dot."""
    clean = _SAFE.sub("_", text)
    return clean if clean not in ("", ".", "..") else "_"


@dataclass(frozen=True, slots=True)
class ArchiveLayout:
    """Where the recording hook files a recording in an archive."""

    root: str
    contact_center: str

    def directory(self, metadata: Metadata) -> PurePosixPath:
        day = dt.datetime.fromtimestamp(metadata.created_ms / 1000, tz=dt.UTC).date()
        return (
            PurePosixPath(self.root)
            / _component(self.contact_center)
            / _component(metadata.tenant)
            / day.isoformat()
            / _component(metadata.recording_id)
        )

    def envelope_path(self, metadata: Metadata) -> PurePosixPath:
        return self.directory(metadata) / f"{metadata.media_kind.name.lower()}.rsv"

    def recording_json(self, metadata: Metadata, cert_ids: tuple[str, ...]) -> bytes:
        """The ``recording.json`` beside the envelopes (no secrets, nothing the header lacks)."""
        doc = {
            "recording_id": metadata.recording_id,
            "tenant": metadata.tenant,
            "contact_center": self.contact_center,
            "created": dt.datetime.fromtimestamp(metadata.created_ms / 1000, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "media": {
                metadata.media_kind.name.lower(): {
                    "file": f"{metadata.media_kind.name.lower()}.rsv",
                    "media_type": metadata.media_type,
                    "cert_ids": list(cert_ids),
                }
            },
        }
        return json.dumps(doc, indent=2).encode()


def merge_recording_json(existing: bytes | None, new: bytes) -> bytes:
    """Merge the media entries of two recording.json documents (voice + screen)."""
    if not existing:
        return new
    old, add = json.loads(existing), json.loads(new)
    old.setdefault("media", {}).update(add.get("media", {}))
    return json.dumps(old, indent=2).encode()


def list_envelopes(url: str) -> Iterator[str]:
    """Paths (relative to ``url``) of every envelope below it, sorted."""
    fs, root = url_to_fs(url)
    if not fs.exists(root):
        msg = f"no such directory: {url}"
        raise FileNotFoundError(2, msg, url)
    found = []
    for path in fs.find(root):
        rel = str(PurePosixPath(path).relative_to(PurePosixPath(root)))
        if set(PurePosixPath(rel).parts) & SKIP_DIRS or rel.endswith((".partial", ".json")):
            continue
        with fs.open(path, "rb") as fh:
            if fh.read(len(MAGIC)) == MAGIC:
                found.append(rel)
    yield from sorted(found)


def media_kind_name(kind: MediaKind) -> str:
    return kind.name.lower()
