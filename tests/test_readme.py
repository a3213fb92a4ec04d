"""The README's Python examples run as written (with the files they name made here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import Party

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(
    index: int, tmp_path: Path, alice: Party, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pem = alice.cert.public_bytes(serialization.Encoding.PEM)
    for name in ("rec.pem", "cert.pem"):
        Path(name).write_bytes(pem)
    Path("key.pem").write_bytes(
        alice.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.makedirs("recordings", exist_ok=True)
    _keystore_with_acme(tmp_path)
    code = BLOCKS[index]
    exec(compile(code, f"README block {index}", "exec"), {"__name__": "__readme__"})


def _keystore_with_acme(directory: Path) -> None:
    """keystore.rsk (+ keystore.pass) with an active voice and screen certificate for acme."""
    import datetime as dt

    from recstream.format import MediaKind
    from recstream.keystore import create, update
    from tests.keystore_helpers import TINY_KDF, recording_cert

    password = b"correct horse battery staple"
    (directory / "keystore.pass").write_bytes(password + b"\n")
    create(directory / "keystore.rsk", password, kdf=TINY_KDF)
    with update(directory / "keystore.rsk", password) as ks:
        for kind in (MediaKind.VOICE, MediaKind.SCREEN):
            c = recording_cert(f"readme-{kind.name}")
            ks.add("acme", kind, c.cert, c.key, now=dt.datetime.now(dt.UTC))


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2
