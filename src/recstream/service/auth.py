"""Who is asking: HTTP Basic (over TLS) and bearer tokens, with failed attempts limited.

* **Basic** checks the password against the user's Argon2id hash (memory-hard,
  ~0.1 s).  A browser sends Basic credentials with every request (each Range
  request of a playing recording), so a *verified* credential is remembered
  for :data:`BASIC_CACHE_SECONDS` under ``HMAC(process secret, name, password,
  stored hash)``: a changed password or a removed user no longer matches, and
  the cache holds no password.
* **Bearer tokens** are issued by ``POST /rcs/tokens`` to a Basic-authenticated
  user: 32 random bytes, kept in memory only as their SHA-256 (a memory dump or
  a timing difference in the lookup reveals nothing usable), valid for
  ``[auth] token_ttl`` seconds or until revoked (``DELETE /rcs/tokens``) or the
  server restarts.  Each use reloads the user, so a changed role or tenant list
  applies at once.  Tokens are per server: a proxy forwards them, and only the
  RCS that issued one accepts it.
* **Limits**: see :mod:`recstream.service.ratelimit`; failures count per client
  address and per user name, and a refused attempt costs no hash.

Comparisons of secrets are constant-time (``hmac.compare_digest``, and the
Argon2id verification itself); an unknown user costs a dummy verification so
that timing does not reveal which names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn

from recstream.service.errors import AuthenticationError, InvalidTokenError, RateLimitedError
from recstream.service import passwords
from recstream.service.metrics import Metrics
from recstream.service.ratelimit import FailureLimiter
from recstream.service.store import SettingsStore, User

__all__ = ["Authenticator", "Principal", "TokenStore", "challenge_headers"]

BASIC_CACHE_SECONDS: Final = 300.0
BASIC_CACHE_ENTRIES: Final = 10_000
MAX_TOKENS: Final = 100_000
MAX_TOKENS_PER_USER: Final = 64
TOKEN_PREFIX: Final = "rst_"  # noqa: S105 - a prefix that marks recstream tokens, not a secret
MAX_AUTHORIZATION_CHARS: Final = 4096
# Argon2id verifications at once: each takes 64 MiB and a core for ~0.1 s.
HASH_CONCURRENCY: Final = 2
REALM: Final = "recstream"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the user and how they proved it (``basic``/``bearer``)."""

    user: User
    method: str

    @property
    def name(self) -> str:
        return self.user.name


def challenge_headers(invalid_token: bool = False) -> dict[str, str]:
    """``WWW-Authenticate`` for a 401 (RFC 7617 Basic and RFC 6750 Bearer)."""
    bearer = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid_token else "")
    return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8", {bearer}'}


@dataclass(slots=True)
class _Grant:
    digest: bytes
    user: str
    expires: float


