"""The asyncio layer: live recording writers, the media-server hook, the flusher."""

from recstream.aio.flusher import DEFAULT_FLUSH_INTERVAL, Flusher
from recstream.aio.hook import RecordingHook
from recstream.aio.writer import INCOMPLETE_SUFFIX, RecordingWriter

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "INCOMPLETE_SUFFIX",
    "Flusher",
    "RecordingHook",
    "RecordingWriter",
]
