"""Cobblestone-256 on every core: segments sealed and opened on a small thread pool.

``Cobblestone256Encryptor/Decryptor.update_into`` hold the GIL for the whole
call, so the bulk path used one core for AES while the other only copied.  The
body's segments are independent (docs/FORMAT.md §6.1: segment *i* is AES-GCM
under ``base_nonce XOR i``), and pyca's ``AESGCM.encrypt_into/decrypt_into``
release the GIL for inputs of 2 KiB and more, so a block of whole segments is
cut into one run per thread, each run sealed or opened at its own indices,
each into its own slice of the output.  The output is byte for byte what
Cobblestone writes (tests/test_parallel.py proves it against Cobblestone, the
vectors and Wycheproof): the salt and commitment first, the segments in order,
the final short segment last.

:class:`ParallelStreamEncryptor` and :class:`ParallelStreamDecryptor` are
drop-in twins of :class:`~recstream.stream.StreamEncryptor` and
:class:`~recstream.stream.StreamDecryptor` (same states, errors and sizes).
The single-thread Cobblestone path stays where it is faster: :func:`pool_for`
gives no pool for small inputs or a single core, and the live writer never
uses one (a live recording seals one segment at a time).  A small input on a
worker thread (``decrypt --out-dir`` and batch jobs, several files at once)
gets :data:`GIL_FREE`, a pool of the caller's thread alone: its segments are
opened by ``AESGCM`` calls that release the GIL, so another thread's RSA
unwrap or AES runs meanwhile (issue 20: many short recordings on 2 threads).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from recstream import _crypto
from recstream.durable import write_all
from recstream.errors import (
    FinalSegmentAuthError,
    LimitExceededError,
    SegmentAuthError,
    TruncatedStreamError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    MAX_SEGMENTS,
    SALT_BYTES,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    TAG_BYTES,
    Buffer,
)
from recstream.stream import StreamDecryptor, _Machine, _Op

__all__ = [
    "GIL_FREE",
    "MIN_PARALLEL_BYTES",
    "THREADS_ENV",
    "InputShrankError",
    "ParallelStreamDecryptor",
    "ParallelStreamEncryptor",
    "SegmentPool",
    "SignatureSink",
    "default_pool",
    "file_pool_for",
    "pool_for",
]

# Below this many segments in one call, handing a run to another thread costs
# more than it saves (a handoff is ~20-50 us; a segment ~3-6 us of AES here).
MIN_PARALLEL_SEGMENTS: Final = 8
# Inputs smaller than this stay on the single-thread Cobblestone path: the
# pump's blocks are 1 MiB, so a smaller file is one call with nothing to share.
MIN_PARALLEL_BYTES: Final = 1 << 20
# More threads than this buy nothing: two runs already keep AES ahead of the
# page-cache copies on this machine, and each thread is another stack.
MAX_THREADS: Final = 4
# Segments a thread takes at a time (128 KiB): small enough that two threads
# share a 1 MiB block evenly, large enough that taking one is ~1% of its work.
RUN_SEGMENTS: Final = 8
# The pool is left aside unless the load average leaves at least one core idle
# (on 2 cores: a load under 1.0).  At loads of 1.7-5 on 2 cores the pool ran at
# 0.7-0.95x the single thread and cost 20-35% more CPU per byte: a thread that
# shares its core pays a contended GIL hand-off per segment (bench/RESULTS.md).
BUSY_MARGIN: Final = 1.0
# Environment variable that sets the bulk path's threads (1: the single-thread path).
THREADS_ENV: Final = "RECSTREAM_BULK_THREADS"
# Segments a thread reads, seals or opens and writes at a time on the positional
# file path (1 MiB of plaintext): one pread and one pwrite a stripe, each a
# single system call with the GIL released.
STRIPE_SEGMENTS: Final = 64

if TYPE_CHECKING:  # concurrent.futures (and logging) are 5 ms of every CLI start-up
    from concurrent.futures import ThreadPoolExecutor

_Run = Callable[[int, memoryview, memoryview], int]
_At = tuple[int, int]  # (file descriptor, offset)
_Dst = tuple[int, int | None]  # (file descriptor, offset or None: in order at its position)


class InputShrankError(Exception):
    """A positional read came back short: the input file shrank while it was read.

    Attributes:
        index: the first segment (index in the body) that could not be read whole.
    """

    def __init__(self, index: int) -> None:
        super().__init__(f"the input ended before segment {index} (it shrank while read)")
        self.index = index


def pread_exact(fd: int, into: memoryview, at: int) -> int:
    """Fill ``into`` from ``fd`` at offset ``at``; bytes read (fewer only at end of file)."""
    done = 0
    while done < len(into):
        n = os.preadv(fd, [into[done:]], at + done)
        if n == 0:
            break
        done += n
    return done


def put(dst: _Dst, data: Buffer) -> _Dst:
    """Write ``data`` at ``dst`` = (fd, offset, or None: the position); return what follows."""
    fd, at = dst
    if at is None:
        write_all(fd, data)
        return dst
    pwrite_all(fd, data, at)
    return fd, at + len(data)


def pwrite_all(fd: int, data: Buffer, at: int) -> None:
    """Write all of ``data`` to ``fd`` at offset ``at`` (short writes happen)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], at + done)


