"""Issue 13, findings 3-5 and 8: token revocation, equal work, lockout policy, audit of refusals."""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from recstream.service import passwords
from recstream.service.passwords import DEFAULT_PARAMS, hash_password, stored_params
from recstream.service.store import Role, SettingsStore, User
from tests.service.conftest import TEST_HASH, ServerThread, basic, request, wait_for_audit

LIST = "/rcs/recordings"


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def get(st: ServerThread, authorization: str, path: str = LIST, **headers: str) -> Any:
    return request(
        st.url, "GET", path, headers={"Authorization": authorization, **headers}, user=None
    )


def token_for(st: ServerThread, user: str) -> str:
    r = request(st.url, "POST", "/rcs/tokens", user=user)
    assert r.status == 201
    return str(r.json()["access_token"])


def put_user(st: ServerThread, user: User, password: bytes) -> None:
    store = SettingsStore.open(st.config.settings_db)
    try:
        store.put_user(user, hash_password(password, TEST_HASH), replace=True)
    finally:
        store.close()


# --- finding 3: tokens are bound to the user's credential version ----------------------


def test_password_change_revokes_tokens(start_rcs: Any) -> None:
    st = start_rcs()
    bearer = "Bearer " + token_for(st, "alice")
    assert get(st, bearer).status == 200
    put_user(st, User("alice", Role.PLAYER, frozenset({"acme"})), b"a-new-password")
    r = get(st, bearer)
    assert r.status == 401 and r.json()["error"] == "invalid_token"
    assert get(st, "Basic " + b64(b"alice:a-new-password")).status == 200


def test_a_new_user_of_the_same_name_does_not_inherit_tokens(start_rcs: Any) -> None:
    st = start_rcs()
    bearer = "Bearer " + token_for(st, "alice")  # alice: tenant acme
    store = SettingsStore.open(st.config.settings_db)
    store.remove_user("alice")
    store.close()
    put_user(st, User("alice", Role.PLAYER, frozenset({"globex"})), b"another-alice-pw")
    # Before the fix the old token read the other tenant's recording.
    r = get(st, bearer, "/rcs/recordings/globex/call-9.rsv")
    assert r.status == 401 and r.json()["error"] == "invalid_token"


def test_schema_1_database_gets_credential_versions(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, tenants TEXT NOT NULL,"
        " password_hash TEXT NOT NULL, updated_ms INTEGER NOT NULL);"
        "INSERT INTO users VALUES ('ann', 'player', '[\"acme\"]', 'x', 0);"
        "INSERT INTO users VALUES ('ben', 'player', '[\"acme\"]', 'x', 0);"
    )
    conn.commit()
    conn.close()
    store = SettingsStore.open(db)
    try:
        found = [store.user_with_hash(n) for n in ("ann", "ben")]
        creds = [f[0].credential for f in found if f is not None]
        assert len(creds) == 2 and all(len(c) == 32 for c in creds) and creds[0] != creds[1]
    finally:
        store.close()


# --- finding 4: the same work for real and unknown users, whatever the password length -----


