"""Servers on loopback for the service tests: RCS instances and proxies in background threads.

Each server runs :func:`recstream.service.start_server` (the code the CLI runs) on
its own uvloop loop in a thread, on 127.0.0.1 with an ephemeral port.  Keys and
certificates are made at test time; recordings are the repository's samples
encrypted in fixtures.  Tests talk to the servers with ``http.client`` (exact
control over headers, ranges and aborted bodies) or raw sockets.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.envelope import EnvelopeEncryptor, IdentitySet, KeyRing, new_metadata
from recstream.format import MediaKind, RecipientStanza
from recstream.service import load_config, start_server
from recstream.service.app import RunningServer
from recstream.service.passwords import HashParams, hash_password
from recstream.service.store import Role, SettingsStore, User
from tests.conftest import Party
from tests.tls_helpers import TlsFiles, make_tls_files

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "src" / "recstream" / "samples"
# Cheap Argon2id for test users (the parameters are stored in each hash).
TEST_HASH = HashParams(memory_kib=1024, iterations=1, lanes=1)
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "olga": "olga-pw-333", "mo": "mo-pw-4444"}
USERS = [
    User("alice", Role.PLAYER, frozenset({"acme"})),  # acme's player
    User("bob", Role.PLAYER, frozenset({"globex"})),  # globex's player
    User("olga", Role.OPS, frozenset()),  # ops, no tenant
    User("mo", Role.PLAYER, frozenset({"acme", "globex"})),
]
# The key decryption proxies and RCSs share in these tests, made at test time.
PROXY_NAME = "proxy-test"
PROXY_KEY = base64.b64encode(os.urandom(32)).decode()
LARGE_BYTES = 3 * 1024 * 1024 + 12345  # several hundred segments, not a multiple of 16 KiB


class TenantRing(IdentitySet):
    """An :class:`IdentitySet` that knows each certificate's tenant, as the keystore does."""

    def __init__(self, parties: dict[str, Party]) -> None:
        super().__init__([p.identity for p in parties.values()])
        self._tenants = {p.cert_id: tenant for tenant, p in parties.items()}

    def key_and_tenants_for(
        self, stanza: RecipientStanza
    ) -> tuple[rsa.RSAPrivateKey | None, str | None, frozenset[str]]:
        tenant = self._tenants.get(stanza.cert_id_hex)
        return self.private_key_for(stanza), tenant, frozenset([tenant] if tenant else [])


@dataclass
class Keys:
    acme: Party
    globex: Party

    def ring(self) -> KeyRing:
        return TenantRing({"acme": self.acme, "globex": self.globex})


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(Party("acme-voice"), Party("globex-voice"))


def seal(party: Party, data: bytes, *, rid: str, tenant: str, kind: MediaKind, mtype: str) -> bytes:
    meta = new_metadata(recording_id=rid, tenant=tenant, media_kind=kind, media_type=mtype)
    enc = EnvelopeEncryptor([party.recipient], meta)
    return enc.update(data) + enc.finalize()


@dataclass
class Archive:
    root: Path
    plain: dict[str, bytes] = field(default_factory=dict)  # name -> plaintext
    sealed: dict[str, bytes] = field(default_factory=dict)  # name -> envelope

    def add(self, name: str, party: Party, data: bytes, **meta: Any) -> None:
        env = seal(party, data, **meta)
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(env)
        self.plain[name], self.sealed[name] = data, env


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Archive:
    """acme: a call (WAV), a screen recording (WebM), a large file; globex: one call."""
    root = tmp_path_factory.mktemp("recordings")
    a = Archive(root)
    voice, screen = MediaKind.VOICE, MediaKind.SCREEN
    wav = (SAMPLES / "call.wav").read_bytes()
    webm = (SAMPLES / "screen.webm").read_bytes()
    a.add(
        "acme/call-1.rsv",
        keys.acme,
        wav,
        rid="call-1",
        tenant="acme",
        kind=voice,
        mtype="audio/wav",
    )
    a.add(
        "acme/call-1-screen.rsv",
        keys.acme,
        webm,
        rid="call-1",
        tenant="acme",
        kind=screen,
        mtype="video/webm",
    )
    a.add(
        "acme/big.rsv",
        keys.acme,
        os.urandom(LARGE_BYTES),
        rid="big",
        tenant="acme",
        kind=voice,
        mtype="audio/basic",
    )
    a.add(
        "globex/call-9.rsv",
        keys.globex,
        wav,
        rid="call-9",
        tenant="globex",
        kind=voice,
        mtype="audio/wav",
    )
    return a


