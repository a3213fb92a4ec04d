"""Whole-process runners for the Python peers of ``bench peers``.

``python -m recstream.bench._peerproc aws encrypt|decrypt IN OUT KEY.pem``
(AWS Encryption SDK, raw RSA master key, streaming) and
``python -m recstream.bench._peerproc tink keygen|encrypt|decrypt ...``
(Tink streaming AEAD with a cleartext keyset).  Each run is a fresh process, as
a user's script would be, so its wall time and peak RSS compare with
``recstream encrypt`` and the other tools.  The libraries are optional
(``pip install 'recstream[bench]'``) and loaded with importlib.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path
from typing import Any

CHUNK = 1 << 20  # bytes per read/write: large enough that Python overhead vanishes


def _copy(read: Any, write: Any) -> None:
    while chunk := read(CHUNK):
        write(chunk)


def _aws_key(pem: bytes, private: bool) -> Any:
    ids = importlib.import_module("aws_encryption_sdk.identifiers")
    keys = importlib.import_module("aws_encryption_sdk.internal.crypto.wrapping_keys")
    raw = importlib.import_module("aws_encryption_sdk.key_providers.raw")
    if not private:
        ser = importlib.import_module("cryptography.hazmat.primitives.serialization")
        pem = (
            ser.load_pem_private_key(pem, None)
            .public_key()
            .public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
        )
    kind = ids.EncryptionKeyType.PRIVATE if private else ids.EncryptionKeyType.PUBLIC
    return raw.RawMasterKey(
        provider_id="recstream-bench",
        key_id=b"bench",
        wrapping_key=keys.WrappingKey(
            wrapping_algorithm=ids.WrappingAlgorithm.RSA_OAEP_SHA256_MGF1,
            wrapping_key=pem,
            wrapping_key_type=kind,
        ),
    )


def aws(op: str, src: str, dst: str, key_path: str) -> None:
    """Encrypt to the public half, or decrypt with the private key, in streaming mode."""
    sdk = importlib.import_module("aws_encryption_sdk")
    ids = importlib.import_module("aws_encryption_sdk.identifiers")
    client = sdk.EncryptionSDKClient(
        commitment_policy=ids.CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    key = _aws_key(Path(key_path).read_bytes(), private=op == "decrypt")
    mode = "e" if op == "encrypt" else "d"
    with (
        open(src, "rb") as fin,
        open(dst, "wb") as fout,
        client.stream(mode=mode, source=fin, key_provider=key) as stream,
    ):
        _copy(stream.read, fout.write)


def tink(op: str, *args: str) -> None:
    """``keygen KEYSET`` (AES256_GCM_HKDF_1MB), or ``encrypt|decrypt IN OUT KEYSET``."""
    tk = importlib.import_module("tink")
    sa = importlib.import_module("tink.streaming_aead")
    clear = importlib.import_module("tink.cleartext_keyset_handle")
    sa.register()
    if op == "keygen":
        handle = tk.new_keyset_handle(sa.streaming_aead_key_templates.AES256_GCM_HKDF_1MB)
        text = io.StringIO()
        clear.write(tk.JsonKeysetWriter(text), handle)
        Path(args[0]).write_text(text.getvalue())
        return
    src, dst, keyset = args
    handle = clear.read(tk.JsonKeysetReader(Path(keyset).read_text()))
    primitive = handle.primitive(sa.StreamingAead)
    if op == "encrypt":
        with (
            open(src, "rb") as fin,
            open(dst, "wb") as fout,
            primitive.new_encrypting_stream(fout, b"") as stream,
        ):
            _copy(fin.read, stream.write)
    else:
        with (
            open(src, "rb") as fin,
            open(dst, "wb") as fout,
            primitive.new_decrypting_stream(fin, b"") as stream,
        ):
            _copy(stream.read, fout.write)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("aws", "tink"):
        sys.stderr.write(__doc__ or "")
        return 2
    if argv[0] == "aws":
        aws(*argv[1:])
    else:
        tink(*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
