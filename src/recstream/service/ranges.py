"""HTTP Range requests (RFC 9110 §14), single byte ranges only (pure).

Media elements ask for one range at a time (``bytes=N-``).  A multi-range
request is answered with the whole representation (200), which RFC 9110
§14.2 allows: a server MAY ignore the Range header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recstream.service.errors import RangeNotSatisfiableError

__all__ = ["ByteRange", "parse_range"]

_SPEC = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``[start, end)`` of a representation of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve, or None for the whole representation (200).

    Raises:
        RangeNotSatisfiableError: a valid single range that lies wholly past the
            end (or any range of an empty representation): answer 416.
    """
    if header is None:
        return None
    m = _SPEC.fullmatch(header.strip().replace(" ", ""))
    if m is None or (not m[1] and not m[2]):
        return None  # syntactically invalid or multi-range: ignore (RFC 9110 §14.2)
    if not m[1]:  # suffix range: the last N bytes
        n = int(m[2])
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(size)
        return ByteRange(max(0, size - n), size, size)
    start = int(m[1])
    end = size if not m[2] else int(m[2]) + 1
    if m[2] and end <= start:
        return None  # last-pos < first-pos is invalid: ignore
    if start >= size:
        raise RangeNotSatisfiableError(size)
    return ByteRange(start, min(end, size), size)
