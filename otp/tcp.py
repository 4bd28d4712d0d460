"""TCP sockets owned by a process, their events delivered as messages (Erlang's active-once mode).

    listener = otp.tcp.listen(5555)
    conn, _ = listener.accept()                       # a plain socket
    ticket = otp.tcp.offer(conn)                      # hand it to another process of the node:
    otp.supervisor.start_child(sessions, (ticket,))   # ... which calls otp.tcp.claim(ticket)

    sock = otp.tcp.claim(ticket)     # now owned by the calling process
    sock.active_once()               # the next chunk of data arrives as one message:
    match otp.receive():
        case otp.Tcp(sock=sock.id, data=data): ...
        case otp.TcpClosed(sock=sock.id): ...

A reader thread of the owning OS process waits for ``active_once()``, reads once, and puts the
result in the owner's mailbox, so data never piles up unasked (flow control, as ``{active,
once}``). A connection crosses to another OS process of the node as a file descriptor over a
unix socket in the node's private run directory (``offer``/``claim``).
"""
from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import weakref

from otp import codec
from otp import protocol as P
from otp.runtime import at_process_exit, current, peer_socket
from otp.terms import Pid, Tcp, TcpClosed

READ_SIZE = 65536
OFFER_TIMEOUT = 10.0
"""Seconds an offered connection waits to be claimed before it is closed."""
_ids = itertools.count(1)
_open: "weakref.WeakSet[Socket]" = weakref.WeakSet()


class Socket:
    """A TCP connection owned by one process; see the module doc."""

    def __init__(self, sock: socket.socket, owner: Pid | None = None) -> None:
        rt = current()
        self.id = next(_ids)
        self.owner = owner or rt.pid
        self._sock = sock
        self._armed = threading.Event()
        self._closed = False
        self._node = rt.node
        self._reader = threading.Thread(target=self._read, name=f"otp-tcp-{self.id}", daemon=True)
        self._reader.start()
        _open.add(self)
        at_process_exit(_close_all)

    @property
    def peername(self) -> tuple:
        return self._sock.getpeername()

    def active_once(self) -> None:
        """Deliver the next chunk of data (or the close) as one message to the owner."""
        self._armed.set()

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._armed.set()

    def _read(self) -> None:
        # Its own ZeroMQ socket to the owner's mailbox: this thread is not an otp process.
        out = peer_socket(self._node.ctx, 1000)
        out.connect(P.endpoint(self._node.rundir, self.owner.id))
        try:
            while True:
                self._armed.wait()
                self._armed.clear()
                if self._closed:
                    return
                try:
                    data = self._sock.recv(READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    out.send(codec.encode(TcpClosed(self.id)))
                    return
                out.send(codec.encode(Tcp(self.id, data)))
        finally:
            out.close()

    def __repr__(self) -> str:
        return f"<otp.tcp.Socket {self.id} owned by {self.owner!r}>"


def _close_all() -> None:
    """The process ends: close its sockets and let their reader threads close their own."""
    sockets = list(_open)
    for sock in sockets:
        sock.close()
    for sock in sockets:
        sock._reader.join(1.0)


def listen(port: int, host: str = "0.0.0.0", backlog: int = 128) -> socket.socket:
    """A listening socket (``port`` 0 picks a free one: ``listener.getsockname()[1]``)."""
    return socket.create_server((host, port), backlog=backlog, reuse_port=False)


def connect(host: str, port: int, timeout: float | None = 10.0) -> Socket:
    """A connection owned by the calling process."""
    return Socket(socket.create_connection((host, port), timeout=timeout))


def offer(conn: socket.socket) -> str:
    """Offer ``conn`` to another process of this node; return the ticket it ``claim``s it with.
    ``conn`` is closed here once handed over (or after ``OFFER_TIMEOUT`` if nobody claims it)."""
    rundir = current().node.rundir
    path = os.path.join(rundir, f"tcp-{secrets.token_hex(8)}")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(OFFER_TIMEOUT)

    def hand_over() -> None:
        try:
            peer, _ = server.accept()
            with peer:
                socket.send_fds(peer, [b"fd"], [conn.fileno()])
                peer.recv(1)  # the claimer has it
        except OSError:
            pass
        finally:
            server.close()
            conn.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    threading.Thread(target=hand_over, name="otp-tcp-offer", daemon=True).start()
    return path


def claim(ticket: str) -> Socket:
    """Take the connection ``offer`` made into a ``Socket`` owned by the calling process."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.connect(ticket)
        _, fds, _, _ = socket.recv_fds(channel, 16, 1)
        channel.send(b"k")
    if not fds:
        raise ConnectionError(f"no connection came with ticket {ticket}")
    return Socket(socket.socket(fileno=fds[0]))
