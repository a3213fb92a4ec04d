"""The vendor's archive layout, where the recording hook files recordings.

::

    {contact-centre-id}/{tenant}/{yyyy-mm-dd}/{recording-id}/{kind}.rsv
    {contact-centre-id}/{tenant}/{yyyy-mm-dd}/{recording-id}/recording.json

``recording.json`` holds what the headers say (no secrets), one entry per
media kind.  Path components come from untrusted text and are sanitised.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from recstream.format import Metadata

__all__ = ["ArchiveLayout", "merge_recording_json"]

_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")


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