class TokenStore:
    """Bearer tokens in memory, by SHA-256 digest.  Time is an argument."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._grants: OrderedDict[bytes, _Grant] = OrderedDict()

    def issue(self, user: str, now: float) -> tuple[str, float]:
        """A new token for ``user``; returns (token, seconds it is valid)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).digest()
        self._expire(now)
        mine = [g for g in self._grants.values() if g.user == user]
        for old in mine[: max(0, len(mine) - MAX_TOKENS_PER_USER + 1)]:
            del self._grants[old.digest]
        self._grants[digest] = _Grant(digest, user, now + self.ttl)
        while len(self._grants) > MAX_TOKENS:
            self._grants.popitem(last=False)
        return token, self.ttl

    def user_for(self, token: str, now: float) -> str | None:
        """The user a live token was issued to, or None."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        grant = self._grants.get(digest)
        if grant is None or not hmac.compare_digest(grant.digest, digest):
            return None
        if grant.expires <= now:
            del self._grants[digest]
            return None
        return grant.user

    def revoke(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        return self._grants.pop(digest, None) is not None

    def _expire(self, now: float) -> None:
        dead = [d for d, g in self._grants.items() if g.expires <= now]
        for d in dead:
            del self._grants[d]

    def __len__(self) -> int:
        return len(self._grants)


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or refuses.

    Args:
        store: the settings database (users).
        limiter: failed-attempt limiter.
        tokens: the bearer tokens issued by this server.
        metrics: counts failures by reason.
        clock: monotonic seconds (a seam for tests).
    """

    def __init__(
        self,
        store: SettingsStore,
        limiter: FailureLimiter,
        tokens: TokenStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._limiter = limiter
        self.tokens = tokens
        self._metrics = metrics
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._hashing = asyncio.Semaphore(HASH_CONCURRENCY)

    async def authenticate(self, authorization: str | None, client: str) -> Principal:
        """Authenticate a request.

        Raises:
            AuthenticationError: no, malformed or wrong credentials (HTTP 401).
            RateLimitedError: too many recent failures for this client or user (429).
        """
        if not authorization:
            self._metrics.auth_failures.inc(reason="missing")
            msg = "authentication required: HTTP Basic (over TLS) or a bearer token"
            raise AuthenticationError(msg)
        self._check_limit(f"client:{client}")
        scheme, _, value = authorization.partition(" ")
        if len(authorization) > MAX_AUTHORIZATION_CHARS or not value.strip():
            self._fail("malformed", client)
        value = value.strip()
        if scheme.lower() == "basic":
            return await self._basic(value, client)
        if scheme.lower() != "bearer":
            self._fail("malformed", client)
        return await self._bearer(value, client)

    def issue_token(self, user: str) -> tuple[str, float]:
        """A new bearer token for ``user``: (token, seconds valid)."""
        return self.tokens.issue(user, self._clock())

    async def _basic(self, value: str, client: str) -> Principal:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._fail("malformed", client)
        name, sep, password = decoded.partition(":")
        if not sep or not name:
            self._fail("malformed", client)
        found = await asyncio.to_thread(self._store.user_with_hash, name)
        secret = password.encode("utf-8")
        mark = b""
        if found is not None:
            mark = hmac.digest(
                self._secret, b"\0".join((name.encode(), secret, found[1].encode())), "sha256"
            )
            if self._remembered(mark):  # verified moments ago: no hash, no reservation
                return Principal(found[0], "basic")
        # Check and reserve in one synchronous step: the hash below is awaited, and a
        # burst of concurrent guesses must not all pass a check of finished failures.
        keys = (f"client:{client}", f"user:{name}")
        wait = self._limiter.reserve(keys, self._clock())
        if wait > 0:
            self._metrics.auth_failures.inc(reason="rate_limited")
            raise RateLimitedError(wait)
        try:
            async with self._hashing:
                if found is None:
                    await asyncio.to_thread(passwords.dummy_verify, secret)
                    ok = False
                else:
                    ok = await asyncio.to_thread(passwords.verify_password, secret, found[1])
        finally:
            self._limiter.release(keys)
        if not ok or found is None:
            self._fail("bad_credentials", client, name)
        self._remember(mark)
        return Principal(found[0], "basic")

    async def _bearer(self, token: str, client: str) -> Principal:
        name = self.tokens.user_for(token, self._clock())
        if name is None:
            self._fail("bad_token", client)
        found = await asyncio.to_thread(self._store.user_with_hash, name)
        if found is None:  # the user was removed after the token was issued
            self.tokens.revoke(token)
            self._fail("bad_token", client)
        return Principal(found[0], "bearer")

    def _check_limit(self, key: str) -> None:
        wait = self._limiter.retry_after(key, self._clock())
        if wait > 0:
            self._metrics.auth_failures.inc(reason="rate_limited")
            raise RateLimitedError(wait)

    def _fail(self, reason: str, client: str, name: str | None = None) -> NoReturn:
        now = self._clock()
        self._limiter.record_failure(f"client:{client}", now)
        if name is not None:
            self._limiter.record_failure(f"user:{name}", now)
        self._metrics.auth_failures.inc(reason=reason)
        text = {
            "malformed": "malformed Authorization header",
            "bad_credentials": "wrong user name or password",
            "bad_token": "the bearer token is unknown, expired or revoked",
        }[reason]
        raise (InvalidTokenError if reason == "bad_token" else AuthenticationError)(text)

    def _remembered(self, mark: bytes) -> bool:
        expires = self._verified.get(mark)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._verified[mark]
            return False
        return True

    def _remember(self, mark: bytes) -> None:
        self._verified[mark] = self._clock() + BASIC_CACHE_SECONDS
        while len(self._verified) > BASIC_CACHE_ENTRIES:
            self._verified.popitem(last=False)
