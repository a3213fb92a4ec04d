"""The media server's recording hook: start / media / stop callbacks keyed by call ID.

One :class:`RecordingHook` manages a :class:`RecordingWriter` per call and
media kind, all sharing one :class:`Flusher`.  ``media`` is synchronous and
never blocks, so a media server can call it from its packet path (from another
thread, through ``loop.call_soon_threadsafe``).  A failing recording (disk
full, permission denied) is reported for that call through ``on_error`` and in
:attr:`RecordingHook.errors`, and never stops the others.

Recipients are resolved per recording by a callable at ``start``: a keystore
can rotate the active certificate and new recordings pick it up, while
recordings in progress finish under the certificate they started with.

With an ``uploader`` (:class:`recstream.upload.Uploader`), the hook's directory is the
spool of an archive store: each finished recording is handed to the uploader, and a
new call is refused (:class:`~recstream.errors.SpoolFullError` through ``on_error``)
while the spool is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from recstream.aio.flusher import DEFAULT_FLUSH_INTERVAL, Flusher
from recstream.aio.writer import RecordingWriter
from recstream.archive import ArchiveLayout, merge_recording_json
from recstream.durable import atomic_output, write_all
from recstream.envelope import Recipient, new_metadata
from recstream.errors import PipelineError, RecstreamError
from recstream.format import Buffer, MediaKind, Metadata

if TYPE_CHECKING:
    from recstream.upload import Uploader

__all__ = ["RecipientResolver", "RecordingHook"]

RecipientResolver = Callable[[str, MediaKind], Sequence[Recipient]]
ErrorCallback = Callable[[str, MediaKind, BaseException], None]

DEFAULT_MEDIA_TYPES = {MediaKind.VOICE: "audio/basic", MediaKind.SCREEN: "video/webm"}


@dataclass
class _Call:
    tenant: str
    writers: dict[MediaKind, RecordingWriter] = field(default_factory=dict)


class RecordingHook:
    """Encrypt every call's media as it arrives.

    Args:
        directory: where recordings are written (``<call>-<kind>.rsv``), or the
            root of an archive when ``contact_center`` is given.
        contact_center: file recordings in the vendor's archive layout,
            ``{contact_center}/{tenant}/{date}/{recording_id}/{kind}.rsv`` with a
            ``recording.json`` beside them (:mod:`recstream.archive`).
        recipients: ``(tenant, kind) -> recipients``, called at each start.
        flush_interval: seconds a complete segment may wait in memory.
        sync: fdatasync each batch (survives power loss, not only crashes).
        on_error: called with (call_id, kind, exception) when a recording fails.
        uploader: upload finished recordings from ``directory`` (the spool) to an
            archive store; started and stopped with the hook.
    """

    def __init__(
        self,
        directory: str | Path,
        recipients: RecipientResolver,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        sync: bool = True,
        on_error: ErrorCallback | None = None,
        contact_center: str | None = None,
        uploader: Uploader | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.uploader = uploader
        self._layout = (
            ArchiveLayout(str(self.directory), contact_center) if contact_center else None
        )
        self._resolve = recipients
        self.flusher = Flusher(flush_interval, sync=sync)
        self._on_error = on_error
        self._calls: dict[str, _Call] = {}
        # media()'s lookup: kind -> call -> writer, the recordings taking media now.
        self._live: dict[MediaKind, dict[str, RecordingWriter]] = {k: {} for k in MediaKind}
        self.errors: dict[tuple[str, MediaKind], BaseException] = {}
        self.finished: dict[tuple[str, MediaKind], Path] = {}

    async def __aenter__(self) -> RecordingHook:
        self.flusher.start()
        if self.uploader is not None:
            self.uploader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(
        self,
        call_id: str,
        *,
        tenant: str,
        kinds: Sequence[MediaKind] = (MediaKind.VOICE,),
        media_types: dict[MediaKind, str] | None = None,
        recording_ids: dict[MediaKind, str] | None = None,
        created_ms: dict[MediaKind, int] | None = None,
    ) -> None:
        """Open a recording for each media kind of a new call.

        A kind whose recording cannot start is reported through ``on_error``
        (and ``errors``); the call's other kinds still record.

        ``created_ms`` overrides a kind's start time (default: now), e.g. when
        replaying recorded media faster than real time.

        Raises:
            ValueError: the call ID is already recording.
        """
        if call_id in self._calls:
            msg = f"call {call_id} is already recording"
            raise ValueError(msg)
        call = self._calls[call_id] = _Call(tenant)
        types = {**DEFAULT_MEDIA_TYPES, **(media_types or {})}
        if self.uploader is not None:
            try:
                self.uploader.check_admission()  # a full spool refuses new calls only
            except RecstreamError as exc:
                for kind in kinds:
                    self._report(call_id, kind, exc)
                return
        for kind in kinds:
            # A call's voice and screen recordings share its recording ID (the
            # interaction), told apart by media kind: the muxer pairs them by it.
            rid = (recording_ids or {}).get(kind) or call_id
            try:
                recipients = self._resolve(tenant, kind)
                metadata = new_metadata(
                    recording_id=rid,
                    tenant=tenant,
                    media_kind=kind,
                    media_type=types[kind],
                    created_ms=(created_ms or {}).get(kind),
                )
                path = await self._path_for(call_id, metadata)
                writer = await RecordingWriter.open(path, recipients, metadata, self.flusher)
                call.writers[kind] = writer
                if self._calls.get(call_id) is call:  # not stopped while it opened
                    self._live[kind][call_id] = writer
            except (OSError, RecstreamError, ValueError) as exc:
                self._report(call_id, kind, exc)

    async def _path_for(self, call_id: str, metadata: Metadata) -> Path:
        if self._layout is None:
            return self.directory / f"{call_id}-{metadata.media_kind.name.lower()}.rsv"
        path = Path(self._layout.envelope_path(metadata))
        await self.flusher.run_blocking(_makedirs, path.parent)
        return path

    async def _file_metadata(self, writer: RecordingWriter) -> None:
        """Add the recording to its ``recording.json`` (archive layout only)."""
        if self._layout is None:
            return
        doc = self._layout.recording_json(writer.metadata, writer.cert_ids)
        await self.flusher.run_blocking(_merge_json, writer.path.parent / "recording.json", doc)

    def media(self, call_id: str, chunk: Buffer, kind: MediaKind = MediaKind.VOICE) -> None:
        """Hand over a chunk of a call's media; never blocks.

        Raises:
            KeyError: no such call (not started, or stopped).
            PipelineOverflowError: this recording's buffer is full.
            PipelineError: this recording failed earlier.
        """
        # Per frame: one lookup, one call (issue 20); misses take the slow path.
        try:
            writer = self._live[kind][call_id]
        except KeyError:
            self._no_writer(call_id, kind)
        try:
            writer.write_nowait(chunk)
        except PipelineError as exc:
            if writer.failed and (call_id, kind) not in self.errors:
                self._report(call_id, kind, exc)
            raise

    def _no_writer(self, call_id: str, kind: MediaKind) -> NoReturn:
        call = self._calls[call_id]  # KeyError: no such call
        writer = call.writers.get(kind)
        if writer is not None:  # pragma: no cover - _live and writers disagree
            msg = f"call {call_id}'s {kind.name.lower()} recording is not taking media"
            raise PipelineError(msg)
        err = self.errors.get((call_id, kind))
        msg = f"call {call_id} has no {kind.name.lower()} recording"
        raise PipelineError(msg) from err

    async def stop(self, call_id: str) -> dict[MediaKind, Path]:
        """Finish a call's recordings; return the paths of those that completed."""
        call = self._calls.pop(call_id)
        for live in self._live.values():
            live.pop(call_id, None)
        done: dict[MediaKind, Path] = {}
        for kind, writer in call.writers.items():
            try:
                done[kind] = self.finished[(call_id, kind)] = await writer.close()
                await self._file_metadata(writer)
            except (OSError, RecstreamError) as exc:
                self._report(call_id, kind, exc)
        if self.uploader is not None and done:
            size = sum(p.stat().st_size for p in done.values() if p.exists())
            self.uploader.recording_added(size)
        return done

    def _report(self, call_id: str, kind: MediaKind, exc: BaseException) -> None:
        self.errors[(call_id, kind)] = exc
        if self._on_error is not None:
            self._on_error(call_id, kind, exc)

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def aclose(self) -> None:
        """Stop every call still recording (finishing them), then the flusher."""
        for call_id in list(self._calls):
            await self.stop(call_id)
        await self.flusher.aclose()
        if self.uploader is not None:
            # what is not uploaded yet stays in the spool for the next start
            await asyncio.to_thread(self.uploader.stop)


def _makedirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _merge_json(path: Path, doc: bytes) -> None:
    existing = path.read_bytes() if path.exists() else None
    with atomic_output(path, mode=0o644) as fh:
        write_all(fh, merge_recording_json(existing, doc))
