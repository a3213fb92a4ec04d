"""recstream against the spec-derived vectors in tests/vectors (see its README.md).

The vectors come from tests/vectors/generate.py, an independent implementation of
docs/FORMAT.md that never imports recstream.  Each file is decrypted through the
public API, fed whole, in 1,000-byte pieces and (for small files) byte by byte,
and must end as its ``expect`` line says, releasing exactly the plaintext whose
SHA-256 is its ``payload`` line (CCTV's rule).
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from recstream.envelope import EnvelopeDecryptor, Identity, IdentitySet
from recstream.errors import (
    EmptyInputError,
    EnvelopeFormatError,
    HeaderAuthError,
    IntegrityError,
    KeyUnwrapError,
    NoMatchingKeyError,
    TruncatedStreamError,
)
from recstream.format import NeedData, parse_header
from recstream.pki.certs import load_private_key

VECTOR_DIR = Path(__file__).parent / "vectors"
FILES = sorted(VECTOR_DIR.glob("*.rsv"))
BYTEWISE_MAX = 4096  # feed files up to this size one byte at a time too

# FORMAT.md §8 expectations -> the recstream error family that must be raised.
EXPECTED_ERROR: dict[str, type[Exception]] = {
    "header failure": EnvelopeFormatError,
    "no match": NoMatchingKeyError,
    "unwrap failure": KeyUnwrapError,
    "header auth failure": HeaderAuthError,
    "payload failure": IntegrityError,
}
# A file that ends inside the header is a header failure, but a streaming decoder
# only learns it at end of input: recstream raises TruncatedStreamError from finalize.
TRUNCATED_HEADER_PREFIX = "header_truncated_"


@dataclass(frozen=True)
class VectorFile:
    name: str
    expect: str
    identity: str
    payload: str
    comment: str
    envelope: bytes

    @classmethod
    def read(cls, path: Path) -> VectorFile:
        text, blank, envelope = path.read_bytes().partition(b"\n\n")
        assert blank, f"{path.name}: no blank line after the text header"
        fields = dict(line.split(": ", 1) for line in text.decode().splitlines())
        return cls(
            path.stem,
            fields["expect"],
            fields["identity"],
            fields["payload"],
            fields["comment"],
            envelope,
        )


@dataclass(frozen=True)
class Outcome:
    released: bytes  # outputs of the calls that returned
    error: Exception | None
    stage: str  # "update" or "finalize": where error was raised


@cache
def key_set(name: str) -> IdentitySet:
    pem = (VECTOR_DIR / "keys" / f"{name}.key.pem").read_bytes()
    return IdentitySet([Identity.from_private_key(load_private_key(pem))])


def decrypt(vector: VectorFile, piece: int | None) -> Outcome:
    data = vector.envelope
    pieces = [data] if piece is None else [data[i : i + piece] for i in range(0, len(data), piece)]
    dec = EnvelopeDecryptor(key_set(vector.identity))
    released = bytearray()
    for chunk in pieces:
        try:
            released += dec.update(chunk)
        except Exception as exc:
            return Outcome(bytes(released), exc, "update")
    try:
        released += dec.finalize()
    except Exception as exc:
        return Outcome(bytes(released), exc, "finalize")
    return Outcome(bytes(released), None, "")


def feed_modes(path: Path) -> list[tuple[Path, int | None]]:
    modes: list[int | None] = [None, 1000]
    if path.stat().st_size <= BYTEWISE_MAX:
        modes.append(1)
    return [(path, m) for m in modes]


CASES = [case for path in FILES for case in feed_modes(path)]
CASE_IDS = [f"{p.stem}-{'whole' if m is None else f'by{m}'}" for p, m in CASES]


def test_vectors_exist() -> None:
    assert len(FILES) > 50, "run tests/vectors/generate.py"


@pytest.mark.parametrize(("path", "piece"), CASES, ids=CASE_IDS)
def test_vector(path: Path, piece: int | None) -> None:
    vector = VectorFile.read(path)
    out = decrypt(vector, piece)
    payload = hashlib.sha256(out.released).hexdigest()
    if vector.expect == "success":
        assert out.error is None, f"{vector.comment}: raised {out.error!r}"
        assert payload == vector.payload
        return
    check_error(vector, out)
    # When update() raises, the plaintext it had authenticated in that call is
    # lost with it, so whole-file feeding can only be checked at finalize.
    if piece is not None or out.stage == "finalize":
        assert payload == vector.payload, f"released {len(out.released)} bytes: {vector.comment}"


def check_error(vector: VectorFile, out: Outcome) -> None:
    what = f"{vector.expect} ({vector.comment}): got {out.error!r} from {out.stage or 'nothing'}"
    if vector.name == "header_truncated_empty_file":
        # no bytes at all: not a truncated envelope, not an envelope (a header failure)
        assert isinstance(out.error, EmptyInputError), what
        assert out.stage == "finalize", what
        return
    if vector.name.startswith(TRUNCATED_HEADER_PREFIX):
        assert vector.expect == "header failure"
        assert isinstance(out.error, TruncatedStreamError), what
        assert out.stage == "finalize", what
        return
    assert isinstance(out.error, EXPECTED_ERROR[vector.expect]), what
    if vector.expect == "payload failure":
        assert not isinstance(out.error, HeaderAuthError), what
    else:
        # The whole header is in the file, so it must be refused before finalize().
        assert out.stage == "update", what


# --- header fields of success vectors, and the generator itself ---------------


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rsv_generate", VECTOR_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@cache
def generated_facts() -> dict[str, Any]:
    return {v.name: v.facts for v in generator().build_all()}


SUCCESS = [p for p in FILES if VectorFile.read(p).expect == "success"]


@pytest.mark.parametrize("path", SUCCESS, ids=[p.stem for p in SUCCESS])
def test_success_header_fields(path: Path) -> None:
    facts = generated_facts()[path.stem]
    header = parse_header(VectorFile.read(path).envelope)
    assert not isinstance(header, NeedData)
    meta = header.metadata
    assert meta.recording_id == facts.recording_id
    assert meta.tenant == facts.tenant
    assert meta.media_type == facts.media_type
    assert meta.media_kind == facts.media_kind
    assert meta.created_ms == facts.created_ms
    assert header.cert_ids == facts.cert_ids


def test_generator_check() -> None:
    """Every vector on disk is what generate.py makes now, byte for byte."""
    script = VECTOR_DIR / "generate.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


SHAPED = [p for p in FILES if b"\nshape: " in p.read_bytes().partition(b"\n\n")[0]]


@pytest.mark.parametrize("path", SHAPED, ids=[p.stem for p in SHAPED])
def test_inspect_reports_the_shape_of_an_incomplete_body(path: Path) -> None:
    """FORMAT.md §6.1: what `inspect` says of a body, from its length alone."""
    from recstream.cli.envelope import describe
    from recstream.format import parse_header

    head, _, envelope = path.read_bytes().partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in head.decode().splitlines())
    header = parse_header(envelope)
    assert not isinstance(header, type(None))
    info = describe(header, len(envelope) - header.length)  # type: ignore[arg-type, union-attr]
    got = (
        f"complete={str(info['complete']).lower()} segments={info['segments']} "
        f"plaintext_length={info['plaintext_length']}"
    )
    assert got == fields["shape"]


def test_shaped_vectors_exist() -> None:
    assert len(SHAPED) >= 10, "run tests/vectors/generate.py"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("success_created_ms_zero", "1970-01-01T00:00:00.000Z"),
        ("success_created_ms_last_date", "9999-12-31T23:59:59.999Z"),
        ("success_created_ms_max", None),
    ],
)
def test_created_ms_display(name: str, shown: str | None) -> None:
    """FORMAT.md §3: any created_ms is valid; dates up to year 9999, else the number."""
    from recstream.cli.envelope import format_created
    from recstream.format import parse_header

    envelope = (VECTOR_DIR / f"{name}.rsv").read_bytes().partition(b"\n\n")[2]
    header = parse_header(envelope)
    assert format_created(header.metadata.created_ms) == shown  # type: ignore[union-attr]


def test_cert_id_decides_when_the_decoder_holds_both_certificates() -> None:
    """FORMAT.md §4: a stanza whose cert_id and key_id name different held keys goes to
    cert_id's, whatever order the keys are held in: one unwrap, which fails here."""
    from cryptography import x509

    from recstream.errors import KeyUnwrapError

    def ident(name: str) -> Identity:
        key = load_private_key((VECTOR_DIR / "keys" / f"{name}.key.pem").read_bytes())
        pem = (VECTOR_DIR / "keys" / f"{name}.cert.pem").read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        return Identity.from_private_key(key, cert)

    envelope = (VECTOR_DIR / "success_cert_id_bob_key_id_alice.rsv").read_bytes()
    envelope = envelope.partition(b"\n\n")[2]
    for order in (["alice", "bob"], ["bob", "alice"]):
        dec = EnvelopeDecryptor(IdentitySet([ident(n) for n in order]))
        with pytest.raises(KeyUnwrapError):
            dec.update(envelope)
