"""Failed-authentication limiting (pure: time is an argument, as in aioquic).

A sliding window per key: once a key has ``max_failures`` failures within
``window`` seconds, attempts under it are refused (HTTP 429 with Retry-After)
*without* checking the credentials, until its oldest failure leaves the
window.  The server keys failures by client address and by user name; how it
combines them (so that nobody can lock another client out) is
:mod:`recstream.service.auth`'s policy.  Memory is bounded: at most
``max_keys`` keys (least recently failed dropped first), each with at most
``max_failures`` timestamps.

Attempts in flight count too: the password check is slow (Argon2id) and
awaited, so a burst of concurrent guesses would all pass a check that only
counted finished failures.  :meth:`FailureLimiter.reserve` checks and reserves
in one synchronous step; :meth:`FailureLimiter.release` ends the attempt.
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["FailureLimiter"]


class FailureLimiter:
    def __init__(self, max_failures: int, window: float, *, max_keys: int = 100_000) -> None:
        if max_failures < 1 or window <= 0 or max_keys < 1:
            msg = "max_failures, window and max_keys must be positive"
            raise ValueError(msg)
        self.max_failures = max_failures
        self.window = window
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._in_flight: dict[str, int] = {}

    def retry_after(self, key: str, now: float) -> float:
        """Seconds before ``key`` may try again; 0.0 if it may try now."""
        times = self._failures.get(key)
        if times is not None:
            self._expire(key, times, now)
            times = self._failures.get(key)
        failed = len(times) if times is not None else 0
        if failed + self._in_flight.get(key, 0) < self.max_failures:
            return 0.0
        if times is not None and len(times) >= self.max_failures:
            return max(0.0, times[0] + self.window - now)
        return 1.0  # attempts still being checked fill the allowance: try again shortly

    def recent_failures(self, key: str, now: float) -> int:
        """Failures of ``key`` within the window (attempts in flight not counted)."""
        times = self._failures.get(key)
        if times is None:
            return 0
        self._expire(key, times, now)
        return len(times)

    def reserve(self, keys: tuple[str, ...], now: float) -> float:
        """Check every key and, if all may try, count one attempt in flight on each.

        Returns:
            0.0 when reserved (call :meth:`release` when the attempt ends), else the
            seconds to wait (nothing reserved).
        """
        wait = max(self.retry_after(k, now) for k in keys)
        if wait > 0:
            return wait
        for k in keys:
            self._in_flight[k] = self._in_flight.get(k, 0) + 1
        return 0.0

    def release(self, keys: tuple[str, ...]) -> None:
        for k in keys:
            left = self._in_flight.get(k, 0) - 1
            if left > 0:
                self._in_flight[k] = left
            else:
                self._in_flight.pop(k, None)

    def record_failure(self, key: str, now: float) -> None:
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[key] = times  # most recently failed last
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def _expire(self, key: str, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]

    def statistics(self) -> dict[str, int]:
        return {"tracked_keys": len(self._failures)}