HUGE_BYTES = 16 << 20  # more than the kernel's socket buffers (4 MiB send + receive)


@pytest.fixture(scope="session")
def huge(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Archive:
    """A separate archive with one 16 MiB acme recording, for stalled and vanishing clients."""
    a = Archive(tmp_path_factory.mktemp("huge"))
    a.add(
        "acme/huge.rsv",
        keys.acme,
        os.urandom(HUGE_BYTES),
        rid="huge",
        tenant="acme",
        kind=MediaKind.VOICE,
        mtype="audio/basic",
    )
    return a


def add_users(db: Path, users: list[User] = USERS) -> None:
    store = SettingsStore.open(db)
    try:
        for u in users:
            store.put_user(u, hash_password(PASSWORDS[u.name].encode(), TEST_HASH), replace=True)
    finally:
        store.close()


def write_config(directory: Path, text: str) -> Path:
    path = directory / "rcs.toml"
    path.write_text(text)
    return path


def rcs_toml(
    directory: Path, root: Path, extra: str = "", server_extra: str = "", recordings_extra: str = ""
) -> str:
    (directory / "keystore.rsk").touch()  # [keystore] path must exist; tests pass a KeyRing
    (directory / "keystore.pass").write_text("unused-by-tests\n")
    (directory / "proxy.key").write_text(PROXY_KEY + "\n")
    return f"""
[server]
listen = "127.0.0.1:0"
{server_extra}
[keystore]
path = "keystore.rsk"
password_file = "keystore.pass"
[recordings]
root = "{root}"
{recordings_extra}
[audit]
log = "audit.jsonl"
[settings]
db = "settings.sqlite"
[auth]
{"" if "max_failures" in extra else "max_failures = 1000"}
proxies = {{ "{PROXY_NAME}" = "proxy.key" }}
{extra}
"""


class ServerThread:
    """A server on its own uvloop loop in a daemon thread."""

    def __init__(self, config_path: Path, keyring: KeyRing | None) -> None:
        self.config = load_config(config_path)
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RunningServer = self.call(start_server(self.config, keyring))

    def call(self, coro: Any, timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.config.audit_log.read_text().splitlines()]

    def metrics(self) -> str:
        return self.call(_render(self))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


async def _render(st: ServerThread) -> str:
    from recstream.service.context import CONTEXT

    return st.server.runner.app[CONTEXT].metrics.render()


def seal_to(root: Path, name: str, party: Party, data: bytes, **meta: Any) -> None:
    """Encrypt ``data`` for ``party`` into ``root/name``; ``meta``: new_metadata's keywords."""
    enc = EnvelopeEncryptor([party.recipient], new_metadata(**meta))
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(enc.update(data) + enc.finalize())


def new_rcs(
    tmp_path_factory: pytest.TempPathFactory,
    root: Path,
    keyring: KeyRing,
    extra: str = "",
    server_extra: str = "",
    recordings_extra: str = "",
    name: str = "rcs",
) -> ServerThread:
    """An RCS serving ``root``, with the test users, in a fresh directory ``name``N."""
    d = tmp_path_factory.mktemp(name)
    cfg = write_config(d, rcs_toml(d, root, extra, server_extra, recordings_extra))
    add_users(d / "settings.sqlite")
    return ServerThread(cfg, keyring)


def shared_rcs(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, root: Path, name: str
) -> Iterator[ServerThread]:
    """The body of a module-scoped RCS fixture: default limits, both tenants' keys."""
    st = new_rcs(tmp_path_factory, root, keys.ring(), name=name)
    yield st
    st.stop()


@pytest.fixture
def start_rcs(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, archive: Archive
) -> Iterator[Callable[..., ServerThread]]:
    """Start an RCS: ``start_rcs(extra="[auth] ...", server_extra="...", keyring=...)``."""
    started: list[ServerThread] = []

    def start(
        extra: str = "",
        server_extra: str = "",
        keyring: KeyRing | None = None,
        root: Path | None = None,
        recordings_extra: str = "",
    ) -> ServerThread:
        st = new_rcs(
            tmp_path_factory, root or archive.root, keyring or keys.ring(),
            extra, server_extra, recordings_extra,
        )  # fmt: skip
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


def proxy_toml(
    node: str,
    cc: str,
    extra: str = "",
    upstreams: list[str] | None = None,
    server_extra: str = "",
) -> str:
    listed = ", ".join(json.dumps(u) for u in upstreams or [])
    return f"""
[server]
listen = "127.0.0.1:0"
{server_extra}
[audit]
log = "audit.jsonl"
[settings]
db = "settings.sqlite"
[auth]
max_failures = 1000
[proxy]
node_path = "{node}"
contact_center = "{cc}"
upstreams = [{listed}]
identity = "{PROXY_NAME}"
identity_key_file = "proxy.key"
{extra}
"""


@pytest.fixture
def start_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerThread]]:
    """Start a decryption proxy: ``start_proxy(node, cc, entries={location: uri}, extra=...)``.

    Its ``[proxy] upstreams`` are the entries' values unless ``upstreams`` is given.
    """
    started: list[ServerThread] = []

    def start(
        node: str,
        cc: str,
        entries: dict[str, str] | None = None,
        extra: str = "",
        upstreams: list[str] | None = None,
        server_extra: str = "",
    ) -> ServerThread:
        d = tmp_path_factory.mktemp("proxy")
        listed = list((entries or {}).values()) if upstreams is None else upstreams
        (d / "proxy.key").write_text(PROXY_KEY + "\n")
        text = proxy_toml(node, cc, extra, listed or ["http://127.0.0.1:9/rcs"], server_extra)
        cfg = write_config(d, text)
        add_users(d / "settings.sqlite")
        store = SettingsStore.open(d / "settings.sqlite")
        for loc, uri in (entries or {}).items():
            store.add_location(cc, loc, uri)
        store.close()
        st = ServerThread(cfg, None)
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


