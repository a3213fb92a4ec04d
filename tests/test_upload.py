"""Issue 18: recordings uploaded from the spool to real S3 (moto) and WebDAV (wsgidav) servers.

Every test runs against real servers on loopback (tests/stores.py); outages are the
server's port refusing and open connections reset, on the same port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recstream.aio import RecordingHook
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.errors import SpoolFullError, StoreRefusedError, UploadConflictError
from recstream.format import MediaKind
from recstream.storage import StoreURL, open_store, webdav_credentials
from recstream.upload import PutResult, RetryPolicy, Uploader, put_verified, scan
from tests.conftest import Party
from tests.stores import StoreArea, StoreServer, area

FAST = RetryPolicy(initial_seconds=0.05, cap_seconds=0.3, refused_seconds=3600)
RECSTREAM = [sys.executable, "-m", "recstream"]
DEADLINE = 120.0  # hang guard for polls on a loaded machine


def record(spool: Path, party: Party, call_id: str, voice: bytes, screen: bytes = b"") -> None:
    """One call through the real recording hook, in the archive layout."""
    kinds = [MediaKind.VOICE] + ([MediaKind.SCREEN] if screen else [])

    async def main() -> None:
        async with RecordingHook(
            spool, lambda t, k: [party.recipient], flush_interval=0.05, contact_center="cc1"
        ) as hook:
            await hook.start(call_id, tenant="acme", kinds=kinds)
            for i in range(0, len(voice), 64 * 1024):
                hook.media(call_id, voice[i : i + 64 * 1024])
                await asyncio.sleep(0)
            if screen:
                hook.media(call_id, screen, MediaKind.SCREEN)
            await hook.stop(call_id)
            assert not hook.errors

    asyncio.run(main())


def seal_file(path: Path, party: Party, data: bytes) -> None:
    """A finished envelope written directly (for sizes the live hook would pace)."""
    meta = new_metadata(
        recording_id=path.stem, tenant="acme", media_kind=MediaKind.VOICE, media_type="x/y"
    )
    enc = EnvelopeEncryptor([party.recipient], meta)
    path.write_bytes(enc.update(data) + enc.finalize())


def spool_files(spool: Path) -> dict[str, bytes]:
    return {
        p.relative_to(spool).as_posix(): p.read_bytes()
        for p in spool.rglob("*")
        if p.is_file() and ".recstream-upload" not in p.parts
    }


def decrypt(party: Party, data: bytes) -> bytes:
    dec = EnvelopeDecryptor(party.keys)
    return dec.update(data) + dec.finalize()


def wait_for(cond: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def commits(store: StoreArea, rel: str) -> int:
    """How many times the final name was written (S3 versions; WebDAV: 1 if present)."""
    path = f"{store.path}/{rel}"
    if store.kind == "s3":
        return store.server.object_versions(path)
    return 1 if store.server.local_file(path).exists() else 0


# --- upload, list, read back ---------------------------------------------------------


def test_upload_then_list_and_read_back(store: StoreArea, tmp_path: Path, alice: Party) -> None:
    voice, screen = os.urandom(200_000), os.urandom(50_000)
    record(tmp_path, alice, "call-1", voice, screen)
    record(tmp_path, alice, "call-2", voice[:1000])
    before = spool_files(tmp_path)
    assert len(before) == 5  # 2 x recording.json, 3 envelopes

    uploader = Uploader(tmp_path, store.url, retry=FAST)
    stats = uploader.drain(deadline=time.monotonic() + DEADLINE)

    assert stats.pending == 0 and stats.uploaded == 2 and not stats.held
    assert spool_files(tmp_path) == {}  # removed only after the commit
    listed = store.find()
    assert set(listed) == set(before)  # same layout, no temporaries left
    for rel, data in before.items():
        assert store.read(rel) == data
        assert commits(store, rel) == 1
    rid_dir = next(r for r in before if r.endswith("call-1/recording.json")).rsplit("/", 1)[0]
    assert decrypt(alice, store.read(f"{rid_dir}/voice.rsv")) == voice
    assert decrypt(alice, store.read(f"{rid_dir}/screen.rsv")) == screen
    doc = json.loads(store.read(f"{rid_dir}/recording.json"))
    assert set(doc["media"]) == {"voice", "screen"}


def test_flat_file_is_uploaded_under_its_name(webdav_store: StoreArea, tmp_path: Path) -> None:
    (tmp_path / "a.rsv").write_bytes(b"x" * 1000)
    (tmp_path / "b.rsv.incomplete").write_bytes(b"still recording")
    stats = Uploader(tmp_path, webdav_store.url, retry=FAST).drain(deadline=time.monotonic() + 60)
    assert stats.uploaded == 1
    assert webdav_store.find() == {"a.rsv": 1000}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["b.rsv.incomplete"]


def test_unfinished_recording_directory_waits(tmp_path: Path) -> None:
    rec = tmp_path / "cc1" / "acme" / "2026-01-01" / "r1"
    rec.mkdir(parents=True)
    (rec / "voice.rsv").write_bytes(b"v")
    (rec / "screen.rsv.incomplete").write_bytes(b"s")
    media = {"voice": {"file": "voice.rsv"}, "screen": {"file": "screen.rsv"}}
    (rec / "recording.json").write_text(json.dumps({"media": media}))
    [item] = scan(tmp_path)
    assert not item.ready and "screen.rsv.incomplete" in item.why_not
    (rec / "screen.rsv.incomplete").unlink()
    [item] = scan(tmp_path)
    assert not item.ready and "screen.rsv not there yet" in item.why_not
    (rec / "screen.rsv").write_bytes(b"s")
    [item] = scan(tmp_path)
    assert item.ready
    assert item.files[-1].endswith("recording.json")  # the JSON is committed last


# --- outages ---------------------------------------------------------------------------


def test_store_stopped_mid_upload_and_restarted(
    store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    voice = os.urandom(12 * 2**20)  # large enough to be in flight when the store goes
    seal_file(tmp_path / "big.rsv", alice, voice)
    before = spool_files(tmp_path)
    server = store.server
    uploader = Uploader(tmp_path, store.url, retry=FAST)
    sent = server.sent
    uploader.start()
    try:
        assert server.wait_sent(sent + 1024 * 1024)  # the upload is under way
        server.stop()
        wait_for(lambda: uploader.statistics().failures >= 1, "a failed attempt")
        stats = uploader.statistics()
        assert not stats.store_available and stats.pending == 1
        assert spool_files(tmp_path) == before  # nothing lost
        server.start()
        for rel in set(store.find()) & set(before):  # a final name holds all or nothing
            assert store.read(rel) == before[rel]
        uploader.notify()
        wait_for(lambda: uploader.statistics().uploaded == 1, "the upload after the restart")
    finally:
        uploader.stop()
    assert spool_files(tmp_path) == {}
    assert {k: v for k, v in store.find().items()} == {r: len(d) for r, d in before.items()}
    for rel, data in before.items():
        assert store.read(rel) == data
        assert commits(store, rel) == 1  # uploaded once
    assert decrypt(alice, store.read(next(r for r in before if r.endswith(".rsv")))) == voice


def test_committed_before_a_crash_is_not_written_again(
    store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    record(tmp_path, alice, "c", os.urandom(100_000))
    before = spool_files(tmp_path)
    # A previous uploader committed every file, then died before cleaning the spool.
    for rel, data in before.items():
        store.fs.pipe_file(f"{store.path}/{rel}", data)
    stamps = {}
    if store.kind == "webdav":
        stamps = {r: store.server.local_file(f"{store.path}/{r}").stat().st_ino for r in before}
    stats = Uploader(tmp_path, store.url, retry=FAST).drain(deadline=time.monotonic() + 60)
    assert stats.uploaded == 1 and stats.already_there == len(before)
    assert spool_files(tmp_path) == {}
    for rel in before:
        assert commits(store, rel) == 1
        if stamps:
            assert store.server.local_file(f"{store.path}/{rel}").stat().st_ino == stamps[rel]


def test_conflicting_object_is_never_overwritten(
    store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    record(tmp_path, alice, "c", os.urandom(10_000))
    before = spool_files(tmp_path)
    rsv = next(r for r in before if r.endswith(".rsv"))
    store.fs.pipe_file(f"{store.path}/{rsv}", b"someone else's file")
    stats = Uploader(tmp_path, store.url, retry=FAST).drain(deadline=time.monotonic() + 60)
    assert stats.uploaded == 0 and len(stats.held) == 1
    assert "already exists with different content" in next(iter(stats.held.values()))
    assert spool_files(tmp_path) == before
    assert store.read(rsv) == b"someone else's file"
    with pytest.raises(UploadConflictError):
        put_verified(open_store(store.url), tmp_path / rsv, rsv)


# --- refusals and secrets ----------------------------------------------------------------


def test_refused_403_is_reported_and_kept_not_retried_hot(
    webdav_server: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    area(webdav_server, monkeypatch)
    (tmp_path / "a.rsv").write_bytes(b"x" * 100)
    assert webdav_server.readonly_url is not None
    uploader = Uploader(tmp_path, f"{webdav_server.readonly_url}/archive", retry=FAST)
    with caplog.at_level(logging.INFO, logger="recstream.upload"):
        uploader.run_once()
        uploader.run_once()  # not due again for refused_seconds: no second request
    stats = uploader.statistics()
    assert stats.failures == 1 and list(stats.held) == ["a.rsv"]
    assert "refused" in stats.held["a.rsv"] and "permissions" in stats.held["a.rsv"]
    assert (tmp_path / "a.rsv").exists()
    mine = [r.levelname for r in caplog.records if r.name == "recstream.upload"]
    assert mine == ["ERROR"]
    status = run_cli("status", "--spool", str(tmp_path))
    assert status.returncode == 6
    assert "held       a.rsv" in status.stdout and "refused" in status.stdout


def test_wrong_password_never_appears_in_logs_or_status(
    webdav_server: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Sup3r-secret-Passw0rd"
    (tmp_path / "a.rsv").write_bytes(b"x" * 100)
    env = {**os.environ, **webdav_server.env, "RECSTREAM_WEBDAV_PASSWORD": secret}
    proc = run_cli(
        "upload", "--spool", str(tmp_path), "--archive", webdav_server.url, "--once", env=env
    )
    assert proc.returncode == 6
    assert "401" in proc.stderr and "refused" in proc.stderr
    status = run_cli("status", "--spool", str(tmp_path), "--json", env=env)
    assert json.loads(status.stdout)["uploader"]["held"]
    state = (tmp_path / ".recstream-upload" / "state.json").read_text()
    for text in (proc.stdout, proc.stderr, status.stdout, status.stderr, state):
        assert secret not in text
    monkeypatch.setenv("RECSTREAM_WEBDAV_PASSWORD", secret)
    monkeypatch.setenv("RECSTREAM_WEBDAV_USERNAME", "recorder")
    with caplog.at_level(logging.DEBUG):
        Uploader(tmp_path, webdav_server.url, retry=FAST).run_once()
    assert secret not in caplog.text


def test_refused_error_class(webdav_server: StoreServer, monkeypatch: pytest.MonkeyPatch) -> None:
    area(webdav_server, monkeypatch)
    assert webdav_server.readonly_url is not None
    store = open_store(webdav_server.readonly_url)
    local = Path(__file__)
    with pytest.raises(StoreRefusedError, match="refused"):
        put_verified(store, local, "x.py")


# --- the spool full --------------------------------------------------------------------


def test_full_spool_refuses_new_recordings_and_keeps_old(
    webdav_store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    (tmp_path / "old.rsv").write_bytes(b"o" * 5000)
    webdav_store.server.stop()  # the backlog cannot drain
    uploader = Uploader(tmp_path, webdav_store.url, retry=FAST, max_spool_bytes=4096)

    async def main() -> dict[tuple[str, MediaKind], BaseException]:
        async with RecordingHook(
            tmp_path, lambda t, k: [alice.recipient], uploader=uploader
        ) as hook:
            await hook.start("new", tenant="acme")
            return dict(hook.errors)

    errors = asyncio.run(main())
    err = errors[("new", MediaKind.VOICE)]
    assert isinstance(err, SpoolFullError)
    assert "max_spool_bytes 4096" in str(err) and err.used >= 5000
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["old.rsv"]
    webdav_store.server.start()
    floor = Uploader(tmp_path, webdav_store.url, min_free_bytes=2**62)
    with pytest.raises(SpoolFullError, match="min_free_bytes"):
        floor.check_admission()


# --- the recorder killed, then restarted ---------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> Any:
    return subprocess.run(
        [*RECSTREAM, *args],
        input=stdin.decode("latin-1") if stdin else "",
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=DEADLINE,
        check=False,
    )


def test_uploader_sigkilled_with_uploads_pending_resumes(
    s3_store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    record(tmp_path, alice, "k1", os.urandom(30_000))
    record(tmp_path, alice, "k2", os.urandom(30_000))
    before = spool_files(tmp_path)
    s3_store.server.stop()
    env = {**os.environ, **s3_store.env}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recstream",
            "upload",
            "--spool",
            str(tmp_path),
            "--archive",
            s3_store.url,
            "--retry-cap",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first failed attempt is logged: pending now
        assert "unavailable" in line and "stay in the spool" in line, line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert spool_files(tmp_path) == before
    s3_store.server.start()
    again = run_cli(
        "upload", "--spool", str(tmp_path), "--archive", s3_store.url, "--once", env=env
    )
    assert again.returncode == 0, again.stderr
    assert spool_files(tmp_path) == {}
    for rel, data in before.items():
        assert s3_store.read(rel) == data
        assert commits(s3_store, rel) == 1


def test_record_archive_uploads_the_recording(
    store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    cert, _ = alice.write(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    out = spool / "call.rsv"
    data = os.urandom(70_000)
    env = {**os.environ, **store.env}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recstream",
            "record",
            "--cert",
            str(cert),
            "--archive",
            store.url,
            str(out),
        ],
        input=data,
        capture_output=True,
        env=env,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not out.exists()
    assert decrypt(alice, store.read("call.rsv")) == data


def test_record_archive_store_down_keeps_the_recording(
    s3_store: StoreArea, tmp_path: Path, alice: Party
) -> None:
    cert, _ = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    s3_store.server.stop()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recstream",
            "record",
            "--cert",
            str(cert),
            "--archive",
            s3_store.url,
            "--upload-timeout",
            "0",
            str(out),
        ],
        input=b"abc" * 1000,
        capture_output=True,
        env={**os.environ, **s3_store.env},
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 6
    assert b"NOT uploaded" in proc.stderr and b"recstream upload --spool" in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert s3_store.server.password.encode() not in proc.stderr  # the S3 secret / DAV password
    assert out.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "unsupported store URL scheme"),
        ("webdav+http://example.com/x", "plain http is accepted for loopback hosts only"),
        ("webdav+https://user:pw@host/x", "must not carry credentials"),
        ("s3://Bad_Bucket/x", "not an S3 bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/x?versionId=1", "no query"),
    ],
)
def test_bad_archive_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StoreURL.parse(url)


def test_bad_archive_url_on_the_command_line(tmp_path: Path) -> None:
    proc = run_cli("upload", "--spool", str(tmp_path), "--archive", "webdav+https://u:pw@h/x")
    assert proc.returncode == 2 and "must not carry credentials" in proc.stderr
    assert "Traceback" not in proc.stderr and "u:pw" not in proc.stderr
    proc = run_cli("status", "--spool", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "spool directory does not exist" in proc.stderr
    proc = run_cli("upload", "--spool", str(tmp_path), "--archive", "s3://b/p", "--retry-cap", "0")
    assert proc.returncode == 2 and "--retry-cap must be a positive" in proc.stderr


def test_webdav_credentials_from_env_or_netrc(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine dav.example login alice password fromnetrc\n")
    netrc.chmod(0o600)
    assert webdav_credentials("dav.example", {"NETRC": str(netrc)}) == ("alice", "fromnetrc")
    assert webdav_credentials("other.example", {"NETRC": str(netrc)}) is None
    env = {"RECSTREAM_WEBDAV_USERNAME": "u", "RECSTREAM_WEBDAV_PASSWORD": "p"}
    assert webdav_credentials("dav.example", env) == ("u", "p")
    with pytest.raises(Exception, match="set both"):
        webdav_credentials("dav.example", {"RECSTREAM_WEBDAV_USERNAME": "u"})


def test_two_uploaders_on_one_spool_commit_once(store: StoreArea, tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"r{i}.rsv").write_bytes(os.urandom(20_000))
    before = spool_files(tmp_path)
    results = []

    def go() -> None:
        results.append(Uploader(tmp_path, store.url, retry=FAST).drain(time.monotonic() + 60))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spool_files(tmp_path) == {}
    assert sum(r.uploaded for r in results) == 6
    for rel in before:
        assert commits(store, rel) == 1


def test_temporary_and_copy_path_verifies_and_commits_once(
    s3_server: StoreServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """S3's temporary + copy commit (the multipart path) on a small object."""
    store = area(s3_server, monkeypatch)
    local = tmp_path / "x.rsv"
    local.write_bytes(os.urandom(300_000))
    opened = open_store(store.url)
    assert put_verified(opened, local, "d/x.rsv", direct=False) is PutResult.UPLOADED
    assert store.find() == {"d/x.rsv": 300_000}  # the temporary is gone
    assert put_verified(opened, local, "d/x.rsv", direct=False) is PutResult.ALREADY_THERE
    assert s3_server.object_versions(f"{store.path}/d/x.rsv") == 1
    local.write_bytes(os.urandom(300_000))
    with pytest.raises(UploadConflictError):
        put_verified(opened, local, "d/x.rsv", direct=False)