class SignatureSink(Protocol):
    """What a signed writer's body state takes (:class:`recstream.signer.BodySignature`)."""

    def update(self, body: Buffer) -> None: ...

    def add_digests(self, digests: Buffer) -> None: ...


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _InOrder:
    """Stripes written in index order to a descriptor (stdout, a pipe).

    A finished stripe is left here; whichever thread finds the next stripe due
    writes it and every consecutive one after it, so a thread never sits idle
    waiting for a slower one (on a loaded machine, one without a core) while
    there are buffers left: ``buffers`` stripes may be done ahead of the writer.
    Nothing is written once any thread failed, so nothing after a failed
    stripe ever reaches the output.
    """

    def __init__(
        self, fd: int, cond: threading.Condition, failures: list[BaseException], buffers: int,
        size: int,
    ) -> None:  # fmt: skip
        self._fd, self._cond, self._failures = fd, cond, failures
        self._free = [bytearray(size) for _ in range(buffers)]
        self._done: dict[int, tuple[bytearray, int]] = {}
        self._turn = 0
        self._writing = False

    def buffer(self) -> bytearray | None:
        """A free output buffer (waiting for one), or None once a thread failed."""
        with self._cond:
            while not self._free and not self._failures:
                self._cond.wait()
            return None if self._failures else self._free.pop()

    def put(self, index: int, buf: bytearray, n: int) -> None:
        """Stripe ``index`` is ``buf[:n]``: write it, and what follows it, if it is due."""
        with self._cond:
            self._done[index] = (buf, n)
            if self._writing:  # the thread writing will find it
                return
            self._writing = True
        while True:
            with self._cond:
                item = None if self._failures else self._done.pop(self._turn, None)
                if item is None:
                    self._writing = False
                    self._cond.notify_all()
                    return
            with memoryview(item[0]) as view:
                write_all(self._fd, view[: item[1]])
            with self._cond:
                self._turn += 1
                self._free.append(item[0])
                self._cond.notify_all()


