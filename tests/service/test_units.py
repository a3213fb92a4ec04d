"""The pure parts: locations, ranges, the failure limiter, passwords, metrics, recording names."""

from __future__ import annotations

import pytest

from recstream.service import passwords
from recstream.service.archive import check_name
from recstream.service.auth import TokenStore
from recstream.service.errors import NotFoundError, RangeNotSatisfiableError, RequestError
from recstream.service.locations import (
    ancestors,
    is_loopback_host,
    resolve,
    validate_contact_center,
    validate_location,
)
from recstream.service.metrics import Metrics
from recstream.service.ranges import ByteRange, parse_range
from recstream.service.ratelimit import FailureLimiter

ENTRIES = {"/": "r", "/US": "us", "/US/HI": "hi"}


@pytest.mark.parametrize(
    ("node", "location"),
    [
        ("/US/AK", "/US"),
        ("/US/HI", "/US/HI"),
        ("/US/HI/Maui", "/US/HI"),
        ("/US", "/US"),
        ("/EU", "/"),
        ("/", "/"),
        ("/USA", "/"),
    ],  # /USA is not under /US: whole segments only
)
def test_resolution(node: str, location: str) -> None:
    found = resolve(ENTRIES, node)
    assert found is not None and found.location == location and found.value == ENTRIES[location]


def test_resolution_without_fallback() -> None:
    assert resolve({"/US": "us"}, "/EU/FR") is None
    assert ancestors("/a/b/c") == ["/a/b/c", "/a/b", "/a", "/"]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "US",
        "/US/",
        "//",
        "/US//AK",
        "/./x",
        "/a/..",
        "/a b",
        "/" + "/".join(["a"] * 17),
        "/" + "x" * 65,
        None,
        3,
    ],
)
def test_invalid_locations(bad: object) -> None:
    with pytest.raises(RequestError):
        validate_location(bad)


def test_contact_center() -> None:
    assert validate_contact_center("0A1B") == "0a1b"
    for bad in ("", "xyz", "0x12", "1" * 65):
        with pytest.raises(RequestError):
            validate_contact_center(bad)


def test_loopback_hosts() -> None:
    assert all(map(is_loopback_host, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback_host, ["0.0.0.0", "10.0.0.1", "example.com", "::"]))


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 100, None),
        ("bytes=0-", 100, ByteRange(0, 100, 100)),
        ("bytes=10-19", 100, ByteRange(10, 20, 100)),
        ("bytes=90-200", 100, ByteRange(90, 100, 100)),
        ("bytes=-10", 100, ByteRange(90, 100, 100)),
        ("bytes=-500", 100, ByteRange(0, 100, 100)),
        ("bytes=5-1", 100, None),
        ("bytes=0-1,3-4", 100, None),
        ("pages=1-2", 100, None),
        ("bytes=-", 100, None),
    ],
)
def test_ranges(header: str | None, size: int, want: ByteRange | None) -> None:
    assert parse_range(header, size) == want


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as info:
        parse_range(header, size)
    assert info.value.size == size


def test_failure_limiter_window() -> None:
    lim = FailureLimiter(3, 10.0)
    for t in (0.0, 1.0, 2.0):
        assert lim.retry_after("k", t) == 0
        lim.record_failure("k", t)
    assert lim.retry_after("k", 3.0) == pytest.approx(7.0)
    assert lim.retry_after("other", 3.0) == 0
    assert lim.retry_after("k", 10.0) == 0  # the first failure left the window
    lim.record_failure("k", 10.0)
    assert lim.retry_after("k", 10.5) == pytest.approx(0.5)


def test_failure_limiter_memory_is_bounded() -> None:
    lim = FailureLimiter(2, 60.0, max_keys=100)
    for i in range(1000):
        lim.record_failure(f"k{i}", 0.0)
    assert lim.statistics()["tracked_keys"] == 100


