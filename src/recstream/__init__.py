"""recstream: encrypted call and screen recordings, their keys, and playback."""

from __future__ import annotations

__version__ = "0.1.0"
