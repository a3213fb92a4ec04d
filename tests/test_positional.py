"""The positional file path (issue 20): file to file, each thread pread, AES, pwrite.

Byte-identical to Cobblestone-256 (pyca's own, same salt) at every stripe
boundary and any number of threads, at any offsets; the same errors at the same
segment as the stream path for damaged, truncated and shrinking inputs; whole
envelopes (signed ones too) through ``EnvelopeEncryptor.encrypt_file`` and
``EnvelopeDecryptor.decrypt_file``; and the CLI's ``encrypt``/``decrypt`` on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.cobblestone import Cobblestone256Encryptor
from cryptography.hazmat.primitives.asymmetric import ec

from recstream import errors
from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor
from recstream.format import BODY_PREFIX_BYTES, SALT_BYTES, SEGMENT_SIZE, SEGMENT_WIRE_SIZE
from recstream.parallel import (
    STRIPE_SEGMENTS,
    InputShrankError,
    ParallelStreamDecryptor,
    ParallelStreamEncryptor,
    SegmentPool,
)
from recstream.reader import FileSource
from recstream.signer import Signer
from recstream.signing import SignatureStatus, verify_source
from recstream.stream import StreamDecryptor
from tests.signing_helpers import Ca
from tests.test_parallel import CONTEXT, KEY, data_of, first_error

SEG = SEGMENT_SIZE
STRIPE = STRIPE_SEGMENTS * SEG
SIZES = [0, 1, SEG - 1, SEG, SEG + 1, STRIPE - 1, STRIPE, STRIPE + 1, 2 * STRIPE + 3 * SEG + 7]


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}threads")
def pool(request: pytest.FixtureRequest) -> Iterator[SegmentPool]:
    p = SegmentPool(request.param)
    yield p
    p.shutdown()


def _file(path: Path, data: bytes) -> int:
    path.write_bytes(data)
    return os.open(path, os.O_RDWR)


def cobblestone(data: bytes) -> bytes:
    enc = Cobblestone256Encryptor(KEY, CONTEXT)
    return enc.update(data) + enc.finalize()


@pytest.mark.parametrize("size", SIZES)
def test_encrypt_from_file_identical_to_cobblestone(
    size: int, pool: SegmentPool, tmp_path: Path
) -> None:
    data = data_of(size, seed=size)
    want = cobblestone(data)
    src = _file(tmp_path / "in", b"junk" + data + b"more")  # offsets not zero, more after
    dst = _file(tmp_path / "out", b"")
    try:
        enc = ParallelStreamEncryptor(KEY, CONTEXT, pool, salt=want[:SALT_BYTES])
        n = enc.update_from_file((src, 4), size, (dst, 9))
        assert n == BODY_PREFIX_BYTES + size // SEG * SEGMENT_WIRE_SIZE
        tail = enc.finalize()
        os.pwrite(dst, tail, 9 + n)
        assert enc.segments == size // SEG + 1
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "out").read_bytes()[9:] == want
    # And back, positionally, from a body at an offset.
    src = _file(tmp_path / "body", b"x" * 11 + want)
    dst = _file(tmp_path / "plain", b"")
    try:
        dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
        consumed, written = dec.update_from_file((src, 11), len(want), (dst, 0))
        assert 0 < len(want) - consumed <= SEGMENT_WIRE_SIZE or consumed == 0
        rest = want[consumed:]
        plain = (tmp_path / "plain").read_bytes()[:written] + dec.update(rest) + dec.finalize()
    finally:
        os.close(src)
        os.close(dst)
    assert plain == data


def _positional_error(body: bytes, pool: SegmentPool, tmp_path: Path) -> tuple[type, int]:
    """The first error of the positional path over ``body``, as ``first_error`` gives it."""
    src = _file(tmp_path / "bad", body)
    dst = _file(tmp_path / "badout", b"")
    dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
    try:
        consumed, _ = dec.update_from_file((src, 0), len(body), (dst, 0))
        dec.update(body[consumed:])
        dec.finalize()
    except errors.IntegrityError as exc:
        with pytest.raises(errors.StreamStateError):
            dec.update(b"")
        return type(exc), getattr(exc, "index", -1)
    finally:
        os.close(src)
        os.close(dst)
    raise AssertionError("the damaged body decrypted")


NSEG = 2 * STRIPE_SEGMENTS + 5  # three stripes, the last one short
CUT = BODY_PREFIX_BYTES + 70 * SEGMENT_WIRE_SIZE  # a body cut after segment 69


@pytest.mark.parametrize(
    "bad", [[0], [63], [64], [130], [NSEG - 1], [NSEG], [5, 70], [129, 64]], ids=str
)
def test_damaged_segment_reported_like_the_stream_path(
    bad: list[int], pool: SegmentPool, tmp_path: Path
) -> None:
    body = bytearray(cobblestone(data_of(NSEG * SEG + 100)))
    for i in bad:  # index NSEG is the short final segment
        body[BODY_PREFIX_BYTES + i * SEGMENT_WIRE_SIZE + 40] ^= 0x04
    want = first_error(StreamDecryptor(KEY, CONTEXT), bytes(body), 1 << 20)
    assert _positional_error(bytes(body), pool, tmp_path) == want
    assert want[1] == min(bad)


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda b: b[:CUT], errors.TruncatedStreamError),
        (
            lambda b: b[: CUT + 5],
            errors.TruncatedStreamError,
        ),
        (lambda b: b[:-1], errors.FinalSegmentAuthError),
        (lambda b: b + b"x", errors.FinalSegmentAuthError),
        (lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:], errors.CommitmentError),
    ],
    ids=["no_final", "cut_final", "final_cut", "trailing_byte", "commitment"],
)
def test_malformed_bodies_refused(
    mangle: Any, error: type[Exception], pool: SegmentPool, tmp_path: Path
) -> None:
    body = mangle(cobblestone(data_of(NSEG * SEG + 100)))
    assert first_error(StreamDecryptor(KEY, CONTEXT), body, 1 << 20)[0] is error
    assert _positional_error(body, pool, tmp_path)[0] is error


def test_a_shrinking_input_is_refused(pool: SegmentPool, tmp_path: Path) -> None:
    data = data_of(3 * STRIPE)
    src = _file(tmp_path / "in", data[: 2 * STRIPE + 5])  # says 3 stripes, has 2 and a bit
    dst = _file(tmp_path / "out", b"")
    try:
        enc = ParallelStreamEncryptor(KEY, CONTEXT, pool)
        with pytest.raises(InputShrankError) as info:
            enc.update_from_file((src, 0), len(data), (dst, 0))
        assert info.value.index == 2 * STRIPE_SEGMENTS
        with pytest.raises(errors.StreamStateError):  # poisoned
            enc.finalize()
        body = cobblestone(data)
        os.truncate(tmp_path / "in", 0)
        os.pwrite(src, body[: BODY_PREFIX_BYTES + 100 * SEGMENT_WIRE_SIZE], 0)
        dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
        with pytest.raises(errors.TruncatedStreamError):
            dec.update_from_file((src, 0), len(body), (dst, 0))
    finally:
        os.close(src)
        os.close(dst)


def test_positional_needs_a_fresh_stream(tmp_path: Path) -> None:
    pool = SegmentPool(2)
    fd = _file(tmp_path / "f", bytes(100))
    try:
        enc = ParallelStreamEncryptor(KEY, CONTEXT, pool)
        enc.update(b"abc")
        with pytest.raises(ValueError, match="fresh"):
            enc.update_from_file((fd, 0), 10, (fd, 0))
        dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
        dec.update(cobblestone(b"abc")[:60])
        with pytest.raises(ValueError, match="fresh"):
            dec.update_from_file((fd, 0), 10, (fd, 0))
    finally:
        os.close(fd)
        pool.shutdown()


# --- whole envelopes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make()


@pytest.fixture(scope="module")
def signer(ca: Ca) -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Signer.from_objects(key, ca.issue("recorder-pos", key))


@pytest.mark.parametrize("size", [0, 5, 3 * STRIPE + 1234])
def test_envelopes_through_files(
    size: int,
    alice: Any,
    metadata: Any,
    ca: Ca,
    signer: Signer,
    pool: SegmentPool,
    tmp_path: Path,
) -> None:
    data = data_of(size, seed=7)
    src = _file(tmp_path / "in", data)
    dst = _file(tmp_path / "env", b"")
    try:
        enc = EnvelopeEncryptor([alice.recipient], metadata, pool=pool)
        assert enc.positional
        written = enc.encrypt_file(src, size, dst)
    finally:
        os.close(src)
        os.close(dst)
    envelope = (tmp_path / "env").read_bytes()
    assert len(envelope) == written
    dec = EnvelopeDecryptor(alice.keys)  # the single-thread stream path reads it
    assert dec.update(envelope) + dec.finalize() == data
    stream_signed = EnvelopeEncryptor([alice.recipient], metadata, signer=signer)
    signed = stream_signed.update(data) + stream_signed.finalize()
    signed_enc = EnvelopeEncryptor([alice.recipient], metadata, pool=pool, signer=signer)
    assert signed_enc.positional
    src = _file(tmp_path / "in", data)
    dst = _file(tmp_path / "signed-pos.rsv", b"")
    try:
        assert signed_enc.encrypt_file(src, size, dst) == len(signed)
        report = verify_source(FileSource(dst), ca.pem)  # digests made by the threads
        assert report.status is SignatureStatus.VALID, report.reason
    finally:
        os.close(src)
        os.close(dst)
    damaged = bytearray((tmp_path / "signed-pos.rsv").read_bytes())
    damaged[len(signed_enc.header) + BODY_PREFIX_BYTES + 5] ^= 1
    (tmp_path / "damaged.rsv").write_bytes(damaged)
    fd = os.open(tmp_path / "damaged.rsv", os.O_RDONLY)
    try:
        assert verify_source(FileSource(fd), ca.pem).status is SignatureStatus.INVALID
    finally:
        os.close(fd)
    for name, blob in (("plain", envelope), ("signed", signed)):
        src = _file(tmp_path / f"{name}.rsv", blob)
        out = _file(tmp_path / f"{name}.out", b"")
        try:
            dec = EnvelopeDecryptor(alice.keys, pool=pool)
            assert dec.decrypt_file(src, len(blob), out) == size
        finally:
            os.close(src)
            os.close(out)
        assert (tmp_path / f"{name}.out").read_bytes() == data, name
        assert dec.segments == size // SEG + 1
        assert (dec.trailer is not None) == (name == "signed")


def test_decrypt_file_errors_are_the_stream_paths(
    alice: Any, bob: Any, metadata: Any, tmp_path: Path
) -> None:
    pool = SegmentPool(2)
    enc = EnvelopeEncryptor([alice.recipient], metadata)
    envelope = enc.update(data_of(2 * STRIPE)) + enc.finalize()
    header = len(enc.header)
    damaged = bytearray(envelope)
    damaged[header + BODY_PREFIX_BYTES + 100 * SEGMENT_WIRE_SIZE + 9] ^= 1
    cases: list[tuple[bytes, Any, type[Exception]]] = [
        (envelope, bob.keys, errors.KeyAccessError),
        (bytes(damaged), alice.keys, errors.SegmentAuthError),
        (envelope[: header + 5000], alice.keys, errors.FinalSegmentAuthError),
        (
            envelope[: header + BODY_PREFIX_BYTES + 3 * SEGMENT_WIRE_SIZE],
            alice.keys,
            errors.TruncatedStreamError,
        ),
        (envelope[: header - 3], alice.keys, errors.TruncatedStreamError),
    ]
    try:
        for blob, keys, error in cases:
            stream = EnvelopeDecryptor(keys)
            with pytest.raises(error) as want:
                stream.update(blob)
                stream.finalize()
            src = _file(tmp_path / "e.rsv", blob)
            out = _file(tmp_path / "e.out", b"")
            try:
                dec = EnvelopeDecryptor(keys, pool=pool)
                with pytest.raises(error) as got:
                    if dec.decrypt_file(src, len(blob), out) is None:  # header unreadable
                        dec.update(blob)
                        dec.finalize()
            finally:
                os.close(src)
                os.close(out)
            assert type(got.value) is type(want.value)
            assert str(got.value) == str(want.value)
        src = _file(tmp_path / "empty", b"")
        try:
            assert EnvelopeDecryptor(alice.keys, pool=pool).decrypt_file(src, 0, src) is None
        finally:
            os.close(src)
    finally:
        pool.shutdown()


# --- the CLI --------------------------------------------------------------------------


def test_cli_bulk_path_round_trip_and_damage(
    alice: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "2")  # the pool, whatever the machine
    cert, key = alice.write(tmp_path)
    data = data_of(3 * STRIPE + 99, seed=5)
    (tmp_path / "in").write_bytes(data)
    taken: list[str] = []
    for cls, name in ((EnvelopeEncryptor, "encrypt_file"), (EnvelopeDecryptor, "decrypt_file")):
        real = getattr(cls, name)
        monkeypatch.setattr(
            cls, name, lambda *a, _r=real, _n=name, **k: (taken.append(_n), _r(*a, **k))[1]
        )
    assert main(["encrypt", "--cert", str(cert), str(tmp_path / "in"), str(tmp_path / "e")]) == 0
    assert main(["decrypt", "--key", str(key), str(tmp_path / "e"), str(tmp_path / "o")]) == 0
    assert (tmp_path / "o").read_bytes() == data
    assert taken == ["encrypt_file", "decrypt_file"]  # the positional path did the work
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "1")  # the stream path agrees
    assert main(["decrypt", "--key", str(key), str(tmp_path / "e"), str(tmp_path / "o1")]) == 0
    assert (tmp_path / "o1").read_bytes() == data
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "2")
    damaged = bytearray((tmp_path / "e").read_bytes())
    damaged[-3 * SEGMENT_WIRE_SIZE] ^= 0x10
    (tmp_path / "d").write_bytes(damaged)
    capsys.readouterr()
    code = main(["decrypt", "--key", str(key), str(tmp_path / "d"), str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "segment" in err
    assert not (tmp_path / "o2").exists()  # nothing of a failed decryption is left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o2")]


def test_file_pool_for_ignores_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from recstream import parallel

    monkeypatch.delenv("RECSTREAM_BULK_THREADS", raising=False)
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)
    monkeypatch.setattr(parallel.os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    assert parallel.pool_for(1 << 30) is None  # the stream path still stands aside
    big = parallel.file_pool_for(1 << 30)
    assert big is not None and big.threads >= 2  # the positional path does not
    assert parallel.file_pool_for(1000) is None  # small: one read, no pool
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "1")
    assert parallel.file_pool_for(1 << 30) is None  # the operator says one thread
    monkeypatch.delenv("RECSTREAM_BULK_THREADS")
    monkeypatch.setattr(parallel, "_cpus", lambda: 1)
    assert parallel.file_pool_for(1 << 30) is None  # one CPU in our affinity
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "2")
    assert parallel.file_pool_for(1 << 30) is not None


# --- in order, to stdout or a pipe --------------------------------------------------------


def _drain(fd: int, sink: list[bytes], piece: int) -> None:
    while chunk := os.read(fd, piece):
        sink.append(chunk)


def _through_pipe(write: Any, piece: int = 1 << 16) -> bytes:
    """Run ``write(fd)`` into a pipe whose far end a thread drains; return what came out."""
    import threading

    r, w = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(r, got, piece))
    reader.start()
    try:
        write(w)
    finally:
        os.close(w)
        reader.join(timeout=60)
        os.close(r)
    return b"".join(got)


@pytest.mark.parametrize("size", [0, SEG + 1, 3 * STRIPE + 17])
def test_ordered_output_to_a_pipe(size: int, pool: SegmentPool, tmp_path: Path) -> None:
    data = data_of(size, seed=11)
    want = cobblestone(data)
    src = _file(tmp_path / "in", data)
    try:
        enc = ParallelStreamEncryptor(KEY, CONTEXT, pool, salt=want[:SALT_BYTES])

        def seal(fd: int) -> None:
            enc.update_from_file((src, 0), size, (fd, None))
            os.write(fd, enc.finalize())

        assert _through_pipe(seal) == want
    finally:
        os.close(src)
    body = _file(tmp_path / "body", want)
    try:
        dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
        box: list[bytes] = []

        def open_(fd: int) -> None:
            consumed, _ = dec.update_from_file((body, 0), len(want), (fd, None))
            box.append(dec.update(want[consumed:]) + dec.finalize())

        assert _through_pipe(open_) + box[0] == data
    finally:
        os.close(body)


@pytest.mark.parametrize("bad_stripe", [0, 1, 3])
def test_ordered_output_stops_before_a_failed_stripe(
    bad_stripe: int, pool: SegmentPool, tmp_path: Path
) -> None:
    data = data_of(5 * STRIPE + 9, seed=12)
    body = bytearray(cobblestone(data))
    bad = bad_stripe * STRIPE_SEGMENTS + 10
    body[BODY_PREFIX_BYTES + bad * SEGMENT_WIRE_SIZE + 3] ^= 0x20
    src = _file(tmp_path / "body", bytes(body))
    try:
        dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
        errors_seen: list[int] = []

        def open_(fd: int) -> None:
            try:
                dec.update_from_file((src, 0), len(body), (fd, None))
            except errors.SegmentAuthError as exc:
                errors_seen.append(exc.index)

        out = _through_pipe(open_)
    finally:
        os.close(src)
    assert errors_seen == [bad]
    # Only whole stripes before the bad one, and only authenticated plaintext.
    assert len(out) % STRIPE == 0 and len(out) <= bad_stripe * STRIPE
    assert out == data[: len(out)]


def test_cli_to_stdout_on_the_bulk_path(alice: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    cert, key = alice.write(tmp_path)
    data = data_of(2 * STRIPE + 5, seed=13)
    (tmp_path / "in").write_bytes(data)
    env = {**os.environ, "RECSTREAM_BULK_THREADS": "2"}
    cli = [sys.executable, "-m", "recstream"]
    enc = subprocess.run(
        [*cli, "encrypt", "--cert", str(cert), str(tmp_path / "in"), "-"],
        capture_output=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert enc.returncode == 0, enc.stderr
    (tmp_path / "e").write_bytes(enc.stdout)
    dec = subprocess.run(
        [*cli, "decrypt", "--key", str(key), str(tmp_path / "e"), "-"],
        capture_output=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == data
    damaged = bytearray(enc.stdout)
    damaged[len(enc.stdout) - STRIPE] ^= 1  # in the second stripe of the body
    (tmp_path / "d").write_bytes(damaged)
    bad = subprocess.run(
        [*cli, "decrypt", "--key", str(key), str(tmp_path / "d"), "-"],
        capture_output=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr
    assert bad.stdout == data[: len(bad.stdout)] and len(bad.stdout) <= STRIPE


def test_cli_encrypt_refuses_an_input_that_shrank(
    alice: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The size taken when encryption starts is more than the file holds by the time it
    is read (as if truncated meanwhile): refused, exit 2, nothing written."""
    from recstream.cli import envelope as cli_envelope

    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "2")
    cert, _ = alice.write(tmp_path)
    (tmp_path / "in").write_bytes(data_of(2 * STRIPE))
    real_init = cli_envelope._Counted.__init__

    def truncated_meanwhile(self: Any, fh: Any, *, snapshot: bool) -> None:
        real_init(self, fh, snapshot=snapshot)
        self.start += STRIPE  # the file was a stripe longer when it was looked at

    monkeypatch.setattr(cli_envelope._Counted, "__init__", truncated_meanwhile)
    capsys.readouterr()
    code = main(["encrypt", "--cert", str(cert), str(tmp_path / "in"), str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "shrank while it was read" in err and "nothing was written" in err
    assert "Traceback" not in err
    assert not (tmp_path / "e").exists()


def test_ordered_output_many_threads_and_back_pressure(tmp_path: Path) -> None:
    """Four threads, nine stripes, a pipe read in small pieces: the writes wait on the
    reader while stripes finish ahead of them; the bytes still come out in order."""
    pool = SegmentPool(4)
    data = data_of(9 * STRIPE + 3, seed=21)
    want = cobblestone(data)
    src = _file(tmp_path / "in", data)
    try:
        for _ in range(3):
            enc = ParallelStreamEncryptor(KEY, CONTEXT, pool, salt=want[:SALT_BYTES])

            def seal(fd: int, enc: ParallelStreamEncryptor = enc) -> None:
                enc.update_from_file((src, 0), len(data), (fd, None))
                os.write(fd, enc.finalize())

            assert _through_pipe(seal, piece=4096) == want
    finally:
        os.close(src)
        pool.shutdown()


def test_cli_decrypt_from_stdin_part_way_through_a_file(alice: Any, tmp_path: Path) -> None:
    """stdin a regular file whose position is not 0 (the shell or a script read some of it):
    the bulk path would read from offset 0, so the stream path reads from where stdin is."""
    import subprocess
    import sys

    cert, key = alice.write(tmp_path)
    data = data_of(2 * STRIPE, seed=31)
    (tmp_path / "in").write_bytes(data)
    env = {**os.environ, "RECSTREAM_BULK_THREADS": "2"}
    cli = [sys.executable, "-m", "recstream"]
    assert main(["encrypt", "--cert", str(cert), str(tmp_path / "in"), str(tmp_path / "e")]) == 0
    (tmp_path / "junk+e").write_bytes(b"0123456789" + (tmp_path / "e").read_bytes())
    with (tmp_path / "junk+e").open("rb", buffering=0) as fh:
        fh.read(10)  # the position a caller left stdin at
        proc = subprocess.run(
            [*cli, "decrypt", "--key", str(key), "-", str(tmp_path / "o")],
            stdin=fh, capture_output=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o").read_bytes() == data


@pytest.mark.parametrize("threads", ["1", "2"])
def test_ctrl_c_with_output_to_a_pipe_nobody_reads(
    alice: Any, tmp_path: Path, threads: str
) -> None:
    """Ctrl-C exits 130 even while a writer sits in a write to a full pipe (a pager that
    stopped reading): before, the error path joined that writer, and it never returned.
    '1' is the stream pump's writer thread, '2' the bulk pool's in-order output."""
    import signal
    import subprocess
    import sys

    cert, key = alice.write(tmp_path)
    data = data_of(8 * STRIPE + 3, seed=17)  # far more than a pipe holds
    (tmp_path / "in").write_bytes(data)
    env = {**os.environ, "RECSTREAM_BULK_THREADS": threads}
    cli = [sys.executable, "-m", "recstream"]
    sealed = subprocess.run([*cli, "encrypt", "--cert", str(cert), str(tmp_path / "in"),
                             str(tmp_path / "e")], env=env, capture_output=True, timeout=120,
                            check=False)  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr
    for argv in (
        ["encrypt", "--cert", str(cert), str(tmp_path / "in"), "-"],
        ["decrypt", "--key", str(key), str(tmp_path / "e"), "-"],
    ):
        r, w = os.pipe()
        try:
            proc = subprocess.Popen([*cli, *argv], stdout=w, stderr=subprocess.PIPE, env=env)
            os.close(w)
            w = -1
            assert os.read(r, 1)  # output has started; nobody reads the rest
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=120)  # a hang guard only
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"{argv[0]} did not exit after Ctrl-C (threads={threads})")
            err = proc.stderr.read() if proc.stderr else b""
            assert code == 130, err
            assert b"Traceback" not in err
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
