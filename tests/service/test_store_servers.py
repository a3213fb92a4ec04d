"""Issue 18: the RCS serving recordings from real S3 (moto) and WebDAV (wsgidav) on loopback.

Recordings are uploaded with a plain fsspec client (as the recorder's uploader or
an archive tool would), then listed and played through the RCS, whose only
configuration is ``[recordings] root = URL`` and whose credentials come from the
environment (tests/stores.py sets them).  The store is taken away and brought
back through its gate (tests/stores.py) for the outage tests.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recstream.cli import main
from recstream.envelope import EnvelopeEncryptor, new_metadata
from recstream.format import MediaKind
from recstream.keystore import create, update
from recstream.service.context import CONTEXT
from recstream.service.objects import StoreArchive
from tests.keystore_helpers import PASSWORD, TINY_KDF, recording_cert
from tests.service.conftest import (
    REPO,
    Archive,
    ServerThread,
    basic,
    connect,
    rcs_toml,
    request,
    wait_for_audit,
    write_config,
)
from tests.stores import StoreArea

BIG = "acme/big.rsv"
ACME = {"acme/call-1.rsv", "acme/call-1-screen.rsv", BIG}


@pytest.fixture
def served(
    store: StoreArea, archive: Archive, start_rcs: Callable[..., ServerThread]
) -> ServerThread:
    """The sample archive uploaded to the store, and an RCS serving it from there."""
    for name, env in archive.sealed.items():
        target = f"{store.path}/{name}"
        store.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(target, env)
    # The index is refreshed by the tests, not on a timer (its requests would add up).
    return start_rcs(root=store.url, recordings_extra="rescan_interval = 3600")


def stats_of(st: ServerThread) -> Any:
    archive = st.server.runner.app[CONTEXT].archive
    assert isinstance(archive, StoreArchive)
    return archive.stats


def names(st: ServerThread, user: str) -> set[str]:
    r = request(st.url, "GET", "/rcs/recordings", user=user)
    assert r.status == 200, r.body
    return {row["id"] for row in r.json()["recordings"]}


def play(st: ServerThread, name: str, rng: str | None = None, user: str = "alice") -> Any:
    headers = {"Range": rng} if rng else {}
    return request(st.url, "GET", f"/rcs/recordings/{name}", headers=headers, user=user)


def test_list_and_play_with_range_from_the_store(served: ServerThread, archive: Archive) -> None:
    assert names(served, "alice") == ACME
    assert names(served, "bob") == {"globex/call-9.rsv"}
    assert names(served, "mo") == ACME | {"globex/call-9.rsv"}
    r = play(served, "acme/call-1.rsv")
    assert r.status == 200 and r.body == archive.plain["acme/call-1.rsv"]
    assert r.headers["Content-Type"] == "audio/wav"
    plain = archive.plain[BIG]
    r = play(served, BIG, "bytes=16383-16384")  # across a segment boundary
    assert r.status == 206 and r.body == plain[16383:16385]
    # A Range near the end of the large object reads about what it returns.
    stats = stats_of(served)
    before = stats.bytes_read
    start = len(plain) - 200_000
    r = play(served, BIG, f"bytes={start}-")
    assert r.status == 206 and r.body == plain[start:]
    assert r.headers["Content-Range"] == f"bytes {start}-{len(plain) - 1}/{len(plain)}"
    served_bytes = stats.bytes_read - before
    assert served_bytes < 200_000 + 4 * (16 * 1024 + 16) + 4096
    assert served_bytes < len(archive.sealed[BIG]) // 10


class CountingRelay:
    """A TCP relay on 127.0.0.1 that counts the bytes the store sends through it."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.served = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.served += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def test_a_range_near_the_end_of_a_large_object_reads_little_from_the_store(
    store: StoreArea,
    huge: Archive,
    start_rcs: Callable[..., ServerThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted on the wire between the RCS and the store, not by the RCS itself."""
    name = "acme/huge.rsv"
    store.fs.pipe_file(f"{store.path}/{name}", huge.sealed[name])
    relay = CountingRelay(int(store.server.endpoint.rsplit(":", 1)[1]))
    try:
        if store.kind == "s3":
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{relay.port}")
            url = store.url
        else:
            url = store.url.replace(f":{store.server.port}/", f":{relay.port}/")
        st = start_rcs(root=url, recordings_extra="rescan_interval = 3600")
        assert names(st, "alice") == {name}
        plain = huge.plain[name]
        start = len(plain) - 300_000
        before = relay.served
        r = play(st, name, f"bytes={start}-")
        assert r.status == 206 and r.body == plain[start:]
        served = relay.served - before
        # the range, the header block and final segment, and HTTP headers: not 16 MiB
        assert 300_000 < served < 300_000 + 128 * 1024, served
    finally:
        relay.close()


def test_tenants_stay_apart_on_the_store(served: ServerThread) -> None:
    r = play(served, "globex/call-9.rsv", user="alice")
    assert r.status == 404
    assert r.json() == {"error": "not_found", "message": "no recording 'globex/call-9.rsv'"}
    assert play(served, "acme/call-1.rsv", user="bob").status == 404
    assert play(served, "acme/missing.rsv").status == 404
    rec = wait_for_audit(
        served, lambda a: a.get("reason") == "other_tenant" and a.get("user") == "alice"
    )
    assert rec["file"] == "globex/call-9.rsv" and rec["bytes"] == 0


def test_objects_added_and_removed_on_the_store_are_listed(
    served: ServerThread, store: StoreArea, archive: Archive
) -> None:
    index = served.server.runner.app[CONTEXT].index
    assert index is not None
    assert names(served, "bob") == {"globex/call-9.rsv"}
    store.fs.pipe_file(f"{store.path}/globex/call-10.rsv", archive.sealed["globex/call-9.rsv"])
    # what an interrupted upload leaves: never listed under a recording's name
    store.fs.pipe_file(f"{store.path}/globex/call-11.rsv.77.1.partial", b"half an upload")
    index.refresh()
    assert names(served, "bob") == {"globex/call-9.rsv", "globex/call-10.rsv"}
    body = play(served, "globex/call-10.rsv", user="bob").body
    assert body == archive.plain["globex/call-9.rsv"]
    assert play(served, "globex/call-11.rsv.77.1.partial", user="bob").status == 404
    store.fs.rm(f"{store.path}/globex/call-10.rsv")
    index.refresh()
    assert names(served, "bob") == {"globex/call-9.rsv"}


def test_store_down_is_a_clear_error_and_back_up_works(
    served: ServerThread, store: StoreArea, archive: Archive
) -> None:
    index = served.server.runner.app[CONTEXT].index
    assert index is not None
    assert names(served, "alice") == ACME
    store.server.stop()
    r = play(served, "acme/call-1.rsv")
    assert r.status in (502, 504), r.body
    assert r.json()["error"] in ("store_unavailable", "store_timeout")
    assert "recordings store" in r.json()["message"]
    assert "Traceback" not in r.body.decode()
    rec = wait_for_audit(served, lambda a: str(a.get("result", "")).startswith("store_"))
    assert rec["reason"].startswith("store_") and rec["bytes"] == 0
    with pytest.raises(Exception, match="recordings store"):
        index.refresh()
    r = request(served.url, "GET", "/rcs/recordings")
    assert r.status in (502, 504) and r.json()["error"].startswith("store_")
    assert request(served.url, "GET", "/healthz", user=None).status == 503
    store.server.start()
    index.refresh()
    assert names(served, "alice") == ACME
    assert play(served, "acme/call-1.rsv").body == archive.plain["acme/call-1.rsv"]
    assert request(served.url, "GET", "/healthz", user=None).status == 200


def test_store_down_mid_stream_ends_the_response_short(
    served: ServerThread, store: StoreArea, huge: Archive
) -> None:
    # 16 MiB: more than the socket buffers hold, so the RCS is still reading from the
    # store when the client has taken only the first KiB.
    name = "acme/huge.rsv"
    store.fs.pipe_file(f"{store.path}/{name}", huge.sealed[name])
    plain = huge.plain[name]
    conn = connect(served.url)
    conn.request("GET", f"/rcs/recordings/{name}", headers={"Authorization": basic("alice")})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.read(1024)  # streaming has started
    store.server.stop()
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    got = first + info.value.partial
    assert 0 < len(got) < len(plain)
    assert got == plain[: len(got)]  # authenticated plaintext only, and it stops there
    conn.close()
    rec = wait_for_audit(served, lambda a: a.get("event") == "playback" and a.get("file") == name)
    assert rec["result"].startswith("store_") and rec["bytes"] == len(got)
    store.server.start()
    assert play(served, name).body == plain


def test_wrong_webdav_credentials_are_a_502_store_refused(
    webdav_server: Any,
    archive: Archive,
    start_rcs: Callable[..., ServerThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.stores import area

    store = area(webdav_server, monkeypatch)
    store.fs.pipe_file(f"{store.path}/acme/call-1.rsv", archive.sealed["acme/call-1.rsv"])
    monkeypatch.setenv("RECSTREAM_WEBDAV_PASSWORD", "not-the-password")
    st = start_rcs(root=store.url, recordings_extra="rescan_interval = 3600")
    r = play(st, "acme/call-1.rsv")
    assert r.status == 502 and r.json()["error"] == "store_refused", r.body
    assert "not-the-password" not in r.body.decode()
    r = request(st.url, "GET", "/rcs/recordings")
    assert r.status == 502 and r.json()["error"] == "store_refused"
    assert "not-the-password" not in st.config.audit_log.read_text()


def test_recordings_uploaded_by_recstream_upload_are_served(
    store: StoreArea, archive: Archive, start_rcs: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """End to end: the uploader (a real ``recstream upload`` process) fills the store,
    the RCS lists and plays what it put there."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "acme-call.rsv").write_bytes(archive.sealed["acme/call-1.rsv"])
    (spool / "globex-call.rsv").write_bytes(archive.sealed["globex/call-9.rsv"])
    cmd = [sys.executable, "-m", "recstream", "upload", "--spool", str(spool)]
    proc = subprocess.run(
        [*cmd, "--archive", store.url, "--once"],
        env={**os.environ, **store.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(spool.glob("*.rsv"))  # uploaded, verified, and only then removed
    st = start_rcs(root=store.url, recordings_extra="rescan_interval = 3600")
    assert names(st, "alice") == {"acme-call.rsv"}
    assert names(st, "bob") == {"globex-call.rsv"}
    plain = archive.plain["acme/call-1.rsv"]
    r = play(st, "acme-call.rsv", "bytes=100000-")
    assert r.status == 206 and r.body == plain[100000:]


def test_recstream_serve_process_serves_from_the_store(store: StoreArea, tmp_path: Path) -> None:
    """``recstream serve`` as users run it: a process, a real keystore, credentials for
    the store only in its environment."""
    voice = recording_cert("rcs-store-voice")
    create(tmp_path / "keystore.rsk", PASSWORD, kdf=TINY_KDF)
    with update(tmp_path / "keystore.rsk", PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, voice.cert, voice.key, now=dt.datetime.now(dt.UTC))
    plain = os.urandom(200_000)
    meta = new_metadata(
        recording_id="p1", tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/basic"
    )
    enc = EnvelopeEncryptor([voice.recipient], meta)
    store.fs.pipe_file(f"{store.path}/acme/p1.rsv", enc.update(plain) + enc.finalize())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = rcs_toml(tmp_path, Path("unused")).replace('root = "unused"', f'root = "{store.url}"')
    cfg = write_config(tmp_path, text.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
    (tmp_path / "keystore.pass").write_bytes(PASSWORD + b"\n")
    (tmp_path / "ann.pw").write_text("ann-password-1\n")
    add = ["serve", "add-user", "--config", str(cfg), "--name", "ann", "--role", "player"]
    assert main([*add, "--tenant", "acme", "--password-file", str(tmp_path / "ann.pw")]) == 0
    env = {**os.environ, **store.env, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recstream", "serve", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert "RCS listening on http://127.0.0.1:" in line, line
        url = line.split("listening on ")[1].split()[0]
        auth = {"Authorization": "Basic " + base64.b64encode(b"ann:ann-password-1").decode()}
        assert request(url, "GET", "/healthz", user=None).status == 200
        r = request(url, "GET", "/rcs/recordings", headers=auth, user=None)
        assert r.status == 200 and [x["id"] for x in r.json()["recordings"]] == ["acme/p1.rsv"]
        r = request(
            url,
            "GET",
            "/rcs/recordings/acme/p1.rsv",
            headers={**auth, "Range": "bytes=-5000"},
            user=None,
        )
        assert r.status == 206 and r.body == plain[-5000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.stderr is not None and store.server.password not in proc.stderr.read()


def test_an_empty_prefix_is_an_empty_archive_and_a_missing_bucket_an_error(
    store: StoreArea,
    s3_server: Any,
    start_rcs: Callable[..., ServerThread],
) -> None:
    st = start_rcs(root=f"{store.url}/nothing-yet", recordings_extra="rescan_interval = 3600")
    assert request(st.url, "GET", "/healthz", user=None).status == 200
    assert names(st, "alice") == set()
    if store.kind != "s3":
        return
    st = start_rcs(root="s3://no-such-bucket/rec", recordings_extra="rescan_interval = 3600")
    assert request(st.url, "GET", "/healthz", user=None).status == 503
    r = request(st.url, "GET", "/rcs/recordings")
    assert r.status == 502 and r.json()["error"] == "store_unavailable"
    assert "does not exist" in r.json()["message"]