def test_multipart_etag_is_the_md5_of_part_md5s(tmp_path: Path) -> None:
    import hashlib

    from recstream.upload import put

    size = 2 * put.S3_PART_SIZE + 10
    path = tmp_path / "big"
    with path.open("wb") as fh:
        fh.truncate(size)  # sparse: no need to write 100 MiB
    zero_part = hashlib.md5(bytes(put.S3_PART_SIZE)).digest()
    tail = hashlib.md5(bytes(10)).digest()
    expect = hashlib.md5(zero_part + zero_part + tail).hexdigest() + "-3"
    assert put.s3_etag(path, size) == expect
    assert not put.single_request(size) and put.single_request(put.S3_PART_SIZE)


def test_backlog_metrics(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    from recstream.upload import UploadStatistics
    from recstream.upload.metrics import upload_metrics

    stats = UploadStatistics("s3://b/p", pending=3, pending_bytes=4096, held={"a": "403"})

    class One(Collector):
        def collect(self) -> Any:
            yield from upload_metrics(stats)

    registry = CollectorRegistry()
    registry.register(One())
    text = generate_latest(registry).decode()
    assert "recstream_upload_pending_recordings 3.0" in text
    assert "recstream_upload_pending_bytes 4096.0" in text
    assert "recstream_upload_held_recordings 1.0" in text
