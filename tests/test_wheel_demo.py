"""`pip install .` (a wheel, not editable) then `recstream demo` works (issue 17).

The wheel is built from a copy of the tracked sources (so the checkout gets no build/ or
egg-info), installed with pip into a fresh virtualenv, and its `recstream` script runs
the demo from a directory outside the checkout.  The dependencies are not downloaded:
the fresh venv sees this venv's site-packages through a .pth line appended after its
own, so the installed wheel, not the editable checkout, is what gets imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP = (sys.executable, "-m", "pip")

pytestmark = pytest.mark.timeout(600)


def _tracked_copy(dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dst / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / src.relative_to(ROOT))


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src-copy"
    _tracked_copy(src)
    out = tmp / "dist"
    subprocess.run(
        [
            *PIP,
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("recstream-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from this venv, after the fresh venv's own site-packages; a bare path
    # line, so this venv's own .pth files (the editable install's finder) are not run.
    Path(site, "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*PIP, "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return venv


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {"recstream/samples/call.wav", "recstream/samples/screen.webm"} <= names

    venv = _fresh_venv(tmp_path, wheel)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import recstream; print(recstream.__file__)"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the wheel, not the checkout

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    work = tmp_path / "demo"
    done = subprocess.run(
        [str(venv / "bin" / "recstream"), "demo", "--workdir", str(work)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "video vp8 from 2.50 s to 14.50 s" in done.stdout
    assert "6. flipped one bit of a copy and decrypted it: refused" in done.stdout
    assert (work / "playback.webm").stat().st_size > 0


def test_a_missing_sample_is_a_clear_error() -> None:
    """The demo names the sample it cannot find, rather than a bare traceback path."""
    from recstream import demo

    with pytest.raises(FileNotFoundError, match=r"no-such\.wav"):
        demo.sample_bytes("no-such.wav")
