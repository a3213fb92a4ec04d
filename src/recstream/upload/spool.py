"""The spool: recordings written locally, waiting to be uploaded to the archive store.

The spool is the directory the recorder writes into (the hook's root, ``record``'s
output directory).  Nothing marks a recording as pending: a recording still in the spool
is pending, so a restart finds its work by scanning, and a crash at any point leaves
either the recording in the spool (it is uploaded again, and the uploader's
check-before-commit finds what was already committed) or nothing.

An *item* is what is uploaded and removed as one:

* a recording directory of the archive layout (``.../{recording-id}/``, with its
  ``recording.json`` and one ``{kind}.rsv`` per media kind), uploaded envelopes first and
  ``recording.json`` last, so a reader of the archive that sees the JSON sees every file;
* a lone ``*.rsv`` file at the top of the spool (flat layout, ``record``'s output).

An item is *ready* when its recorder has finished with it: no ``*.incomplete`` file (a
recording in progress, or one a crash interrupted, which ``recstream recover`` deals
with), and every media file ``recording.json`` names is there.  Removal renames the item
into ``.recstream-upload/trash/`` (one atomic step) before deleting it, so a crash
half-way through deleting never leaves half a recording looking pending.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from recstream.durable import discard_tree, is_temporary, lock_file, write_file

__all__ = [
    "STATE_DIR",
    "SpoolItem",
    "locked_item",
    "read_state",
    "retire",
    "scan",
    "spool_usage",
    "write_state",
]

STATE_DIR: Final = ".recstream-upload"
RECORDING_JSON: Final = "recording.json"
INCOMPLETE_SUFFIX: Final = ".incomplete"  # recstream.aio.writer's name for a live recording
_SKIP_DIRS: Final = frozenset({STATE_DIR, ".recstream-batch"})


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One recording in the spool.

    Attributes:
        rel: its path relative to the spool (``/``-separated): the same path in the archive.
        files: its files relative to the spool, in upload order (``recording.json`` last).
        size: bytes in ``files``.
        ready: the recorder has finished with it.
        why_not: why it is not ready ("" when it is).
    """

    rel: str
    files: tuple[str, ...]
    size: int
    ready: bool
    why_not: str = ""

    @property
    def is_directory(self) -> bool:
        return not self.rel.endswith(".rsv")

    @property
    def lock_file(self) -> str:
        """The file whose ``flock`` marks the item as being uploaded by a process."""
        return f"{self.rel}/{RECORDING_JSON}" if self.is_directory else self.rel


def scan(spool: Path, only: frozenset[str] | None = None) -> list[SpoolItem]:
    """Every recording in ``spool`` (ready or not), sorted by path.

    ``only``: consider just these item paths (``record`` uploads its own output, not
    whatever else its directory holds).
    """
    items: list[SpoolItem] = []
    for dirpath, dirnames, filenames in os.walk(spool):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        rel_dir = here.relative_to(spool).as_posix()
        if RECORDING_JSON in filenames and here != spool:
            dirnames[:] = []  # a recording directory holds no recordings below it
            if only is None or rel_dir in only:
                items.append(_directory_item(here, rel_dir, filenames))
            continue
        if here != spool:
            # envelopes in a directory without recording.json yet: the hook has
            # renamed a finished envelope and not yet filed its metadata
            continue
        for name in sorted(filenames):
            rel = name
            if name.endswith(".rsv") and (only is None or rel in only):
                with contextlib.suppress(FileNotFoundError):  # uploaded meanwhile
                    items.append(SpoolItem(rel, (rel,), (here / name).stat().st_size, True))
    return sorted(items, key=lambda i: i.rel)


def _directory_item(here: Path, rel: str, names: list[str]) -> SpoolItem:
    size = 0
    envelopes = []
    busy = ""
    for name in names:
        if name.endswith(INCOMPLETE_SUFFIX):
            busy = f"{name} is still being recorded (or was interrupted: recstream recover)"
        elif is_temporary(name):
            busy = f"{name} is being written"
        elif name.endswith(".rsv"):
            envelopes.append(name)
        with contextlib.suppress(FileNotFoundError):
            size += (here / name).stat().st_size
    files = (*(f"{rel}/{n}" for n in sorted(envelopes)), f"{rel}/{RECORDING_JSON}")
    if busy:
        return SpoolItem(rel, files, size, False, busy)
    try:
        doc = json.loads((here / RECORDING_JSON).read_bytes())
        named = {m["file"] for m in doc.get("media", {}).values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return SpoolItem(rel, files, size, False, f"{RECORDING_JSON} is being written")
    missing = sorted(named - set(envelopes))
    if missing:
        return SpoolItem(rel, files, size, False, f"{', '.join(missing)} not there yet")
    return SpoolItem(rel, files, size, True)


def spool_usage(spool: Path) -> int:
    """Bytes of every file in the spool (recordings in progress included)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(spool):
        dirnames[:] = [d for d in dirnames if d != STATE_DIR]
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size  # noqa: PTH118
    return total


@contextlib.contextmanager
def locked_item(spool: Path, item: SpoolItem) -> Iterator[bool]:
    """Hold the item's upload lock; yields False if another process has it or it is gone.

    After the lock is taken the item is checked to be still where it was (another
    uploader may have finished and removed it between the scan and the lock).
    """
    path = spool / item.lock_file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        try:
            lock_file(fd)
        except BlockingIOError:
            yield False
            return
        try:
            same = os.path.samestat(os.fstat(fd), path.stat())
        except FileNotFoundError:
            same = False
        yield same
    finally:
        os.close(fd)


def retire(spool: Path, item: SpoolItem) -> None:
    """Remove an uploaded item from the spool: one rename out of sight, then delete."""
    discard_tree(spool / item.rel, spool / STATE_DIR / "trash")


def empty_trash(spool: Path) -> None:
    """Delete what a crash left in the trash (items already uploaded)."""
    trash = spool / STATE_DIR / "trash"
    with contextlib.suppress(FileNotFoundError):
        for entry in trash.iterdir():
            shutil.rmtree(entry, ignore_errors=True)


def write_state(spool: Path, state: dict[str, Any]) -> None:
    """The uploader's report for ``recstream status`` (no secrets in it: URLs and messages)."""
    directory = spool / STATE_DIR
    directory.mkdir(exist_ok=True)
    write_file(directory / "state.json", json.dumps(state, indent=2).encode(), mode=0o644)


def read_state(spool: Path) -> dict[str, Any]:
    """What the last uploader wrote, or ``{}``."""
    try:
        data = json.loads((spool / STATE_DIR / "state.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
