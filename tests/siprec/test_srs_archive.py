"""Issue 18: the SIPREC server with ``[recordings] archive``: the spool drains into the
store, and the backlog is on /metrics."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from tests.siprec.helpers import HANG_GUARD, Srs, write_config
from tests.stores import StoreArea


def metric(srs: Srs, name: str) -> float:
    url = f"http://{srs.ready['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=HANG_GUARD) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_srs_uploads_its_spool_and_reports_the_backlog(s3_store: StoreArea, tmp_path: Path) -> None:
    store = s3_store
    cfg = write_config(tmp_path)
    cfg.write_text(
        cfg.read_text().replace(
            "flush_interval = 0.2\n", f'flush_interval = 0.2\narchive = "{store.url}"\n'
        )
    )
    # A recording finished before a restart, still waiting for the archive.
    pending = tmp_path / "recordings" / "0a1b2c" / "acme" / "2026-01-01" / "r1"
    pending.mkdir(parents=True)
    (pending / "voice.rsv").write_bytes(b"v" * 5000)
    (pending / "recording.json").write_text('{"media": {"voice": {"file": "voice.rsv"}}}')
    store.server.stop()
    srs = Srs.start(cfg)
    try:
        deadline = time.monotonic() + HANG_GUARD
        while metric(srs, "recstream_upload_store_available") != 0:
            assert time.monotonic() < deadline, "the outage never showed"
            time.sleep(0.05)
        assert metric(srs, "recstream_upload_pending_recordings") == 1
        assert metric(srs, "recstream_upload_pending_bytes") > 5000
        store.server.start()
        while metric(srs, "recstream_upload_recordings_total") != 1:
            assert time.monotonic() < deadline, "the spool never drained"
            time.sleep(0.05)
        assert metric(srs, "recstream_upload_pending_recordings") == 0
    finally:
        assert srs.stop() == 0
    assert store.read("0a1b2c/acme/2026-01-01/r1/voice.rsv") == b"v" * 5000
    assert not pending.exists()
