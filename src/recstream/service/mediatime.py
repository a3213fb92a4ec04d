"""How long a recording lasts, from what its header says: no decryption for a listing.

A listing must not decrypt (that needs keys, costs a read of every file and
would put plaintext through the index), so a duration is known only where the
media type fixes the byte rate.  The header gives the type and the plaintext
length (from the body's size), which is enough for the telephony codecs a
contact centre records: G.711 mu-law and A-law are 8,000 samples of one byte a
second, mono (RFC 2046 §4.3 ``audio/basic``; RFC 3551 §4.5.14 PCMU and PCMA;
``audio/x-mulaw`` and ``audio/x-alaw`` as Twilio-style media streams name them).
That covers the recording hook's default voice type and the media-streams
recorder.  Containers (WAV, WebM, MP4) carry their rate or timeline inside the
encrypted body, so their duration is ``None`` here and the player page reads it
from the media element once the recording is opened.
"""

from __future__ import annotations

from typing import Final

from recstream.service.wavwrap import FORMAT_TAGS, RATE

__all__ = ["BYTES_PER_SECOND", "duration_ms"]

# Plaintext bytes per second of media, by lower-case MIME type: G.711, one byte a sample.
BYTES_PER_SECOND: Final[dict[str, int]] = dict.fromkeys(FORMAT_TAGS, RATE)


def duration_ms(media_type: str, plaintext_bytes: int | None) -> int | None:
    """Milliseconds of media in ``plaintext_bytes`` of ``media_type``, or None if the
    type does not fix the rate or the recording is incomplete (``None`` bytes)."""
    rate = BYTES_PER_SECOND.get(media_type.lower())
    if rate is None or plaintext_bytes is None:
        return None
    return plaintext_bytes * 1000 // rate
