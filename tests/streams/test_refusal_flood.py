"""A flood of refused upgrades cannot flood the audit log (a server of its own: the
flood empties the client's audit budget, which the other endpoint tests share)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recstream.service.audit import KEY_BURST, KEY_RATE
from tests.streams.helpers import Env, Server, make_env, running

FLOOD = 300
BAD = "/streams/acme/wrong-secret-0000000"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path / "flood")


@pytest.fixture
def server(env: Env) -> Iterator[Server]:
    yield from running(env.config(), env.root / "server.log")


def _events(env: Env) -> list[dict[str, Any]]:
    return [json.loads(line) for line in env.audit_lines()]


def test_refusals_are_audited_at_a_bounded_rate_and_the_rest_counted(
    env: Env, server: Server
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    began = time.monotonic()
    for _ in range(FLOOD):
        conn.request("GET", BAD)
        response = conn.getresponse()
        response.read()
        assert response.status == 401
    elapsed = time.monotonic() - began
    written = [e for e in _events(env) if e["event"] == "stream_refused"]
    # The bucket's own arithmetic (burst, then KEY_RATE a second), not a timing guess.
    assert 1 <= len(written) <= KEY_BURST + KEY_RATE * elapsed + 1 < FLOOD
    assert written[0]["reason"] == "bad secret" and written[0]["remote"] == "127.0.0.1"
    # What was dropped is reported with the client's next admitted refusal: keep
    # knocking (slowly) until that line appears. The hang guard is generous.
    sent, deadline = FLOOD, time.monotonic() + 120
    while not any(e["event"] == "audit_suppressed" for e in _events(env)):
        assert time.monotonic() < deadline, "no audit_suppressed line"
        conn.request("GET", BAD)
        response = conn.getresponse()
        response.read()
        sent += 1
        time.sleep(0.05)
    conn.close()
    events = _events(env)
    refused = sum(e["event"] == "stream_refused" for e in events)
    dropped = sum(
        e["dropped"] + e["dropped_elsewhere"] for e in events if e["event"] == "audit_suppressed"
    )
    assert refused + dropped == sent  # every refusal is either a line or counted
