"""The ``recstream`` command line.

Each command module registers its subcommands with :func:`register`; every
command returns an exit code or raises.  This package is the only place that
prints, and :data:`EXIT_CODES` is the one table from errors to exit codes,
looked up along the exception's MRO.  Exit codes (README "Exit codes"):

====  ========================================================================
0     success
1     internal error (a bug: please report it)
2     usage error: bad arguments or options
3     integrity failure: the envelope is malformed, tampered with or truncated
4     key or certificate problem: no matching key, wrong password, policy
5     I/O error: a file cannot be read or written
6     partial result: an incomplete recording was recovered (``recover``)
7     some items of a batch failed (the rest succeeded)
====  ========================================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from recstream import __version__
from recstream import errors as e

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_KEY = 4
EXIT_IO = 5
EXIT_PARTIAL = 6
EXIT_BATCH_FAILURES = 7

EXIT_CODES: dict[type[BaseException], int] = {
    e.MixedEncryptionError: EXIT_KEY,  # a provisioning problem: say what to provision
    e.MuxError: EXIT_USAGE,  # the two inputs given do not belong together
    e.EnvelopeFormatError: EXIT_INTEGRITY,
    e.TracksFormatError: EXIT_INTEGRITY,
    e.IntegrityError: EXIT_INTEGRITY,
    e.KeyAccessError: EXIT_KEY,
    e.CertificateError: EXIT_KEY,
    e.KeystoreError: EXIT_KEY,
    e.StreamStateError: EXIT_INTERNAL,
    e.PipelineError: EXIT_IO,
    e.RecstreamError: EXIT_INTERNAL,
    OSError: EXIT_IO,
}


class UsageError(Exception):
    """A user's mistake in the command line that argparse cannot see (exit 2)."""


Command = Callable[[argparse.Namespace], int]


def exit_code_for(exc: BaseException) -> int:
    """Return the exit code for ``exc`` from :data:`EXIT_CODES`, along its MRO."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_INTERNAL


def describe_os_error(exc: OSError) -> str:
    """A one-line message for an OSError, naming the file when known."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        eprint(f"{self.prog}: error: {message}")
        raise SystemExit(EXIT_USAGE)


# Which module registers each command.  A command line names one command, so
# only its module is imported: `recstream encrypt` never loads the server,
# the muxer's FFmpeg or Dask (start-up is part of every CLI figure).
COMMAND_MODULES: dict[str, str] = {
    "encrypt": "envelope",
    "decrypt": "envelope",
    "inspect": "envelope",
    "record": "live",
    "recover": "live",
    "mux": "mux",
    "rewrap": "rewrap",
    "keystore": "keystore",
    "pki": "pki",
    "batch": "batch",
    "serve": "serve",
    "streams": "streams",
    "bench": "bench",
    "demo": "demo",
    "srs": "srs",
    "tracks": "tracks",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or only for ``command``'s module when given."""
    import importlib

    parser = _Parser(
        prog="recstream",
        description="Encrypt call and screen recordings as they are recorded, keep their "
        "keys, and decrypt them for playback.",
        epilog="Run 'recstream COMMAND --help' for a command's options. Exit codes: "
        "0 ok, 2 usage, 3 integrity (tampered/truncated/malformed), 4 key or certificate, "
        "5 I/O, 6 partial recovery, 7 some batch items failed.",
    )
    parser.add_argument("--version", action="version", version=f"recstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = COMMAND_MODULES.get(command or "")
    names = [wanted] if wanted else sorted(set(COMMAND_MODULES.values()))
    for name in names:
        importlib.import_module(f"recstream.cli.{name}").register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named on the line (the first word not starting with '-')."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (never raises for a user's mistake)."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(words))
    try:
        args = parser.parse_args(words)
        func: Command = args.func
        return func(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        eprint("recstream: interrupted")
        return 130
    except UsageError as exc:
        eprint(f"recstream: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_IO
    except OSError as exc:
        eprint(f"recstream: error: {describe_os_error(exc)}")
        return EXIT_IO
    except e.RecstreamError as exc:
        eprint(f"recstream: error: {exc}")
        return exit_code_for(exc)


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
