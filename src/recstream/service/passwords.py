"""User passwords: Argon2id (memory-hard) in PHC string form, with caps on stored parameters.

The parameters live in each stored hash (``$argon2id$v=19$m=..,t=..,p=..$salt$hash``)
so they can be raised later without invalidating existing users.  Before
verifying, the parameters are checked against caps so that a damaged or hostile
settings database cannot make each login burn gigabytes or minutes.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

__all__ = [
    "DEFAULT_PARAMS",
    "HashParams",
    "dummy_verify",
    "hash_password",
    "verify_password",
]

SALT_BYTES: Final = 16
HASH_BYTES: Final = 32
# Caps for stored hashes: 256 MiB and 10 passes are far above what we write,
# far below what would let a bad row stall the server.
MAX_MEMORY_KIB: Final = 256 * 1024
MAX_ITERATIONS: Final = 10
MAX_LANES: Final = 8
MAX_PASSWORD_BYTES: Final = 1024

_PHC = re.compile(
    r"\$argon2id\$v=19\$m=(\d{1,9}),t=(\d{1,3}),p=(\d{1,3})\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
)


@dataclass(frozen=True, slots=True)
class HashParams:
    """Argon2id cost: memory in KiB, passes, lanes."""

    memory_kib: int
    iterations: int
    lanes: int


# 64 MiB, 2 passes, 1 lane: about 0.1 s here (RFC 9106 §4's second recommended
# option is 64 MiB with 3 passes; OWASP's floor is 19 MiB with 2).  Logins are
# rare: the browser and API clients reuse a verified credential (see auth.py).
DEFAULT_PARAMS: Final = HashParams(memory_kib=64 * 1024, iterations=2, lanes=1)


def hash_password(password: bytes, params: HashParams = DEFAULT_PARAMS) -> str:
    """Hash ``password`` with a fresh salt; return the PHC string to store."""
    if not password:
        msg = "password must not be empty"
        raise ValueError(msg)
    if len(password) > MAX_PASSWORD_BYTES:
        msg = f"password longer than {MAX_PASSWORD_BYTES} bytes"
        raise ValueError(msg)
    kdf = Argon2id(
        salt=os.urandom(SALT_BYTES),
        length=HASH_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive_phc_encoded(password)


def stored_params(encoded: str) -> HashParams | None:
    """The parameters of a stored hash, or None if it is not an Argon2id PHC string."""
    m = _PHC.fullmatch(encoded)
    if m is None:
        return None
    return HashParams(int(m[1]), int(m[2]), int(m[3]))


def verify_password(password: bytes, encoded: str | None) -> bool:
    """True iff ``password`` matches the stored hash (compared in constant time by the KDF).

    Every call costs one Argon2id verification, whatever the outcome: ``encoded``
    None (an unknown user), a password over :data:`MAX_PASSWORD_BYTES`, or a
    stored hash that is malformed or over the caps are verified against a dummy
    hash of :data:`DEFAULT_PARAMS` and never match.  So the time of a refusal
    says nothing about whether the user exists or how long the password was.
    """
    params = stored_params(encoded) if encoded is not None else None
    usable = (
        encoded is not None
        and params is not None
        and 0 < len(password) <= MAX_PASSWORD_BYTES
        and 8 * params.lanes <= params.memory_kib <= MAX_MEMORY_KIB
        and 1 <= params.iterations <= MAX_ITERATIONS
        and 1 <= params.lanes <= MAX_LANES
    )
    if not usable or encoded is None:
        dummy_verify(password)
        return False
    try:
        Argon2id.verify_phc_encoded(password, encoded)
    except (InvalidKey, ValueError):
        return False
    return True


_DUMMY_HASH: str | None = None


def dummy_verify(password: bytes) -> None:
    """Spend one verification at :data:`DEFAULT_PARAMS` that never matches."""
    global _DUMMY_HASH  # noqa: PLW0603 - computed once, lazily
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(b"recstream-dummy")
    with contextlib.suppress(InvalidKey, ValueError):
        Argon2id.verify_phc_encoded(password[:MAX_PASSWORD_BYTES] or b"x", _DUMMY_HASH)