def test_password_hash_round_trip_and_caps() -> None:
    cheap = passwords.HashParams(1024, 1, 1)
    encoded = passwords.hash_password(b"correct horse", cheap)
    assert encoded.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert passwords.verify_password(b"correct horse", encoded)
    assert not passwords.verify_password(b"correct horsf", encoded)
    assert passwords.hash_password(b"correct horse", cheap) != encoded  # fresh salt
    # A stored hash over the caps is refused before any work (a hostile database).
    hostile = encoded.replace("m=1024", "m=99999999")
    assert not passwords.verify_password(b"correct horse", hostile)
    assert not passwords.verify_password(b"correct horse", "$2b$12$bcrypt-is-not-accepted")
    assert passwords.stored_params(passwords.hash_password(b"x" * 8)) == passwords.DEFAULT_PARAMS
    with pytest.raises(ValueError, match="empty"):
        passwords.hash_password(b"")


def test_token_store() -> None:
    ts = TokenStore(ttl=10)
    tok, ttl = ts.issue("alice", "v1", now=0)
    assert ttl == 10 and tok.startswith("rst_") and len(tok) > 40
    assert ts.user_for(tok, now=5) == ("alice", "v1")
    assert ts.user_for(tok + "x", now=5) is None
    assert ts.user_for(tok, now=10) is None  # expired, and forgotten
    assert len(ts) == 0
    toks = [ts.issue("bob", "v", now=0)[0] for _ in range(70)]
    assert ts.user_for(toks[0], 1) is None and ts.user_for(toks[-1], 1) == ("bob", "v")


def test_metrics_exposition() -> None:
    m = Metrics()
    m.decryptions.inc(endpoint="decrypt", result="ok")
    m.decrypted_bytes.inc(1234, endpoint="decrypt")
    m.decrypt_seconds.observe(0.02, endpoint="decrypt")
    text = m.render()
    assert 'recstream_decryptions_total{endpoint="decrypt",result="ok"} 1\n' in text
    assert 'recstream_decrypted_bytes_total{endpoint="decrypt"} 1234\n' in text
    assert 'recstream_decrypt_duration_seconds_bucket{endpoint="decrypt",le="0.01"} 0\n' in text
    assert 'recstream_decrypt_duration_seconds_bucket{endpoint="decrypt",le="0.025"} 1\n' in text
    assert 'recstream_decrypt_duration_seconds_count{endpoint="decrypt"} 1\n' in text
    assert "# TYPE recstream_decrypt_duration_seconds histogram" in text


@pytest.mark.parametrize("name", ["a.rsv", "acme/2024-05/call_1.rsv", "t@x/a+b=c,d~e.rsv"])
def test_recording_names_accepted(name: str) -> None:
    assert check_name(name) == name.split("/")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "a.wav",
        "../a.rsv",
        "a/../b.rsv",
        "./a.rsv",
        "/a.rsv",
        "a//b.rsv",
        ".a.rsv",
        "a\\b.rsv",
        "a\x00.rsv",
        "a b.rsv",
        "/".join(["d"] * 17) + ".rsv",
        "x" * 1100 + ".rsv",
    ],
)
def test_recording_names_refused(name: str) -> None:
    with pytest.raises(NotFoundError):
        check_name(name)


def test_limiter_counts_attempts_in_flight() -> None:
    """A burst of concurrent guesses may not all pass while their hashes are pending."""
    lim = FailureLimiter(3, 60.0)
    keys = ("client:1.2.3.4", "user:alice")
    assert [lim.reserve(keys, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.reserve(keys, 0.0) > 0  # the fourth concurrent attempt is refused
    assert lim.reserve(("client:5.6.7.8", "user:alice"), 0.0) > 0  # per user too
    lim.release(keys)
    assert lim.reserve(keys, 0.0) == 0.0  # one ended: room again
    for _ in range(3):
        lim.release(keys)
    for _ in range(3):
        lim.record_failure("user:alice", 1.0)
    assert lim.reserve(("client:9.9.9.9", "user:alice"), 2.0) == pytest.approx(59.0)
    assert lim.reserve(("client:9.9.9.9", "user:bob"), 2.0) == 0.0
