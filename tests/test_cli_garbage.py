"""Every command and subcommand, fed garbage: never a traceback, never exit 1, never a file '-'.

The command tree is read from the parser itself, so a command added later is
covered without editing this file.  Each leaf gets: nothing, an unknown option,
then every garbage value (a junk file, an empty file, a missing path, a
directory, '-', an empty string, bidi and line-separator text, a huge number) in
every positional at once, in every value option at once, and in each value option
alone.  Whatever the command decides, the exit code must be one of the table's
codes other than 1 (a bug), stderr must hold no traceback, and nothing may be
written to a file named '-' (it means stdin/stdout, or is refused with exit 2).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.cli import build_parser, main

EXIT_TABLE = {0, 2, 3, 4, 5, 6, 7, 130}
GARBAGE = [
    "garbage.bin",
    "empty.bin",
    "missing/nothing",
    "adir",
    "-",
    "",
    "\u202ex\u2028y",
    "9" * 30,
]
# Values that would start real, long work in these commands: they get only the
# garbage that must be refused before any work starts.
LONG_RUNNING = {"bench", "demo"}
SAFE_FOR_LONG_RUNNING = ["-", ""]  # every option of bench and demo must refuse these


def leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs or prefix == ("serve",):
        yield prefix, parser  # `serve` runs the server itself, and has actions too
    for s in subs:
        for name, sub in s.choices.items():
            yield from leaves(sub, (*prefix, name))


LEAVES = dict(leaves(build_parser()))


def lines_for(words: tuple[str, ...], parser: argparse.ArgumentParser) -> Iterator[list[str]]:
    opts = [
        a for a in parser._actions
        if a.option_strings and a.nargs != 0 and a.help != argparse.SUPPRESS
        and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
    ]  # fmt: skip
    positionals = [
        a for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]  # fmt: skip
    long_running = words[0] in LONG_RUNNING
    values = SAFE_FOR_LONG_RUNNING if long_running else GARBAGE

    def fill(value: str) -> list[str]:
        out: list[str] = []
        for a in positionals:
            out += [value] * (2 if a.nargs in ("+", "*") else 1)
        return out

    if not long_running:
        yield [*words]
    yield [*words, "--no-such-option"]
    for v in values:
        if positionals:
            yield [*words, *fill(v)]
        if long_running:
            for a in opts:
                if a.type not in (None, str, Path) or a.choices is not None:  # must parse
                    yield [*words, a.option_strings[-1], v]
            continue
        everything = [*words]
        for a in opts:
            everything += [a.option_strings[-1], v]
        yield everything + fill(v)
        for a in opts:
            required = []
            for other in opts:
                if other.required and other is not a:
                    required += [other.option_strings[-1], "garbage.bin"]
            yield [*words, *required, a.option_strings[-1], v, *fill("garbage.bin")]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "garbage.bin").write_bytes(b"\x00garbage\xff\n" * 50)
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("RECSTREAM_KEYSTORE", str(tmp_path / "no-keystore.rsk"))
    monkeypatch.delenv("RECSTREAM_KEYSTORE_PASSWORD", raising=False)
    return tmp_path


@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_garbage_never_a_traceback(
    words: tuple[str, ...],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failures = []
    for line in lines_for(words, LEAVES[words]):
        if os.environ.get("GARBAGE_TRACE"):  # which line hangs, when one does
            with Path(os.environ["GARBAGE_TRACE"]).open("a") as trace:
                trace.write(f"{line!r}\n")
        with open(workdir / "garbage.bin", "rb") as stdin:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stdin))
            code = main(line)
        _out, err = capsys.readouterr()
        dash = workdir / "-"
        if code not in EXIT_TABLE or "Traceback" in err or "internal error" in err:
            failures.append(f"{line!r}: exit {code}: {err.strip()[-300:]}")
        if dash.exists():
            failures.append(f"{line!r}: wrote a file named '-'")
            dash.unlink()
    assert not failures, "\n".join(failures)


def test_no_dash_file_and_no_traceback_as_real_processes(tmp_path: Path) -> None:
    """The console entry point itself (imports, stdout flush, interpreter exit)."""
    (tmp_path / "garbage.bin").write_bytes(b"\x00garbage\xff" * 10)
    env = {**os.environ, "RECSTREAM_KEYSTORE": str(tmp_path / "none.rsk")}
    for line in (
        ["inspect", "-"],
        ["decrypt", "--key", "garbage.bin", "-", "-"],
        ["recover", "--key", "garbage.bin", "garbage.bin", "-"],
        ["pki", "show", "-"],
        ["no-such-command"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "recstream", *line], cwd=tmp_path, env=env,
            input=b"\x00garbage", capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert r.returncode in EXIT_TABLE - {0}, (line, r.returncode, r.stderr)
        assert b"Traceback" not in r.stderr, (line, r.stderr)
        assert not (tmp_path / "-").exists(), line
