"""A node agent's connection to the broker (see ``otp.broker``): one CURVE-encrypted DEALER.

The agent owns the cluster state of its node (which nodes are up, the replica of the global
names, remote links and monitors); this module only speaks the wire: it joins, keeps time,
sends and receives frames.
"""
from __future__ import annotations

import logging
import struct
import time
from typing import Any

import zmq

from otp import codec
from otp import protocol as P
from otp.cookie import BROKER_ROLE, curve_keypair, node_role

log = logging.getLogger("otp.agent")

JOIN_TIMEOUT = 10.0
"""Seconds a node waits for the broker's welcome before it gives up starting."""
# The sugar layer's checks cost more than the call itself.
_send, _recv, _get = zmq.backend.Socket.send, zmq.backend.Socket.recv, zmq.backend.Socket.get
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # IntFlag operators run in Python
_MORE = zmq.SNDMORE | zmq.NOBLOCK
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class JoinError(Exception):
    """The broker refused this node, or none answered."""


class BrokerLink:
    """The agent's end of the broker connection."""

    def __init__(self, ctx: zmq.Context, address: str, cookie: str, node_name: str) -> None:
        self.address = address
        self.node_name = node_name
        sock = self.sock = ctx.socket(zmq.DEALER)
        sock.curve_serverkey = curve_keypair(cookie, BROKER_ROLE)[0]
        sock.curve_publickey, sock.curve_secretkey = curve_keypair(cookie, node_role(node_name))
        sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_NETWORK_FRAME)
        sock.setsockopt(zmq.SNDHWM, P.NODE_QUEUE)
        sock.setsockopt(zmq.RCVHWM, P.NODE_QUEUE)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # ZMTP heartbeats close a connection whose peer went silent (a partition leaves TCP
        # half-open for minutes), so that the socket reconnects.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        self.monitor = sock.get_monitor_socket(_HANDSHAKE_FAILED)
        sock.connect(address)
        self.tick = 3.0
        self.joined = False
        self.incarnation: Any = None     # the broker's, from its welcome
        self.last_heard = time.monotonic()
        self.last_hello = 0.0
        self._last_drop_log = 0.0
        self.dropped = 0
        self._routes: dict[bytes, list[bytes]] = {}   # node -> queued batch entries

    # ----------------------------------------------------------------- sending

    def send_op(self, op: list) -> None:
        self._send([P.TO_BROKER, codec.encode(op)])

    def to_agent(self, node: str, op: list) -> None:
        self._send([P.TO_AGENT, node.encode(), codec.encode(op)])

    def queue_route(self, frame: bytes) -> None:
        """Take a route frame from a process; it goes out with the next ``flush_routes``."""
        node, entry = P.split_route_frame(frame)
        entries = self._routes.get(node)
        if entries is None:
            entries = self._routes[node] = []
        entries.append(P.U32.pack(len(entry)))
        entries.append(entry)

    def flush_routes(self) -> None:
        """Send what was queued, one batch per destination node (dropped while not joined)."""
        if not self._routes:
            return
        routes, self._routes = self._routes, {}
        if self.joined:
            for node, entries in routes.items():
                self._send([P.TO_PROCESS, node, b"".join(entries)])

    def _send(self, parts: list) -> None:
        send, sock = _send, self.sock
        try:
            for part in parts[:-1]:
                send(sock, part, _MORE)
            send(sock, parts[-1], zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 1.0:
                self._last_drop_log = now
                log.warning("node %s dropped frames to the broker (%d so far): the broker is out of "
                            "reach or its queue is full", self.node_name, self.dropped)

    def hello(self, names: list, locks: list, creation: int) -> None:
        self.last_hello = time.monotonic()
        self.send_op(["hello", self.node_name, creation, names, locks])

    # ----------------------------------------------------------------- receiving

    def receive(self) -> list | None:
        """The next frame from the broker (its parts as bytes), or None if none waits."""
        sock = self.sock
        if not _get(sock, _EVENTS) & _POLLIN:   # cheaper than a zmq.Again
            return None
        parts = [_recv(sock, 0)]
        while _get(sock, zmq.RCVMORE):
            parts.append(_recv(sock, 0))
        self.last_heard = time.monotonic()
        return parts

    def handshake_failed(self) -> bool:
        """Whether the monitor reported a failed CURVE handshake since the last look."""
        failed = False
        while self.monitor.poll(0):
            failed = failed or bool(monitor_event(self.monitor) & _HANDSHAKE_FAILED)
        return failed

    def close(self, leaving: bool) -> None:
        if leaving and self.joined:
            self.send_op(["bye"])
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=1000 if leaving else 0)


def monitor_event(monitor: zmq.Socket) -> int:
    """Receive one event of a ZeroMQ socket monitor; its event id.

    (``zmq.utils.monitor`` would do the same, but it imports asyncio: 4 MB more in the node agent,
    and so in its zygote and every process forked from it.)
    """
    frames = monitor.recv_multipart()
    return struct.unpack_from("=h", frames[0])[0]
