"""The endpoint against a client nobody here wrote: streamdouble (PyPI, a Twilio Media Streams
simulator), in fork mode with both tracks, driving the real ``recstream streams`` process.

The WAVs are made here from random mu-law bytes, so the bytes streamdouble sends are known
exactly; the decrypted recording must hold them, byte for byte, on each track.  With injected
loss, streamdouble's own trace says which caller frames it never sent: those 20 ms must be
silence (0xFF) and everything else the audio sent.  The three calls run at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.streams.helpers import (
    PHONE,
    SECRETS,
    Env,
    Server,
    audit_entry,
    decrypt_tracks,
    make_env,
    random_ulaw,
    recordings_of,
    running,
    write_wav,
)

FRAME = 160  # 20 ms of 8 kHz mu-law
CALLER = random_ulaw(FRAME * 40, seed=1)  # 0.8 s
AGENT = random_ulaw(FRAME * 55, seed=2)  # 1.1 s: the agent talks longer, drained after


def _streamdouble() -> str:
    exe = Path(sys.executable).with_name("streamdouble")
    return str(exe) if exe.exists() else shutil.which("streamdouble") or "streamdouble"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    env = make_env(tmp_path_factory.mktemp("sd"))
    write_wav(env.root / "caller.wav", CALLER)
    write_wav(env.root / "agent.wav", AGENT)
    (env.root / "dtmf.yaml").write_text(
        "name: caller presses keys\nsteps:\n  - say: caller.wav\n  - dtmf: '7#'\n"
        "  - say: caller.wav\n"
    )
    return env


@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[Server]:
    yield from running(env.config(idle_timeout=30), env.root / "server.log")


@pytest.fixture(scope="module")
def calls(env: Env, server: Server) -> dict[str, dict[str, object]]:
    """Three simulated calls at once; each result is streamdouble's JSON plus its trace."""
    url = f"{server.url}?token={SECRETS['acme']}"
    common = ["--fork", "--track", "both", "--agent-audio", "agent.wav", "--json"]
    common += ["--param", f"From={PHONE}", "--param", "tenant=acme"]
    runs = {
        "clean": ["call", url, "--audio", "caller.wav", *common],
        "impaired": [
            "call", url, "--audio", "caller.wav", *common,
            "--packet-loss", "0.15", "--jitter", "30", "--latency", "40", "--chaos-seed", "11",
        ],
        "dtmf": ["scenario", "dtmf.yaml", url, *common],
    }  # fmt: skip

    def run(name: str) -> dict[str, object]:
        trace = env.root / f"{name}.trace.jsonl"
        proc = subprocess.run(
            [_streamdouble(), *runs[name], "--trace", str(trace)],
            cwd=env.root,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        result: dict[str, object] = json.loads(proc.stdout)
        result["trace"] = [json.loads(line) for line in trace.read_text().splitlines()]
        return result

    with ThreadPoolExecutor(3) as pool:
        return dict(zip(runs, pool.map(run, runs), strict=True))


def _call_file(env: Env, result: dict[str, object]) -> Path:
    entry = audit_entry(env, str(result["stream_sid"]))
    assert entry["complete"] is True, entry
    files = recordings_of(env, str(entry["call_sid"]))
    assert [str(f) for f in files] == [entry["file"]]
    return files[0]


def _sent(result: dict[str, object], track: str) -> list[dict[str, object]]:
    trace = result["trace"]
    assert isinstance(trace, list)
    return [e for e in trace if e["event"] == "media" and e["track"] == track]


def test_clean_fork_is_recorded_byte_for_byte(
    env: Env, calls: dict[str, dict[str, object]]
) -> None:
    result = calls["clean"]
    ex = decrypt_tracks(env, _call_file(env, result))
    assert ex.complete
    inbound, outbound = ex.tracks[1], ex.tracks[2]
    decl = inbound.decl
    assert (decl.label, decl.codec, decl.clock_rate) == ("inbound", "PCMU", 8000)
    assert outbound.decl.label == "outbound"
    assert bytes(inbound.audio) == CALLER
    assert bytes(outbound.audio) == AGENT
    assert inbound.stats is not None and outbound.stats is not None
    assert inbound.stats.counts["received"] == len(CALLER) // FRAME
    assert outbound.stats.counts["received"] == len(AGENT) // FRAME
    assert inbound.stats.counts["lost"] == inbound.stats.counts["duplicate"] == 0
    assert not inbound.gaps and not inbound.events
    session = ex.session
    assert session is not None
    assert session.info["stream_sid"] == result["stream_sid"]
    assert session.info["tenant"] == "acme"
    # The caller's number is inside the envelope, and only there.
    assert session.info["custom_parameters"] == {"From": PHONE, "tenant": "acme"}


def test_loss_jitter_latency_become_silence_in_place(
    env: Env, calls: dict[str, dict[str, object]]
) -> None:
    result = calls["impaired"]
    assert isinstance(result["frames_dropped"], int) and result["frames_dropped"] > 0
    sent = {int(str(e["timestamp_ms"])) for e in _sent(result, "inbound")}
    expected = b"".join(
        CALLER[i * FRAME : (i + 1) * FRAME] if i * 20 in sent else b"\xff" * FRAME
        for i in range(len(CALLER) // FRAME)
    )
    # A loss at the very end leaves no later chunk to show the gap: the track ends early.
    last = max(sent) // 20 + 1
    ex = decrypt_tracks(env, _call_file(env, result))
    inbound = ex.tracks[1]
    assert bytes(inbound.audio) == expected[: last * FRAME]
    assert bytes(ex.tracks[2].audio) == AGENT  # impairments are on the caller's leg only
    lost_inside = sum(1 for i in range(last) if i * 20 not in sent)
    assert inbound.stats is not None
    assert inbound.stats.counts["lost"] == lost_inside == sum(g.packets for g in inbound.gaps)
    assert inbound.stats.counts["received"] == len(sent)


def test_dtmf_is_kept_as_events(env: Env, calls: dict[str, dict[str, object]]) -> None:
    result = calls["dtmf"]
    trace = result["trace"]
    assert isinstance(trace, list)
    # Where each digit fell: the inbound media sent before it, 160 samples each.
    positions, frames = [], 0
    for e in trace:
        if e["event"] == "media" and e["track"] == "inbound":
            frames += 1
        elif e["event"] == "dtmf":
            positions.append((str(e["digit"]), frames * FRAME))
    ex = decrypt_tracks(env, _call_file(env, result))
    inbound = ex.tracks[1]
    assert [(ev.digit, ev.position) for ev in inbound.events] == positions
    assert [d for d, _ in positions] == ["7", "#"]
    # Events are not audio: the track is the caller twice around streamdouble's silence.
    audio = bytes(inbound.audio)
    assert audio[: len(CALLER)] == CALLER and audio[-len(CALLER) :] == CALLER
    assert set(audio[len(CALLER) : -len(CALLER)]) <= {0xFF}
    assert len(audio) == frames * FRAME


def test_recstream_tracks_extracts_a_streams_recording(
    env: Env, calls: dict[str, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    # The SIPREC front door's `recstream tracks` reads this front door's recordings too.
    from recstream.cli import main

    out = env.root / "extracted"  # decrypted on purpose: the one place plaintext may be
    out.mkdir()
    path = _call_file(env, calls["dtmf"])
    code = main(["tracks", str(path), "--keystore", str(env.keystore), "--password-file",
                 str(env.root / "keystore.pass"), "--out-dir", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    raw = (out / "track-1.raw").read_bytes()
    assert raw[: len(CALLER)] == CALLER and (out / "track-2.raw").read_bytes() == AGENT
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True
    inbound = next(t for t in summary["tracks"] if t["track"] == 1)
    assert [e["digit"] for e in inbound["events"]] == ["7", "#"]


def test_no_personal_data_outside_envelopes(
    env: Env, server: Server, calls: dict[str, dict[str, object]]
) -> None:
    assert len(calls) == 3
    digits = PHONE.lstrip("+").encode()
    for path in env.root.rglob("*"):
        skip = path.name.endswith(".trace.jsonl") or "extracted" in path.parts
        if path.is_file() and not skip:
            assert digits not in path.read_bytes(), f"{path} holds the caller's number"
    for secret in SECRETS.values():
        assert secret not in env.audit.read_text()
    assert server.alive()
    log = server.stop()  # the last test: everything the server wrote is in hand
    assert digits.decode() not in log
    assert "Traceback" not in log
