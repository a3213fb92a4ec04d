"""The ``recstream`` command line.

Each command module registers its subcommands with :func:`register`; every
command returns an exit code or raises.  This package is the only place that
prints, and :data:`EXIT_CODES` is the one table from errors to exit codes,
looked up along the exception's MRO, for every command.  Exit codes (README
"Exit codes"):

====  ========================================================================
0     success
1     internal error (a bug: please report it)
2     usage error: bad arguments or options, a missing input file, a missing
      output directory, an output that exists (without ``--force``)
3     integrity failure: the envelope is malformed, tampered with or truncated;
      a bad signature, or an unsigned recording where one is required
4     key or certificate problem: no matching key, wrong password, a refused
      certificate (expired, not yet valid, a CA, refused by ``--ca-file``); a
      recording signed by a refused signer
5     I/O error: a file that exists cannot be read or written (permissions,
      disk full)
6     partial result: an incomplete recording was recovered (``recover``)
7     some items of a batch failed (the rest succeeded)
130   interrupted (Ctrl-C): nothing partial is left behind
====  ========================================================================
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from typing import Any

import recstream as _recstream
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
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

EXIT_CODES: dict[type[BaseException], int] = {
    # A missing input (file, directory, keystore) and a missing output directory
    # are usage errors for every command, whichever layer notices them.
    e.KeystoreNotFoundError: EXIT_USAGE,
    FileNotFoundError: EXIT_USAGE,
    NotADirectoryError: EXIT_USAGE,
    IsADirectoryError: EXIT_USAGE,
    e.MixedEncryptionError: EXIT_KEY,  # a provisioning problem: say what to provision
    e.MuxError: EXIT_USAGE,  # the two inputs given do not belong together
    e.EnvelopeFormatError: EXIT_INTEGRITY,
    e.TracksFormatError: EXIT_INTEGRITY,
    e.RefusedSignerError: EXIT_KEY,  # a certificate problem, though a SignatureError
    e.IntegrityError: EXIT_INTEGRITY,
    e.KeyAccessError: EXIT_KEY,
    e.CertificateError: EXIT_KEY,
    e.KeystoreError: EXIT_KEY,
    e.StreamStateError: EXIT_INTERNAL,
    e.PipelineError: EXIT_IO,
    e.StorageError: EXIT_IO,  # the archive store (issue 18): unreachable, refused, conflict
    e.RecstreamError: EXIT_INTERNAL,
    OSError: EXIT_IO,
}


EXIT_CODES_HELP = (
    "0 ok, 1 internal error (a bug), 2 usage (bad arguments, missing input file, missing "
    "output directory, output exists), 3 integrity (tampered/truncated/malformed), 4 key or "
    "certificate (no key, wrong password, refused certificate), 5 I/O (unreadable, "
    "unwritable, disk full), 6 partial (recovery incomplete, or uploads left in the spool), "
    "7 some batch items failed (verify: mixed results), 130 interrupted. verify: 3 a bad "
    "signature, 4 a refused signer."
)


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
    """A one-line message for an OSError, naming the file when known.

    The reason is the C library's text (``strerror``), never an ``[Errno N]``
    repr; a missing file says so in words a user searches for.
    """
    from recstream.cli._util import public_name

    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"{public_name(exc.filename)}: {reason}"
    return reason


def eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr)


class _Formatter(argparse.HelpFormatter):
    """Help that shows one spelling per option: old spellings kept for scripts
    (``hidden_aliases`` on the action, see ``cli._util.alias``) still parse."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "hidden_aliases", ())
        if not hidden or not action.option_strings:
            return super()._format_action_invocation(action)
        shown = [o for o in action.option_strings if o not in hidden]
        copy = argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        copy.default, copy.choices = action.default, action.choices
        return super()._format_action_invocation(copy)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

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
    "verify": "verify",
    "upload": "upload",
    "status": "upload",
}


# Commands that finish their work, rather than abandon it, on SIGINT/SIGTERM.
STOP_ON_SIGNAL = frozenset({"record"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or only for ``command``'s module when given."""
    import importlib

    parser = _Parser(
        prog="recstream",
        description="Encrypt call and screen recordings as they are recorded, keep their "
        "keys, and decrypt them for playback.",
        epilog="Run 'recstream COMMAND --help' for a command's options. '-' as a file "
        "means stdin or stdout where a command can stream, and is refused (exit 2) where it "
        "cannot. Exit codes, the same for every command: " + EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"recstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = COMMAND_MODULES.get(command or "")
    names = [wanted] if wanted else sorted(set(COMMAND_MODULES.values()))
    for name in names:
        module = importlib.import_module(f"recstream.cli.{name}")
        one = getattr(module, "register_one", None)
        if wanted and one is not None and command in module.REGISTRARS:
            one(sub, command)  # only the command named: the others' parsers cost start-up
        else:
            module.register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named on the line (the first word not starting with '-')."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (never raises, never prints a traceback).

    Ctrl-C at any point (loading the command's modules included) exits 130
    quietly; an unexpected exception is a bug: one line naming it, exit 1, and
    the traceback only with ``RECSTREAM_DEBUG=1``.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(words)
    restore_signals: Callable[[], None] | None = None
    sig = _recstream._signal
    if sig.getsignal(sig.SIGINT) is _recstream._exit_quietly:
        # From here Ctrl-C is KeyboardInterrupt again: clean-up runs, then exit 130.
        sig.signal(sig.SIGINT, sig.default_int_handler)
    try:
        if command in STOP_ON_SIGNAL:
            from recstream.cli._signals import catch_stop_requests

            # Before anything slow (imports, certificates, the keystore): a stop
            # request that arrives meanwhile is kept, not fatal.
            restore_signals = catch_stop_requests()
        from recstream.cli._util import reset_stdin

        reset_stdin()
        args = build_parser(command).parse_args(words)
        if _recstream._as_command and not gc.isenabled():
            gc.freeze()  # what start-up loaded stays out of every later collection
            gc.enable()
        func: Command = args.func
        return func(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        eprint(f"recstream: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_IO
    except OSError as exc:
        eprint(f"recstream: error: {describe_os_error(exc)}")
        return exit_code_for(exc)
    except e.RecstreamError as exc:
        eprint(f"recstream: error: {exc}")
        return exit_code_for(exc)
    except Exception as exc:  # a bug: say so in one line, not a traceback
        import os

        if os.environ.get("RECSTREAM_DEBUG"):
            import traceback

            traceback.print_exc()
        eprint(
            f"recstream: internal error (a bug; please report it with the command line): "
            f"{type(exc).__name__}: {exc}"
        )
        return EXIT_INTERNAL
    finally:
        if restore_signals is not None:
            restore_signals()


def run() -> None:  # pragma: no cover - console-script shim
    try:
        code = main()
        # Flush here so that a reader closing the pipe early is not a traceback.
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_IO
    if code in (EXIT_INTERRUPTED, EXIT_IO):
        # stdout may be a closed pipe: make the interpreter's final flush silent.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        if code == EXIT_INTERRUPTED:
            # Interrupted: every clean-up has run on the way out of main().  Exit now
            # rather than join worker threads that may sit in a write to a pipe that
            # nobody reads (the bulk path's pool), which would never return.
            sys.stderr.flush()
            os._exit(code)
    sys.exit(code)
