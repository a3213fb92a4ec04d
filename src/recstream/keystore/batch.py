"""Batch decryption: many recordings, concurrently, nothing partial left behind.

:func:`plan` maps inputs (files, and directories searched for ``*.rsv``) to
outputs under one directory; :func:`run` decrypts them on a thread pool.  Each
output is written through :func:`recstream.files.atomic_output`: it appears only
once the whole recording authenticated.  A failure is that file's alone; the
others go on.  No printing here: the caller gets a callback per finished file.

Threads, not processes: AES-GCM and file I/O release the GIL, and the keys are
decrypted once and shared.  RSA-OAEP unwraps (one per file) serialise on this
cryptography build; bench/keystore.py measures both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from recstream.durable import atomic_output, write_all
from recstream.envelope import EnvelopeDecryptor, KeyRing
from recstream.errors import RecstreamError
from recstream.files import DEFAULT_JOBS

__all__ = ["Item", "Result", "decrypt_file", "output_name", "plan", "run"]

ENVELOPE_SUFFIX: Final = ".rsv"
PLAIN_SUFFIX: Final = ".decrypted"  # for inputs not named *.rsv
_BLOCK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Item:
    """One recording to decrypt; ``problem`` is set when it is known to fail already."""

    source: Path
    target: Path
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    item: Item
    error: str | None
    plaintext_bytes: int
    envelope_bytes: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def output_name(name: str) -> str:
    """``call.wav.rsv`` -> ``call.wav``; any other name gets ``.decrypted`` appended."""
    if name.endswith(ENVELOPE_SUFFIX) and len(name) > len(ENVELOPE_SUFFIX):
        return name[: -len(ENVELOPE_SUFFIX)]
    return name + PLAIN_SUFFIX


def plan(inputs: Iterable[str | os.PathLike[str]], out_dir: Path, *, force: bool) -> list[Item]:
    """Expand ``inputs`` into items; problems known up front are recorded, not raised.

    A directory contributes its ``*.rsv`` files (recursively, keeping their relative
    paths under ``out_dir``).  Missing inputs, two inputs with one output, and
    outputs that exist (without ``force``) are items with a ``problem``.
    """
    items: list[Item] = []
    taken: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob(f"*{ENVELOPE_SUFFIX}") if p.is_file())
            pairs = [(p, out_dir / p.parent.relative_to(path) / output_name(p.name)) for p in found]
        else:
            pairs = [(path, out_dir / output_name(path.name))]
        for source, target in pairs:
            items.append(_item(source, target, taken, force))
    return items


def _item(source: Path, target: Path, taken: set[Path], force: bool) -> Item:
    key = target.resolve()
    problem = None
    if not source.is_file():
        problem = "input file not found"
    elif key in taken:
        problem = f"another input also decrypts to {target}"
    elif target.exists() and not force:
        problem = f"output exists: {target} (use --force to overwrite)"
    taken.add(key)
    return Item(source, target, problem)


def decrypt_file(source: Path, target: Path, keys: KeyRing) -> tuple[int, int]:
    """Decrypt one envelope into ``target`` atomically; return (plaintext, envelope) bytes.

    Raises:
        RecstreamError subclasses, OSError: ``target`` is then untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    dec = EnvelopeDecryptor(keys)
    total_in = total_out = 0
    with open(source, "rb", buffering=0) as src, atomic_output(target) as dst:
        # Buffers sized to the file: zeroing 2 MiB per small recording cost more
        # than decrypting it (measured: bench/keystore_batch.py).
        block = max(1, min(_BLOCK, os.fstat(src.fileno()).st_size + 1))
        inbuf = bytearray(block)
        outbuf = bytearray(dec.output_size(block))
        view = memoryview(inbuf)
        while n := src.readinto(inbuf):
            need = dec.output_size(n)
            if need > len(outbuf):
                outbuf = bytearray(need)
            m = dec.update_into(view[:n], outbuf)
            write_all(dst, memoryview(outbuf)[:m])
            total_in += n
            total_out += m
        tail = dec.finalize()
        write_all(dst, tail)
    return total_out + len(tail), total_in


def run(
    items: Sequence[Item],
    keys: KeyRing,
    *,
    jobs: int = DEFAULT_JOBS,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Decrypt every item on ``jobs`` threads; results in input order.

    ``on_result`` is called in the calling thread as each file finishes.  Only
    :class:`RecstreamError` and ``OSError`` count as a file's failure; anything
    else is a bug and propagates.
    """
    if jobs < 1:
        msg = "jobs must be at least 1"
        raise ValueError(msg)
    results: dict[int, Result] = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="decrypt") as pool:
        futures = {pool.submit(_one, item, keys): i for i, item in enumerate(items)}
        try:
            for fut in as_completed(futures):
                result = fut.result()
                results[futures[fut]] = result
                if on_result is not None:
                    on_result(result)
        except BaseException:
            # Interrupted (or a bug): files not started are not started; those running
            # finish or clean up after themselves (atomic_output) before we return.
            for fut in futures:
                fut.cancel()
            raise
    return [results[i] for i in range(len(items))]


def _one(item: Item, keys: KeyRing) -> Result:
    start = time.perf_counter()
    if item.problem is not None:
        return Result(item, item.problem, 0, 0, 0.0)
    try:
        plain, wire = decrypt_file(item.source, item.target, keys)
    except RecstreamError as exc:
        return Result(item, str(exc), 0, 0, time.perf_counter() - start)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f"{exc.filename}: " if exc.filename else ""
        return Result(item, f"{where}{reason}", 0, 0, time.perf_counter() - start)
    return Result(item, None, plain, wire, time.perf_counter() - start)
