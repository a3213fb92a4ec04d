"""Issue 18: ``recstream streams`` with ``[recordings] archive``: each finished call is
uploaded to the store (S3 on moto, WebDAV on wsgidav) and leaves the local spool."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from recstream import tracks
from recstream.envelope import EnvelopeDecryptor
from recstream.errors import ConfigError
from recstream.streams.config import load_config
from tests.stores import StoreArea
from tests.streams import wsclient as wc
from tests.streams.helpers import SECRETS, Env, Server, audit_entry, make_env


def with_archive(env: Env, **recordings: object) -> Path:
    path = env.config()
    extra = "".join(
        f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n" for k, v in recordings.items()
    )
    text = path.read_text().replace("flush_interval = 0.2\n", f"flush_interval = 0.2\n{extra}")
    path.write_text(text)
    return path


def test_finished_calls_go_to_the_archive(store: StoreArea, tmp_path: Path) -> None:
    env = make_env(tmp_path)
    config = with_archive(env, archive=store.url, max_spool_bytes=10**9)
    data = wc.audio(3, seed=5)
    server = Server(config, tmp_path / "server.log")
    try:
        c = wc.Call(tracks=("inbound",))
        msgs = [c.connected(), c.start(), *wc.media_messages(c, data), c.stop()]
        url = f"{server.url}?token={SECRETS['acme']}"
        code, _ = wc.run(lambda: wc.call(url, msgs, close=False))
        assert code == 1000
        entry = audit_entry(env, c.stream_sid)
        rel = Path(entry["file"]).relative_to(env.recordings).as_posix()
        deadline = time.monotonic() + 120
        while rel not in store.find() or any(env.recordings.rglob("*.rsv")):
            assert time.monotonic() < deadline, "the recording never reached the archive"
            time.sleep(0.05)
    finally:
        server.stop()
    dec = EnvelopeDecryptor(env.keys())
    ex = tracks.extract(dec.update(store.read(rel)) + dec.finalize())
    assert bytes(ex.tracks[1].audio) == data
    assert rel.rsplit("/", 1)[0] + "/recording.json" in store.find()


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ({"archive": "ftp://x/y"}, "[recordings] archive: unsupported store URL scheme"),
        ({"archive": "webdav+http://dav.example/x"}, "loopback hosts only"),
        ({"archive": "/some/dir"}, "[recordings] archive must be a store URL"),
        ({"max_spool_bytes": -1}, "[recordings] max_spool_bytes must be a number of bytes"),
    ],
)
def test_bad_archive_settings_are_refused(
    tmp_path: Path, setting: dict[str, object], problem: str
) -> None:
    env = make_env(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(with_archive(env, **setting))
    assert problem in str(info.value)


def test_archive_settings_load(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    cfg = load_config(
        with_archive(env, archive="s3://bucket/calls/", max_spool_bytes=5000, min_free_bytes=7)
    )
    assert cfg.recordings.archive == "s3://bucket/calls"
    assert (cfg.recordings.max_spool_bytes, cfg.recordings.min_free_bytes) == (5000, 7)


def test_recorder_sigkilled_with_uploads_pending_resumes_on_restart(
    webdav_store: StoreArea, tmp_path: Path
) -> None:
    env = make_env(tmp_path)
    config = with_archive(env, archive=webdav_store.url)
    webdav_store.server.stop()  # the archive is down: the finished call stays pending
    data = wc.audio(2, seed=9)
    server = Server(config, tmp_path / "server.log")
    try:
        c = wc.Call(tracks=("inbound",))
        msgs = [c.connected(), c.start(), *wc.media_messages(c, data), c.stop()]
        code, _ = wc.run(
            lambda: wc.call(f"{server.url}?token={SECRETS['acme']}", msgs, close=False)
        )
        assert code == 1000
        entry = audit_entry(env, c.stream_sid)
        assert server.proc.stderr is not None
        for line in server.proc.stderr:  # the uploader says it could not reach the store
            if "stay in the spool" in line:
                break
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()
    recording = Path(entry["file"])
    assert recording.exists()  # kept through the outage and the kill
    rel = recording.relative_to(env.recordings).as_posix()
    webdav_store.server.start()
    assert rel not in webdav_store.find()
    again = Server(config, tmp_path / "server2.log")  # the restart finds it by scanning
    try:
        deadline = time.monotonic() + 120
        while rel not in webdav_store.find() or recording.exists():
            assert time.monotonic() < deadline, "the pending recording was not uploaded"
            time.sleep(0.05)
    finally:
        again.stop()
    dec = EnvelopeDecryptor(env.keys())
    ex = tracks.extract(dec.update(webdav_store.read(rel)) + dec.finalize())
    assert bytes(ex.tracks[1].audio) == data
