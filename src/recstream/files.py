"""Synchronous file adapters: pump a file through an encryptor or decryptor.

:func:`pump` overlaps reading, transforming and writing: a reader thread fills
a small ring of preallocated blocks with ``readinto``, the calling thread runs
the transform (``update_into`` into preallocated output blocks), and a writer
thread drains them.  File reads and writes release the GIL, so the second core
does the copying while the first encrypts.  Memory is fixed: ``2 * depth``
blocks, whatever the file size.

Where the output goes (an unnamed temporary committed only on success) is
:mod:`recstream.durable`'s business, not this module's.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
from collections.abc import Callable
from typing import IO, Protocol, TypeVar

from recstream.durable import write_all
from recstream.format import SEGMENT_WIRE_SIZE, Buffer

__all__ = ["BLOCK_SIZE", "DEFAULT_JOBS", "Codec", "pump", "size_of", "write_all"]

# 1 MiB blocks: large enough that per-call overhead vanishes against AES-GCM at
# ~10 GB/s and page-cache copies at ~3 GB/s, small enough that three of them in
# each direction keep peak memory far under the 64 MiB budget (FORMAT.md has
# nothing to say here; bench/RESULTS.md has the measurements).
BLOCK_SIZE = 1 << 20
DEPTH = 3
# Files decrypted at once by ``decrypt --out-dir``: RSA unwraps and file I/O
# overlap across threads; beyond 4 the disk, not the CPU, sets the pace.
DEFAULT_JOBS = min(4, os.cpu_count() or 1)
_T = TypeVar("_T")


class Codec(Protocol):
    def output_size(self, n: int) -> int: ...
    def update_into(self, data: Buffer, out: Buffer) -> int: ...
    def finalize(self) -> bytes: ...


class _Stop(Exception):
    pass


class _Worker:
    """A thread that records its exception for the pump to re-raise."""

    def __init__(self, target: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._target()
        except _Stop:
            pass
        except BaseException as exc:
            self.error = exc


class _Pump:
    """Reader thread -> transform (caller's thread) -> writer thread, fixed buffers."""

    def __init__(self, src: IO[bytes], dst: IO[bytes], block_size: int, depth: int) -> None:
        self.src, self.dst, self.block_size = src, dst, block_size
        # SimpleQueue (C, one lock) rather than Queue (Python, a Condition per call):
        # eight hand-offs a block, and Queue's cost showed as futex storms (issue 20).
        self.free_in: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.full_in: queue.SimpleQueue[tuple[bytearray, int]] = queue.SimpleQueue()
        self.free_out: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.full_out: queue.SimpleQueue[tuple[bytearray | bytes, int] | None] = queue.SimpleQueue()
        self.depth = depth
        self.stopping = threading.Event()
        self.written = 0
        self.reader = _Worker(self._read_loop)
        self.writer = _Worker(self._write_loop)

    def run(self, codec: Codec) -> int:
        out_size = codec.output_size(self.block_size) + SEGMENT_WIRE_SIZE
        for _ in range(self.depth):
            self.free_in.put(bytearray(self.block_size))
            self.free_out.put(bytearray(out_size))
        self.reader.thread.start()
        self.writer.thread.start()
        try:
            self._transform(codec)
        except BaseException as exc:
            self.stopping.set()
            self.full_out.put(None)
            if isinstance(exc, KeyboardInterrupt) and size_of(self.dst) is None:
                # Ctrl-C while the writer may sit in a write to a pipe or terminal that
                # nobody reads: it would never return.  It is a daemon, the process is
                # exiting (130), and it writes nothing more once ``stopping`` is set.
                self.writer.thread.join(timeout=1.0)
            else:  # a file: the write in progress ends; the caller then discards it
                self.writer.thread.join()
            # The reader may sit in a blocking read of a pipe; it is a daemon and
            # stops at its next block, so do not wait for it on the error path.
            self.reader.thread.join(timeout=1.0)
            raise
        self.reader.thread.join()
        self.writer.thread.join()
        for worker in (self.reader, self.writer):
            if worker.error is not None:
                raise worker.error
        return self.written

    def _transform(self, codec: Codec) -> None:
        while True:
            buf, n = self._get(self.full_in)
            if n == 0:
                tail = codec.finalize()
                self.full_out.put((tail, len(tail)))
                self.full_out.put(None)
                return
            out = self._get(self.free_out)
            with memoryview(buf) as view:
                m = codec.update_into(view[:n], out)
            self.free_in.put(buf)
            self.full_out.put((out, m))

    def _get(self, q: queue.SimpleQueue[_T]) -> _T:
        """Wait on ``q``, but re-raise at once if a worker thread died."""
        while True:
            for w in (self.reader, self.writer):
                if w.error is not None:
                    raise w.error
            with contextlib.suppress(queue.Empty):
                return q.get(timeout=0.05)

    def _get_free_in(self) -> bytearray:
        while True:
            if self.stopping.is_set():
                raise _Stop
            with contextlib.suppress(queue.Empty):
                return self.free_in.get(timeout=0.1)

    def _read_loop(self) -> None:
        readinto = self.src.readinto  # type: ignore[attr-defined]
        while True:
            buf = self._get_free_in()
            n = readinto(buf) or 0
            self.full_in.put((buf, n))
            if n == 0:
                return

    def _write_loop(self) -> None:
        while True:
            item = self.full_out.get()
            if item is None or self.stopping.is_set():
                return
            buf, n = item
            with memoryview(buf) as view:
                write_all(self.dst, view[:n])
            self.written += n
            if isinstance(buf, bytearray):
                self.free_out.put(buf)


def pump(
    src: IO[bytes],
    dst: IO[bytes],
    codec: Codec,
    *,
    block_size: int = BLOCK_SIZE,
    depth: int = DEPTH,
) -> int:
    """Transform all of ``src`` into ``dst``; return the bytes written.

    Neither file is closed.  ``codec.finalize()`` runs after end of input and
    its output is written last.  Any exception (from the codec or from I/O)
    stops both threads and propagates; what was already written is the
    caller's to discard (see :func:`recstream.durable.atomic_output`).
    """
    return _Pump(src, dst, block_size, depth).run(codec)


def size_of(fh: IO[bytes]) -> int | None:
    """The size of a regular file, or None (a pipe, a terminal, no descriptor).

    Callers pick the bulk path by it (:func:`recstream.parallel.pool_for`).
    """
    try:
        st = os.fstat(fh.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
