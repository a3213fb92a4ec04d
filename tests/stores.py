"""Real object stores on loopback for the tests: S3 (``moto_server``) and WebDAV (``wsgidav``).

Each :class:`StoreServer` runs the real server in a subprocess on a free 127.0.0.1 port and
puts a small TCP gate in front of it on a second port, which is the one clients use.  The
gate is how the outage tests take the store away and bring it back *on the same port*:

* :meth:`StoreServer.stop` closes the listening socket (new connections are refused) and
  resets every open connection (an upload in flight breaks as it would when a store dies);
* :meth:`StoreServer.start` listens again on the same port.

The server behind the gate keeps its data across a stop/start, as a real store keeps its
objects across a restart (moto keeps its state in memory, so killing *it* would lose every
object and hide exactly the "uploaded once" property the tests check).

Readiness is probed (an HTTP request answered), never slept for.  Credentials are made per
session and handed over as environment variables (:attr:`StoreServer.env`), which is how
recstream reads them: ``AWS_*`` for S3 (with ``AWS_ENDPOINT_URL_S3`` naming the endpoint),
``RECSTREAM_WEBDAV_USERNAME`` / ``RECSTREAM_WEBDAV_PASSWORD`` for WebDAV.

Fixtures (``tests/conftest.py`` imports them): ``s3_server`` and ``webdav_server``
(session-scoped :class:`StoreServer`), and ``store`` (function-scoped, parametrized over both
kinds): a :class:`StoreArea` with a fresh prefix, the server's env set through monkeypatch,
and the gate re-opened at teardown if the test stopped it; ``s3_store`` / ``webdav_store``
the same on one kind only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "StoreArea",
    "StoreServer",
    "s3_server",
    "s3_store",
    "store",
    "webdav_server",
    "webdav_store",
]

BUCKET = "recstream-test"
WEBDAV_USER = "recorder"
READY_TIMEOUT = 120.0  # a hang guard for a loaded machine; readiness is probed, not waited
_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Gate:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:backend that can refuse and cut."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._upstream: set[socket.socket] = set()
        self._sent = threading.Condition()
        self.sent = 0  # bytes forwarded client -> server since start
        self.open()

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        if self._listener is not None:
            return
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self.port = lst.getsockname()[1]
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and reset the open ones."""
        lst, self._listener = self._listener, None
        if lst is not None:
            with contextlib.suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
            lst.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                # linger 0: close() sends RST, as a dying server's kernel does
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def wait_sent(self, n: int, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until ``sent`` (bytes clients sent the server) reaches ``n``."""
        with self._sent:
            return self._sent.wait_for(lambda: self.sent >= n, timeout)

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.backend))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not lst:  # closed meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
                self._upstream.add(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            to_server = dst in self._upstream
            while data := src.recv(256 * 1024):
                dst.sendall(data)
                if to_server:
                    with self._sent:
                        self.sent += len(data)
                        self._sent.notify_all()
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
        finally:
            with self._lock:
                self._conns.discard(src)
                self._upstream.discard(src)
                last = dst not in self._conns
            if last:  # the other direction is done too
                src.close()
                dst.close()


class StoreServer:
    """One real store server (``kind`` "s3" or "webdav") behind a :class:`_Gate`.

    Attributes:
        url: the recstream URL of the store's root: ``s3://recstream-test`` or
            ``webdav+http://127.0.0.1:PORT/dav``.
        readonly_url: WebDAV only: a share whose writes are refused with 403.
        env: the environment a client needs (credentials, S3 endpoint).
        endpoint: ``http://127.0.0.1:PORT`` (through the gate).
        direct_endpoint: the server itself, bypassing the gate (for benchmarks).
    """

    def __init__(self, kind: str, workdir: Path, *, versioned: bool = True) -> None:
        if kind not in ("s3", "webdav"):
            msg = f"unknown store kind {kind!r}"
            raise ValueError(msg)
        self.kind = kind
        self.workdir = workdir
        self.password = secrets.token_urlsafe(18)  # also the S3 secret key
        self.versioned = versioned
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / f"{kind}-server.log"
        self.backend_port = self._launch()
        self._gate = _Gate(self.backend_port)
        self.port = self._gate.port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.direct_endpoint = f"http://127.0.0.1:{self.backend_port}"
        if kind == "s3":
            self.url = f"s3://{BUCKET}"
            self.readonly_url: str | None = None
            self.env = {
                "AWS_ACCESS_KEY_ID": "recstream-test",
                "AWS_SECRET_ACCESS_KEY": self.password,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": self.endpoint,
                # no instance-metadata lookups, no ~/.aws of whoever runs the tests
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
            }
            self._create_bucket()
        else:
            self.url = f"webdav+http://127.0.0.1:{self.port}/dav"
            self.readonly_url = f"webdav+http://127.0.0.1:{self.port}/ro"
            self.env = {
                "RECSTREAM_WEBDAV_USERNAME": WEBDAV_USER,
                "RECSTREAM_WEBDAV_PASSWORD": self.password,
            }

    # --- the server process -----------------------------------------------------------

    def _launch(self) -> int:
        for _ in range(5):  # a free port can be taken before the server binds it
            port = _free_port()
            cmd, env = self._command(port)
            with self._log.open("ab") as log:
                self._proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
                )
            if self._wait_ready(port):
                return port
            self._kill()
        msg = f"{self.kind} server did not start; see {self._log}:\n{self._log.read_text()[-3000:]}"
        raise RuntimeError(msg)

    def _command(self, port: int) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if self.kind == "s3":
            return [str(_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env
        rw, ro = self.workdir / "dav", self.workdir / "ro"
        rw.mkdir(exist_ok=True)
        ro.mkdir(exist_ok=True)
        config = {
            "host": "127.0.0.1",
            "port": port,
            "server": "cheroot",
            "provider_mapping": {"/dav": str(rw), "/ro": {"root": str(ro), "readonly": True}},
            "http_authenticator": {
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
                "trusted_auth_header": None,
            },
            "simple_dc": {"user_mapping": {"*": {WEBDAV_USER: {"password": self.password}}}},
            "verbose": 1,
            "logging": {"enable_loggers": []},
        }
        cfg = self.workdir / "wsgidav.json"
        cfg.write_text(json.dumps(config))
        return [str(_BIN / "wsgidav"), "--config", str(cfg)], env

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return True
            except OSError:
                time.sleep(0.05)  # poll interval between probes, not a wait for readiness
        return False

    def _create_bucket(self) -> None:
        # Plain PUTs: moto does not check signatures, and s3fs's mkdir sends a
        # LocationConstraint that us-east-1 refuses.  Versioned, so that the tests can
        # count how many times a key was written (object_versions).
        versioning = (
            b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<Status>Enabled</Status></VersioningConfiguration>"
        )
        steps = [(f"/{BUCKET}", b""), (f"/{BUCKET}?versioning", versioning)]
        for path, body in steps[: 2 if self.versioned else 1]:
            conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=30)
            conn.request("PUT", path, body=body)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status != 200:
                msg = f"moto refused {path}: HTTP {resp.status}"
                raise RuntimeError(msg)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    # --- outages ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._gate.is_open

    def stop(self) -> None:
        """Take the store away: its port refuses connections, open ones are reset."""
        self._gate.close()

    def start(self) -> None:
        """Bring the store back on the same port (with the objects it had)."""
        self._gate.open()

    def close(self) -> None:
        self._gate.close()
        self._kill()

    @property
    def sent(self) -> int:
        """Bytes clients have sent the server through the gate (uploads in flight show here)."""
        return self._gate.sent

    def wait_sent(self, n: int) -> bool:
        """Wait (readiness, with a hang guard) until clients have sent ``n`` bytes in all."""
        return self._gate.wait_sent(n)

    def local_file(self, fs_path: str) -> Path:
        """WebDAV only: the server's own file behind an fs path (its inode shows rewrites)."""
        if self.kind != "webdav":
            msg = "only the WebDAV server keeps files on this machine's disk"
            raise ValueError(msg)
        return self.workdir / fs_path

    def object_versions(self, fs_path: str) -> int:
        """S3 only: how many versions the bucket (versioned) holds of a key: commits."""
        import boto3

        bucket, _, key = fs_path.partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=self.direct_endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.password,
            region_name="us-east-1",
        )
        out = client.list_object_versions(Bucket=bucket, Prefix=key)
        return sum(v["Key"] == key for v in out.get("Versions", []))

    # --- clients ----------------------------------------------------------------------

    def filesystem(self, *, direct: bool = False) -> Any:
        """A plain fsspec filesystem on the store (not through recstream), fresh instance."""
        endpoint = self.direct_endpoint if direct else self.endpoint
        if self.kind == "s3":
            import s3fs

            fs = s3fs.S3FileSystem(
                key=self.env["AWS_ACCESS_KEY_ID"],
                secret=self.password,
                endpoint_url=endpoint,
                client_kwargs={"region_name": "us-east-1"},
                config_kwargs={"retries": {"max_attempts": 2}},
                skip_instance_cache=True,
                use_listings_cache=False,
            )
            fs.retries = 2  # a stopped store fails soon (s3fs retries 5 times by default)
            return fs
        from webdav4.fsspec import WebdavFileSystem

        return WebdavFileSystem(f"{endpoint}/", auth=(WEBDAV_USER, self.password))

    def fs_path(self, url: str) -> str:
        """The path in :meth:`filesystem` of a URL under :attr:`url` (or ``readonly_url``)."""
        if url.startswith("s3://"):
            return url.removeprefix("s3://")
        prefix = f"webdav+http://127.0.0.1:{self.port}/"
        if not url.startswith(prefix):
            msg = f"{url} is not on this server"
            raise ValueError(msg)
        return url.removeprefix(prefix)


