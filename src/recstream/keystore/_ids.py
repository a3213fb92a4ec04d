"""Certificate IDs as people type them: a full ID or a prefix, any case, colons allowed."""

from __future__ import annotations

from typing import Final

from recstream.errors import KeystoreEntryError

__all__ = ["MIN_ID_PREFIX", "id_prefix"]

MIN_ID_PREFIX: Final = 8  # hex digits: a shorter prefix is too easy to mistype onto another


def id_prefix(id_or_prefix: str) -> str:
    """``id_or_prefix`` as a lower-case hex prefix to match certificate IDs against.

    Raises:
        KeystoreEntryError: not hex, or under :data:`MIN_ID_PREFIX` digits.
    """
    wanted = id_or_prefix.strip().lower().replace(":", "")
    if len(wanted) < MIN_ID_PREFIX or any(c not in "0123456789abcdef" for c in wanted):
        msg = (
            f"certificate ID {id_or_prefix!r} is not a hex certificate ID (or a prefix of "
            f"at least {MIN_ID_PREFIX} hex digits)"
        )
        raise KeystoreEntryError(msg)
    return wanted
