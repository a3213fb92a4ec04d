"""A TLS listener that admits each connection before its handshake.

``loop.create_server(..., ssl=ctx)`` shows the protocol a connection only once its
TLS handshake is done, and a client may hold a handshake open for the whole
handshake timeout without sending a byte.  Those connections hold descriptors
that no admission control sees: a few dozen per second were enough to exhaust a
server's open-file limit, and then its recordings' files failed to open (the
round-4 review reproduced it against the media-streams server).

:class:`TlsListener` accepts itself instead: each accepted socket is offered to
``admit(address)`` at once -- refused, it is closed (no TLS yet to answer in) --
and an admitted one is handed with ``ssl=`` to ``loop.connect_accepted_socket``,
which does the handshake from the first byte and then calls the protocol's
``connection_made``.  While the handshake runs the connection is the listener's
(``pending``; the caller's budget counts it); if the handshake fails or times out,
``release(address)`` gives its slot back.  Once it succeeds the protocol owns the
connection (and its slot) like any other.

(An earlier version admitted in ``connection_made`` of a plain listener and then
called ``loop.start_tls``: uvloop starts reading right after ``connection_made``
returns, so the ClientHello could reach the protocol before the TLS layer did.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final

__all__ = ["ACCEPT_RETRY", "TlsListener", "bind"]

log = logging.getLogger("recstream.aio")

ACCEPT_RETRY: Final = 0.1  # after accept() fails for want of descriptors or memory
_SHORT_OF: Final = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def bind(host: str | None, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address of ``host:port`` (as
    ``create_server`` makes them: SO_REUSEADDR, IPv6 sockets IPv6-only, backlog 4096).

    Raises:
        OSError: an address cannot be bound.
    """
    socks: list[socket.socket] = []
    seen = set()
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(4096)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class TlsListener:
    """Accept on ``socks``; admit, then hand each admitted socket to TLS.

    Args:
        socks: listening sockets (:func:`bind`).
        tls: the server's TLS context.
        protocol: the protocol factory for an admitted connection's address.
        admit: called with the client's address at accept; False refuses it.
        release: called with the address when an admitted handshake fails.
        handshake_timeout: seconds a handshake may take.

    Must be created on the running loop; :meth:`close` stops it.
    """

    def __init__(
        self,
        socks: list[socket.socket],
        tls: ssl.SSLContext,
        protocol: Callable[[str], Callable[[], asyncio.BaseProtocol]],
        *,
        admit: Callable[[str], bool],
        release: Callable[[str], None],
        handshake_timeout: float,
    ) -> None:
        self.sockets = tuple(socks)
        self._tls = tls
        self._protocol = protocol
        self._admit = admit
        self._release = release
        self._timeout = handshake_timeout
        self.pending = 0  # admitted connections whose handshake is not done
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._accept(sock)) for sock in socks]
        self._handshakes: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        for task in (*self._tasks, *self._handshakes):
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _SHORT_OF:
                    log.warning("cannot accept a connection now: %s", exc.strerror)
                    await asyncio.sleep(ACCEPT_RETRY)
                    continue
                if sock.fileno() < 0:  # closed: the server is stopping
                    return
                continue  # the peer went away before the accept (ECONNABORTED and kin)
            address = str(addr[0]) if isinstance(addr, tuple) and addr else "unknown"
            if not self._admit(address):
                conn.close()  # no TLS yet to answer in
                continue
            self.pending += 1
            task = loop.create_task(self._handshake(conn, address))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, address: str) -> None:
        done = False
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self._protocol(address), conn, ssl=self._tls, ssl_handshake_timeout=self._timeout
            )
            done = True
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            conn.close()  # that connection's handshake failed or timed out: it alone
        except asyncio.CancelledError:
            conn.close()
            raise
        finally:
            self.pending -= 1
            if not done:
                self._release(address)