@dataclass
class StoreArea:
    """A fresh prefix on a store server for one test."""

    server: StoreServer
    url: str  # recstream URL of the prefix
    path: str  # the same place in ``fs``
    fs: Any  # a plain fsspec filesystem on the store (through the gate)

    @property
    def kind(self) -> str:
        return self.server.kind

    @property
    def env(self) -> dict[str, str]:
        return self.server.env

    def find(self) -> dict[str, int]:
        """Every object under the prefix: path relative to it -> size."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.path):
            return {}
        found = self.fs.find(self.path, detail=True)
        return {p[len(self.path) + 1 :]: int(info["size"]) for p, info in found.items()}

    def read(self, rel: str) -> bytes:
        self.fs.invalidate_cache()
        return bytes(self.fs.cat_file(f"{self.path}/{rel}"))


@contextlib.contextmanager
def running_server(kind: str, *, versioned: bool = True) -> Iterator[StoreServer]:
    """A :class:`StoreServer` for the block (``versioned``: S3 keeps every version, so
    tests can count writes; benchmarks turn it off to keep moto's memory flat)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"recstream-{kind}-"))
    server = StoreServer(kind, workdir, versioned=versioned)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[StoreServer]:
    with running_server("s3") as server:
        yield server


@pytest.fixture(scope="session")
def webdav_server() -> Iterator[StoreServer]:
    with running_server("webdav") as server:
        yield server


def area(server: StoreServer, monkeypatch: pytest.MonkeyPatch) -> StoreArea:
    """A fresh prefix on ``server`` with its env set in this process."""
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    url = f"{server.url}/{prefix}"
    fs = server.filesystem()
    path = server.fs_path(url)
    if server.kind == "webdav":
        fs.makedirs(path, exist_ok=True)
    return StoreArea(server, url, path, fs)


@pytest.fixture(params=["s3", "webdav"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreArea]:
    server: StoreServer = request.getfixturevalue(f"{request.param}_server")
    yield area(server, monkeypatch)
    server.start()  # a test that stopped the store leaves it running for the next


@pytest.fixture
def s3_store(s3_server: StoreServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreArea]:
    """``store`` on S3 only (for what does not depend on the kind of store)."""
    yield area(s3_server, monkeypatch)
    s3_server.start()


@pytest.fixture
def webdav_store(
    webdav_server: StoreServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreArea]:
    """``store`` on WebDAV only."""
    yield area(webdav_server, monkeypatch)
    webdav_server.start()