@pytest.fixture(scope="module")
def rcs(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, archive: Archive
) -> Iterator[ServerThread]:
    """One RCS shared by a module's tests (default limits, both tenants' keys)."""
    yield from shared_rcs(tmp_path_factory, keys, archive.root, "rcs-shared")


def wait_for_audit(server: ServerThread, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The newest audit record matching ``pred`` (records are written as a response ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in reversed(server.audit()):
            if pred(rec):
                return rec
        time.sleep(0.02)
    raise AssertionError("no matching audit record")


# --- a small HTTP client ---------------------------------------------------------


def basic(user: str, password: str | None = None) -> str:
    pw = PASSWORDS[user] if password is None else password
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    user: str | None = "alice",
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """One request on a fresh connection; ``user`` adds its Basic credentials."""
    conn = connect(url, tls)
    hdrs = dict(headers or {})
    if user is not None and "Authorization" not in hdrs:
        hdrs["Authorization"] = basic(user)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def connect(url: str, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    scheme, _, hostport = url.partition("://")
    host, _, port = hostport.rpartition(":")
    if scheme == "https":
        return http.client.HTTPSConnection(host, int(port), timeout=20, context=tls)
    return http.client.HTTPConnection(host, int(port), timeout=20)


# --- TLS material made at test time ---------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))
