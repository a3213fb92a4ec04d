"""recstream: encrypted call and screen recordings, their keys, and playback."""

from __future__ import annotations

import gc as _gc
import os as _os
import sys as _sys
from types import FrameType as _FrameType
from typing import Any as _Any

__version__ = "0.1.0"

# CPython's C signal module: `signal` itself builds its enums at import, ~2 ms of
# every command's start-up for the one call made here.
_signal: _Any = __import__("_signal")


def _exit_quietly(_signum: int, _frame: _FrameType | None) -> None:  # pragma: no cover
    # Ctrl-C while the command's modules load: nothing has started, nothing to clean.
    _os._exit(130)


# Run as the `recstream` command (console script, or `python -m recstream` while
# runpy imports this package): a Ctrl-C before recstream.cli.main() takes over exits
# 130 quietly instead of printing an import traceback.  main() puts Python's own
# handler back; a program that imports recstream as a library is never affected.
_program = _sys.argv[0].rsplit(_os.sep, 1)[-1] if _sys.argv else ""
_as_command = _program in ("-m", "recstream")
if _as_command:
    _signal.signal(_signal.SIGINT, _exit_quietly)
    # Loading a command's modules makes many objects and no garbage cycles: the
    # cyclic collector's passes over them were ~10% of a one-shot command's CPU.
    # main() freezes what was loaded and turns the collector back on.
    _gc.disable()