class SegmentPool:
    """Runs of whole segments on ``threads`` threads (the caller's included).

    One pool may serve many streams at once (``decrypt --out-dir``'s jobs, the
    RCS's requests): each call waits only for its own runs.
    """

    def __init__(self, threads: int, *, min_segments: int = MIN_PARALLEL_SEGMENTS) -> None:
        if threads < 1 or min_segments < 1:
            msg = "a segment pool needs at least one thread and a run of at least one segment"
            raise ValueError(msg)
        self.threads = threads
        self.min_segments = min_segments
        self._executor: ThreadPoolExecutor | None = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(threads - 1, thread_name_prefix="recstream-aes")

    def seal(
        self, cipher: _crypto.SegmentCipher, first: int, data: memoryview, out: memoryview
    ) -> int:
        """Encrypt whole plaintext segments starting at index ``first`` into ``out``."""
        return self._split(cipher.seal_run, first, (data, out), (SEGMENT_SIZE, SEGMENT_WIRE_SIZE))

    def open(
        self, cipher: _crypto.SegmentCipher, first: int, data: memoryview, out: memoryview
    ) -> int:
        """Decrypt whole wire segments starting at index ``first`` into ``out``.

        Raises:
            SegmentAuthError: the lowest-numbered segment that failed.
        """
        return self._split(cipher.open_run, first, (data, out), (SEGMENT_WIRE_SIZE, SEGMENT_SIZE))

    def seal_digest(
        self,
        cipher: _crypto.SegmentCipher,
        first: int,
        data: memoryview,
        out: memoryview,
        digests: memoryview,
    ) -> int:
        """:meth:`seal`, and each run's §10.1 digests (32 bytes a segment) into ``digests``.

        The thread that seals a run hashes it right away, while its output is still
        in that core's cache: one hand-off per block for both jobs (signed writers).
        """

        def run(index: int, plain: memoryview, wire: memoryview) -> int:
            n = cipher.seal_run(index, plain, wire)
            at = (index - first) * _crypto.DIGEST_BYTES
            end = at + n // SEGMENT_WIRE_SIZE * _crypto.DIGEST_BYTES
            _crypto.digest_run(0, wire[:n], digests[at:end])
            return n

        return self._split(run, first, (data, out), (SEGMENT_SIZE, SEGMENT_WIRE_SIZE))

    def digest(self, wire: memoryview, out: memoryview) -> int:
        """BLAKE3 digests of whole wire segments into ``out``, 32 bytes each, in order
        (docs/FORMAT.md §10.1: what a signature commits to)."""
        return self._split(_crypto.digest_run, 0, (wire, out), (SEGMENT_WIRE_SIZE, 32))

    def _split(
        self, run: _Run, first: int, views: tuple[memoryview, memoryview], sizes: tuple[int, int]
    ) -> int:
        """Share the block's runs between the caller and the pool's threads.

        Runs are handed out from one counter (``next`` on an ``itertools.count``
        is atomic under the GIL), so a thread that gets no core on a loaded
        machine just finds nothing left, and the caller does the work itself:
        never worse than one thread by more than the per-segment overhead.
        """
        (data, out), (inp, outp) = views, sizes
        count = len(data) // inp
        if self._executor is None or count < max(2, self.min_segments):
            return run(first, data, out)
        step = max(1, min(RUN_SEGMENTS, count // self.threads))
        runs = -(-count // step)
        ticket = itertools.count()
        failures: list[SegmentAuthError] = []

        def take() -> int:
            done = 0
            while (k := next(ticket)) < runs:
                a, b = k * step, min(count, k * step + step)
                try:
                    done += run(first + a, data[a * inp : b * inp], out[a * outp : b * outp])
                except SegmentAuthError as exc:
                    failures.append(exc)
            return done

        futures = [self._executor.submit(take) for _ in range(self.threads - 1)]
        try:
            total = take()
        finally:
            # Every run writes into ``out``: wait for all of them, even after a failure.
            from concurrent.futures import wait

            wait(futures)
        total += sum(f.result() for f in futures)
        if failures:
            raise min(failures, key=lambda e: e.index)
        return total

    def seal_file(
        self,
        cipher: _crypto.SegmentCipher,
        count: int,
        src: _At,
        dst: _Dst,
        digests: memoryview | None = None,
    ) -> None:
        """Seal ``count`` whole segments (indices 0..count-1) read from ``src`` = (fd, offset)
        into ``dst`` = (fd, offset, or None: in order), positionally: see :meth:`_positional`.

        With ``digests`` (32 bytes a segment), the thread that seals a stripe also puts
        its §10.1 digests in their place there, while the stripe is in its cache.

        Raises:
            InputShrankError: ``src`` ends before ``count`` segments.
        """
        run: _Run = cipher.seal_run
        if digests is not None:
            into = digests

            def run(index: int, plain: memoryview, wire: memoryview) -> int:
                n = cipher.seal_run(index, plain, wire)
                at = index * _crypto.DIGEST_BYTES
                _crypto.digest_run(0, wire[:n], into[at : at + n // SEGMENT_WIRE_SIZE * 32])
                return n

        self._positional(run, count, src, dst, (SEGMENT_SIZE, SEGMENT_WIRE_SIZE))

    def open_file(self, cipher: _crypto.SegmentCipher, count: int, src: _At, dst: _Dst) -> None:
        """Open ``count`` whole wire segments (indices 0..count-1) from ``src`` into ``dst``.

        Raises:
            SegmentAuthError: the lowest-numbered segment that failed.
            InputShrankError: ``src`` ends before ``count`` segments.
        """
        self._positional(cipher.open_run, count, src, dst, (SEGMENT_WIRE_SIZE, SEGMENT_SIZE))

    def _positional(
        self,
        run: _Run,
        count: int,
        src: _At,
        dst: _Dst,
        sizes: tuple[int, int],
    ) -> None:
        """File to file, each thread on its own stripes: pread, seal or open, pwrite.

        Segment *i* sits at a fixed offset in both files, so each thread reads,
        transforms and writes whole stripes on its own: the page-cache copies run
        on every core like the AES, there is no queue, and a thread takes the GIL
        only between system calls and AES calls.  Stripes are handed out from one
        counter (as :meth:`_split`'s runs are).  With an offset, ``dst`` must be a
        file this process owns (writes land out of order; a failed run leaves it to
        be discarded, as the CLI's unnamed temporary output is).  With None
        (stdout, a pipe) each stripe is written at the descriptor's position in
        turn: a thread that finished stripe *k* waits until *k - 1* is out, so
        reads and AES still run on every core, writes one after another, and
        nothing after a failed stripe is ever written (the stream path's rule).
        """
        (src_fd, src_at), (dst_fd, dst_at), (inp, outp) = src, dst, sizes
        stripes = -(-count // STRIPE_SEGMENTS)
        ticket = itertools.count()
        failures: list[BaseException] = []
        cond = threading.Condition()
        order = (
            None
            if dst_at is not None
            else _InOrder(dst_fd, cond, failures, 2 * self.threads, STRIPE_SEGMENTS * outp)
        )

        def take() -> None:
            try:
                inbuf = bytearray(min(count, STRIPE_SEGMENTS) * inp)
                own = bytearray(0 if order is not None else min(count, STRIPE_SEGMENTS) * outp)
                with memoryview(inbuf) as iv:
                    while not failures:
                        # The buffer before the ticket: the thread holding the stripe
                        # due next always has its buffer, so in-order output never
                        # waits for a buffer that only that stripe's writing would free.
                        out = own if order is None else order.buffer()
                        if out is None or (k := next(ticket)) >= stripes:
                            return
                        a = k * STRIPE_SEGMENTS
                        want = min(STRIPE_SEGMENTS, count - a) * inp
                        got = pread_exact(src_fd, iv[:want], src_at + a * inp)
                        if got < want:
                            raise InputShrankError(a + got // inp)
                        # pread leaves the file position alone: move it as far as read,
                        # so that progress viewers (and tests) watching it see progress.
                        os.lseek(src_fd, src_at + a * inp + want, os.SEEK_SET)
                        with memoryview(out) as ov:
                            n = run(a, iv[:want], ov)
                            if order is None:
                                assert dst_at is not None
                                pwrite_all(dst_fd, ov[:n], dst_at + a * outp)
                        if order is not None:
                            order.put(k, out, n)
            except BaseException as exc:  # every thread stops at its next stripe
                with cond:
                    failures.append(exc)
                    cond.notify_all()

        futures = (
            [self._executor.submit(take) for _ in range(self.threads - 1)]
            if self._executor is not None and stripes > 1
            else []
        )
        try:
            take()
        finally:
            # Workers read and write our buffers' files: wait for every one -- unless
            # Ctrl-C stopped an in-order output.  A worker may then sit in a write to a
            # pipe that nobody reads, and would never return; the process is about to
            # exit (130) and nothing after a failed stripe is written (``_InOrder``).
            interrupted = order is not None and any(
                isinstance(e, KeyboardInterrupt) for e in failures
            )
            if futures and not interrupted:
                from concurrent.futures import wait

                wait(futures)
        if failures:
            known = [e for e in failures if isinstance(e, SegmentAuthError | InputShrankError)]
            if len(known) < len(failures):  # I/O errors, interrupts: as they are
                raise next(e for e in failures if e not in known)
            raise min(known, key=lambda e: e.index)  # the first in the file, as one thread finds

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


# The caller's thread alone (no executor): each segment through AESGCM, the GIL
# released for each.  For small inputs on worker threads, where Cobblestone would
# hold the GIL that the other files' threads need (bench small, issue 20).
GIL_FREE: Final = SegmentPool(1)

_default: list[SegmentPool] = []  # the shared pool, made on first use
_default_lock = threading.Lock()


def default_pool() -> SegmentPool:
    """The process's shared pool: one thread per core (at most :data:`MAX_THREADS`)."""
    with _default_lock:
        if not _default:
            _default.append(SegmentPool(_threads_wanted()))
        return _default[0]


def _threads_set() -> int | None:
    """``$RECSTREAM_BULK_THREADS``, when set to a positive number."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    return (
        min(MAX_THREADS, int(raw))
        if raw.isascii() and raw.isdigit() and len(raw) < 4 and int(raw) >= 1
        else None
    )


def _threads_wanted() -> int:
    return _threads_set() or min(MAX_THREADS, _cpus())


def _cores_busy() -> bool:
    """Whether other work already keeps the other cores busy (1-minute load average).

    Then a second thread gets no core of its own: it only adds GIL hand-offs, which
    cost 20-35% more CPU per byte for no gain in wall time (bench/RESULTS.md, issue 20).
    """
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return False
    return load >= _cpus() - BUSY_MARGIN


def pool_for(size: int | None) -> SegmentPool | None:
    """The pool for an input of ``size`` bytes (None: unknown, a pipe), or None.

    None means the single-thread Cobblestone path is the faster one: a small
    input on the main thread, one core, cores already busy with other work, or
    ``RECSTREAM_BULK_THREADS=1``.  A small input on any other thread gets
    :data:`GIL_FREE` (one thread, AES without the GIL: other threads run
    meanwhile).  ``RECSTREAM_BULK_THREADS=N`` (N > 1) uses the pool for large
    inputs whatever the load.
    """
    forced = _threads_set()
    if forced == 1:
        return None
    if size is not None and size < MIN_PARALLEL_BYTES:
        return None if threading.current_thread() is threading.main_thread() else GIL_FREE
    if forced is None and (_cpus() < 2 or _cores_busy()):
        return None
    return default_pool()


def file_pool_for(size: int) -> SegmentPool | None:
    """The pool for the positional file-to-file path (:meth:`SegmentPool.seal_file`), or None.

    Unlike the stream path's :func:`pool_for`, the load average has no say: a
    thread there hands off once per 1 MiB stripe (not per 128 KiB run) and does
    its own page-cache copies, and a thread that gets no core simply finds no
    stripe left.  Measured at loads of 3.5-6.4 on 2 cores (bench/RESULTS.md, issue
    20 round 3): the same CPU per byte as the single-thread path (within 5%, either
    way), wall time 0.7-1.4x of it round by round; with a core free, both cores
    copy and encrypt.  Every input of :data:`MIN_PARALLEL_BYTES` or more on two or
    more CPUs (the process's affinity) gets it; ``RECSTREAM_BULK_THREADS`` decides
    when set.
    """
    forced = _threads_set()
    if forced == 1 or size < MIN_PARALLEL_BYTES or (forced is None and _cpus() < 2):
        return None
    return default_pool()


class ParallelStreamEncryptor(_Machine):
    """:class:`~recstream.stream.StreamEncryptor`, its whole segments sealed on a pool.

    ``salt`` is the randomness seam (like Fernet's ``_encrypt_from_parts``):
    given, the output is deterministic, which is how the tests compare it with
    Cobblestone's.  Never pass one outside tests: a salt must be fresh.
    """

    __slots__ = ("_cipher", "_plain", "_pool", "_prefix", "_segments", "_sink", "_started")

    def __init__(
        self, input_key: Buffer, context: Buffer, pool: SegmentPool, *, salt: bytes | None = None
    ) -> None:
        super().__init__()
        salt = _crypto.new_salt() if salt is None else salt
        if len(salt) != SALT_BYTES:
            msg = f"salt must be {SALT_BYTES} bytes"
            raise ValueError(msg)
        if len(input_key) != 32:
            msg = "Cobblestone-256 needs a 32-byte input key"
            raise ValueError(msg)
        keys = _crypto.derive_body_keys(input_key, salt, context)
        self._cipher = _crypto.SegmentCipher.from_raw(keys.aead_key, keys.base_nonce)
        self._prefix = salt + keys.commitment
        self._pool = pool
        self._plain = bytearray()  # a partial segment, never a whole one
        self._segments = 0
        self._started = False
        self._sink: SignatureSink | None = None

    def output_size(self, n: int) -> int:
        """Exactly how many bytes :meth:`update_into` returns for ``n`` more input bytes."""
        prefix = 0 if self._started else BODY_PREFIX_BYTES
        return prefix + (len(self._plain) + n) // SEGMENT_SIZE * SEGMENT_WIRE_SIZE

    def update_into(self, data: Buffer, out: Buffer) -> int:
        """Encrypt ``data``; write the completed segments to ``out``; return bytes written.

        Raises:
            StreamStateError: after finalize or a failure.
            ValueError: ``out`` too small, or the format's segment limit (poisons).
        """
        self._enter(_Op.UPDATE)
        if self._segments + (len(self._plain) + len(data)) // SEGMENT_SIZE >= MAX_SEGMENTS:
            self._fail()
            msg = f"a recording may hold at most {MAX_SEGMENTS} segments (docs/FORMAT.md §5)"
            raise ValueError(msg)
        try:
            if len(out) < self.output_size(len(data)):
                msg = "output buffer too small"
                raise ValueError(msg)
            written = self._update(memoryview(data).cast("B"), memoryview(out).cast("B"))
        except BaseException:
            self._fail()
            raise
        self._leave(_Op.UPDATE)
        return written

    def update_from_file(self, src: _At, n: int, dst: _Dst) -> int:
        """Encrypt ``n`` bytes of ``src`` = (fd, offset) into ``dst`` = (fd, offset or None).

        The first call on a fresh stream only: the prefix and every whole
        segment are written at their offsets (or in order, offset None) by the pool's
        threads (:meth:`SegmentPool.seal_file`), the last partial segment is kept
        for :meth:`finalize`, exactly as :meth:`update_into` of the same bytes would
        (the output is byte-identical).  A signed stream's sink gets the prefix, then
        every whole segment's digest, made by the threads that sealed them.
        Returns the bytes written (from ``dst``'s offset on).

        Raises:
            InputShrankError: ``src`` ended before ``n`` bytes (the stream is poisoned).
            ValueError: not a fresh stream, or the format's segment limit.
        """
        self._enter(_Op.UPDATE)
        if self._started or self._plain:
            msg = "positional encryption needs a fresh stream"
            raise ValueError(msg)
        whole, rest = divmod(n, SEGMENT_SIZE)
        if whole >= MAX_SEGMENTS:
            self._fail()
            msg = f"a recording may hold at most {MAX_SEGMENTS} segments (docs/FORMAT.md §5)"
            raise ValueError(msg)
        src_fd, src_at = src
        sink = self._sink
        digests = None if sink is None else bytearray(whole * _crypto.DIGEST_BYTES)
        try:
            body = put(dst, self._prefix)
            self._started = True
            if digests is None:
                self._pool.seal_file(self._cipher, whole, src, body)
            else:
                with memoryview(digests) as into:
                    self._pool.seal_file(self._cipher, whole, src, body, into)
            if sink is not None and digests is not None:
                sink.update(self._prefix)
                sink.add_digests(digests)
            tail = bytearray(rest)
            with memoryview(tail) as view:
                if pread_exact(src_fd, view, src_at + whole * SEGMENT_SIZE) < rest:
                    raise InputShrankError(whole)
            self._plain = tail
            self._segments = whole
        except BaseException:
            self._fail()
            raise
        self._leave(_Op.UPDATE)
        return BODY_PREFIX_BYTES + whole * SEGMENT_WIRE_SIZE

    def attach_signature(self, sink: SignatureSink) -> None:
        """Feed a signed recording's state as the body is sealed (FORMAT.md §10.1).

        The prefix and segments sealed on the caller's thread go to ``sink.update``;
        each block sealed on the pool goes to ``sink.add_digests`` as digests made
        by the threads that sealed it.  The final segment is the caller's to feed.
        """
        if self._started:
            msg = "attach the signature before any output"
            raise ValueError(msg)
        self._sink = sink

    def _update(self, data: memoryview, out: memoryview) -> int:
        pos = written = 0
        sink = self._sink
        if not self._started:
            out[:BODY_PREFIX_BYTES] = self._prefix
            written = BODY_PREFIX_BYTES
            self._started = True
            if sink is not None:
                sink.update(out[:BODY_PREFIX_BYTES])
        if self._plain:
            pos = min(SEGMENT_SIZE - len(self._plain), len(data))
            self._plain += data[:pos]
            if len(self._plain) < SEGMENT_SIZE:
                return written
            with memoryview(self._plain) as whole:
                n = self._cipher.seal_run(self._segments, whole, out[written:])
            if sink is not None:
                sink.update(out[written : written + n])
            written += n
            self._segments += 1
            self._plain.clear()
        aligned = (len(data) - pos) // SEGMENT_SIZE * SEGMENT_SIZE
        if aligned:
            block = data[pos : pos + aligned]
            if sink is None:
                written += self._pool.seal(self._cipher, self._segments, block, out[written:])
            else:
                digests = bytearray(aligned // SEGMENT_SIZE * _crypto.DIGEST_BYTES)
                with memoryview(digests) as into:
                    written += self._pool.seal_digest(
                        self._cipher, self._segments, block, out[written:], into
                    )
                sink.add_digests(digests)
            self._segments += aligned // SEGMENT_SIZE
            pos += aligned
        self._plain += data[pos:]
        return written

    def update(self, data: Buffer) -> bytes:
        """Like :meth:`update_into`, returning a new ``bytes``."""
        out = bytearray(self.output_size(len(data)))
        return bytes(out[: self.update_into(data, out)])

    def finalize(self) -> bytes:
        """Seal the final (short) segment; the prefix too if nothing came out yet."""
        self._enter(_Op.FINALIZE)
        head = b"" if self._started else self._prefix
        out = bytearray(len(self._plain) + TAG_BYTES)
        self._cipher.seal_into(self._segments, self._plain, out)
        self._started = True
        self._plain.clear()
        self._segments += 1
        self._leave(_Op.FINALIZE)
        return head + bytes(out)

    @property
    def segments(self) -> int:
        """Segments emitted so far (the final one counts after finalize)."""
        return self._segments


class ParallelStreamDecryptor(StreamDecryptor):
    """:class:`~recstream.stream.StreamDecryptor`, its whole segments opened on a pool.

    The buffering (prefix, one partial segment) is the parent's; only feeding
    whole segments and the final one differ.  The commitment is checked as soon
    as the prefix is complete, before any segment is opened (C2SP).
    """

    __slots__ = ("_pool", "_segcipher")

    def __init__(self, input_key: Buffer, context: Buffer, pool: SegmentPool) -> None:
        super().__init__(input_key, context)
        self._pool = pool
        self._segcipher: _crypto.SegmentCipher | None = None

    def _feed(self, chunk: memoryview, out: memoryview) -> int:
        if self._segcipher is None:  # the prefix: salt and commitment
            self._segcipher = _crypto.SegmentCipher(self._key, chunk, self._context)
            self._consumed += len(chunk)
            return 0
        nseg = len(chunk) // SEGMENT_WIRE_SIZE
        if self.segments + nseg >= MAX_SEGMENTS:
            raise LimitExceededError("segments", self.segments + nseg, MAX_SEGMENTS - 1, 0)
        written = self._pool.open(self._segcipher, self.segments, chunk, out)
        self._consumed += len(chunk)
        self.segments += nseg
        return written

    def update_from_file(self, src: _At, n: int, dst: _Dst) -> tuple[int, int]:
        """Open the body in ``n`` bytes of ``src`` = (fd, offset) into ``dst`` = (fd, offset or
        None: in order at its position).

        The first call on a fresh stream only.  The prefix is read and its commitment
        checked, then every whole segment but the last is opened positionally by the
        pool's threads (:meth:`SegmentPool.open_file`).  The last 1..16,400 bytes are
        left unread: the caller feeds them to :meth:`update_into` and :meth:`finalize`,
        so the final segment, truncation and the trailer are judged exactly as on
        the stream path.  Returns (body bytes consumed, plaintext bytes written).

        Raises:
            CommitmentError, SegmentAuthError (the first bad segment),
            TruncatedStreamError (``src`` shrank while it was read),
            LimitExceededError, StreamStateError.
        """
        self._enter(_Op.UPDATE)
        try:
            if self._segcipher is not None or self._carry or self.segments:
                msg = "positional decryption needs a fresh stream"
                raise ValueError(msg)
            whole = max(0, (n - BODY_PREFIX_BYTES - 1) // SEGMENT_WIRE_SIZE)
            if not whole:
                self._leave(_Op.UPDATE)
                return 0, 0
            if whole >= MAX_SEGMENTS:
                raise LimitExceededError("segments", whole, MAX_SEGMENTS - 1, 0)
            (src_fd, src_at), body = src, (src[0], src[1] + BODY_PREFIX_BYTES)
            prefix = bytearray(BODY_PREFIX_BYTES)
            with memoryview(prefix) as view:
                if pread_exact(src_fd, view, src_at) < BODY_PREFIX_BYTES:
                    raise TruncatedStreamError(0, "the body is shorter than its 56-byte prefix")
                self._feed(view, view)  # the commitment, checked before any segment
            self._prefix = bytes(prefix)
            assert self._segcipher is not None
            try:
                self._pool.open_file(self._segcipher, whole, body, dst)
            except InputShrankError as exc:
                raise TruncatedStreamError(exc.index) from None
            self._consumed += whole * SEGMENT_WIRE_SIZE
            self.segments = whole
        except BaseException:
            self._fail()
            raise
        self._leave(_Op.UPDATE)
        return BODY_PREFIX_BYTES + whole * SEGMENT_WIRE_SIZE, whole * SEGMENT_SIZE

    def _finalize(self) -> bytes:
        if self._segcipher is None:
            raise TruncatedStreamError(0, "the body is shorter than its 56-byte prefix")
        if len(self._carry) < TAG_BYTES:
            raise TruncatedStreamError(self.segments)
        out = bytearray(len(self._carry) - TAG_BYTES)
        try:
            self._segcipher.open_into(self.segments, self._carry, out)
        except SegmentAuthError:
            raise FinalSegmentAuthError(self.segments) from None
        self.segments += 1
        return bytes(out)