class CountingArgon2id:
    """Wraps the real Argon2id and records the cost of each verification."""

    real = passwords.Argon2id
    calls: ClassVar[list[Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self._inner = self.real(**kwargs)

    def derive_phc_encoded(self, password: bytes) -> str:
        return str(self._inner.derive_phc_encoded(password))

    @classmethod
    def verify_phc_encoded(cls, password: bytes, encoded: str) -> None:
        cls.calls.append(stored_params(encoded))
        cls.real.verify_phc_encoded(password, encoded)


@pytest.mark.parametrize("length", [12, 1025, 3000])
def test_real_and_unknown_users_cost_one_verification_each(
    start_rcs: Any, monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    st = start_rcs()
    store = SettingsStore.open(st.config.settings_db)
    store.put_user(User("tim", Role.PLAYER, frozenset({"acme"})), hash_password(b"tims-password"))
    store.close()
    passwords.dummy_verify(b"warm")  # the dummy hash is made once, lazily
    monkeypatch.setattr(passwords, "Argon2id", CountingArgon2id)
    work = {}
    for name in ("tim", "nobody"):
        CountingArgon2id.calls = []
        r = get(st, "Basic " + b64(name.encode() + b":" + b"p" * length))
        assert r.status == 401
        work[name] = list(CountingArgon2id.calls)
    # Before the fix a real user with a password over 1,024 bytes cost no hash at all.
    assert work["tim"] == work["nobody"] == [DEFAULT_PARAMS]


# --- finding 5: the lockout policy --------------------------------------------------------


def via(st: ServerThread, authorization: str, address: str) -> Any:
    return get(st, authorization, **{"X-Forwarded-For": address})


def test_guesses_from_elsewhere_do_not_lock_the_right_password_out(start_rcs: Any) -> None:
    st = start_rcs(extra="max_failures = 5", server_extra='trusted_proxies = ["127.0.0.1/32"]')
    for i in range(5):
        assert via(st, "Basic " + b64(b"alice:guess"), f"203.0.113.{i}").status == 401
    assert via(st, basic("alice"), "198.51.100.7").status == 200  # was 429
    assert via(st, basic("alice"), "203.0.113.1").status == 429  # a guesser stays locked


def test_a_valid_token_is_never_refused_for_its_address(start_rcs: Any) -> None:
    # No trusted_proxies: every client here shares 127.0.0.1, as behind a proxy or NAT.
    st = start_rcs(extra="max_failures = 3")
    bearer = "Bearer " + token_for(st, "alice")
    for _ in range(3):
        assert get(st, "Basic " + b64(b"nobody:guess")).status == 401
    assert get(st, basic("alice")).status == 429  # the address pays for its guesses
    assert get(st, bearer).status == 200  # was 429
    assert get(st, "Bearer rst_guessed").status == 429  # a wrong token from it does not


# --- finding 8: every authentication failure, refusal and listing is audited -------------


def events(st: ServerThread, name: str) -> list[dict[str, Any]]:
    return [a for a in st.audit() if a["event"] == name]


def test_failures_refusals_and_listings_are_audited(start_rcs: Any) -> None:
    st = start_rcs(extra="max_failures = 2")
    get(st, "Basic " + b64(b"alice:wrong-password"))
    rec = wait_for_audit(st, lambda a: a["event"] == "auth_failed")
    assert (rec["user"], rec["client"], rec["reason"], rec["status"]) == (
        "alice",
        "127.0.0.1",
        "bad_credentials",
        401,
    )
    assert "wrong-password" not in st.config.audit_log.read_text()
    request(st.url, "GET", LIST, user=None)
    assert wait_for_audit(st, lambda a: a.get("reason") == "missing")["path"] == LIST
    get(st, "Bearer rst_nope")
    assert wait_for_audit(st, lambda a: a.get("reason") == "bad_token")["status"] == 401
    get(st, basic("alice"))
    rec = wait_for_audit(st, lambda a: a["event"] == "auth_refused")
    assert rec["status"] == 429 and rec["reason"] == "rate_limited_client"
    other = start_rcs()
    assert request(other.url, "GET", LIST, user="bob").status == 200
    rec = wait_for_audit(other, lambda a: a["event"] == "list")
    assert rec["user"] == "bob" and rec["client"] == "127.0.0.1" and rec["count"] == 1
    ops = "/api/v2/ops/contact-centers/0a1b2c/settings/screen-recording"
    assert request(other.url, "GET", ops, user="olga").status == 200
    assert wait_for_audit(other, lambda a: a["event"] == "settings_read")["user"] == "olga"
    assert request(other.url, "GET", ops, user="bob").status == 403
    rec = wait_for_audit(other, lambda a: a["event"] == "refused")
    assert rec["user"] == "bob" and rec["status"] == 403 and rec["path"] == ops


def test_audit_lines_are_printable_ascii(start_rcs: Any) -> None:
    st = start_rcs()
    name = 'eve\u2028{"event"="forged"}\u2029\x7f\u00e9'.encode()
    get(st, "Basic " + b64(name + b":pw"))
    request(st.url, "GET", "/rcs/recordings/acme/%E2%80%A8.rsv")
    rec = wait_for_audit(st, lambda a: a["event"] == "auth_failed")
    assert rec["user"] == name.decode()
    raw = st.config.audit_log.read_bytes()
    assert all(0x20 <= b < 0x7F for line in raw.splitlines() for b in line), raw
    assert b"\\u2028" in raw and b"\\u007f" in raw
    assert "forged" not in [a["event"] for a in st.audit()]


def test_a_flood_of_failures_is_audited_at_a_bounded_rate(start_rcs: Any) -> None:
    st = start_rcs()
    started = time.monotonic()
    for _ in range(80):  # wrong tokens: as audited as wrong passwords, and no hash to wait for
        get(st, "Bearer rst_flood-guess")
    elapsed = time.monotonic() - started
    failed = events(st, "auth_failed")
    # A burst of 20 per client, then one every 2 s (audit.py): never all 80.
    assert 20 <= len(failed) <= 20 + elapsed * 0.5 + 1
    time.sleep(2.1)  # let the bucket admit one more: it reports what was dropped
    get(st, "Bearer rst_flood-guess")
    wait_for_audit(st, lambda a: a["event"] == "auth_failed" and a["ts"] > failed[-1]["ts"])
    dropped = sum(a["dropped"] + a["dropped_elsewhere"] for a in events(st, "audit_suppressed"))
    assert len(events(st, "auth_failed")) + dropped == 81  # every failure written or counted


def test_token_bucket() -> None:
    from recstream.service.audit import TokenBucket

    b = TokenBucket(capacity=2, rate=1.0, tokens=2, stamp=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert not b.take(0.5) and b.take(1.6) and b.dropped == 2
