"""Raw G.711 recordings played as WAV: the header a browser needs, made from the header's facts.

The recording hook and the media-streams recorder store calls as raw G.711
(``audio/basic``, ``audio/x-mulaw``, ``audio/x-alaw``...): bytes with no
container, which no browser plays.  A WAV file of the same samples is these 58
bytes followed by the recording's plaintext unchanged (WAVE format tag 7 mu-law
or 6 A-law, 8 kHz mono, one byte a sample: RFC 2361 and the Microsoft
multimedia registry), so the player's playback can be served as ``audio/wav``
by prefixing them, Range requests included, without converting or holding any
audio.  Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["WAV_TYPE", "wav_prefix"]

WAV_TYPE: Final = "audio/wav"
_MULAW: Final = 7
_ALAW: Final = 6
FORMAT_TAGS: Final[dict[str, int]] = {
    "audio/basic": _MULAW,
    "audio/pcmu": _MULAW,
    "audio/x-mulaw": _MULAW,
    "audio/pcma": _ALAW,
    "audio/x-alaw": _ALAW,
}
RATE: Final = 8000
_MAX_DATA: Final = 0xFFFFFFFF - 58  # RIFF sizes are 32-bit; longer: as a stream (size unknown)


def wav_prefix(media_type: str, data_bytes: int) -> bytes | None:
    """The WAV header for ``data_bytes`` of G.711 of ``media_type``, or None if it is not G.711."""
    tag = FORMAT_TAGS.get(media_type.lower())
    if tag is None:
        return None
    n = min(data_bytes, _MAX_DATA)
    # fmt: tag, channels, rate, bytes/s, block align, bits, cbSize (non-PCM: 18 bytes)
    fmt = struct.pack("<HHIIHHH", tag, 1, RATE, RATE, 1, 8, 0)
    fact = b"fact" + struct.pack("<II", 4, n)  # non-PCM WAVE files carry the sample count
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + fact
    body += b"data" + struct.pack("<I", n)
    return b"RIFF" + struct.pack("<I", len(body) + n) + body
