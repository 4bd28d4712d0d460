"""The broker: the ZeroMQ ROUTER that joins nodes into a cluster.

Run one with ``python -m otp broker --bind tcp://HOST:PORT`` or embed one::

    with otp.Broker("tcp://127.0.0.1:4370", cookie="secret") as broker:
        with otp.Node("node_a", cookie="secret", broker=broker.address):
            ...

Each node's agent holds one CURVE-encrypted DEALER connection to it (keys derived from the
cookie, see ``otp.cookie``). The broker

- routes frames between nodes: messages and replies for processes of another node, and the
  agents' link, monitor and exit-signal traffic (``protocol.TO_PROCESS``, ``TO_AGENT``), without
  decoding what it forwards;
- holds the global name table (each node keeps a replica, as Erlang's ``global`` does) and the
  lock table, and learns of the deaths that free them from the owners' agents;
- pings every node each ``tick / 4`` seconds and declares a node down when it has not answered
  for ``tick`` seconds, or at once (after a probe) when a connection closes and that node does
  not answer;
- keeps only soft state: restarted, it asks each node that speaks to it who it is, and the node
  joins again with its global names and locks, so no registered name is lost.

A slow node never stalls it: each node's queue is bounded, and what does not fit is dropped
with a log line. Malformed, oversized or unknown frames are dropped and logged.
"""
from __future__ import annotations

import argparse
import logging
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from otp import codec
from otp import protocol as P
from otp.broker_link import monitor_event
from otp.cookie import BROKER_ROLE, curve_keypair, node_role, resolve_cookie
from otp.errors import NodeError
from otp.terms import Pid

log = logging.getLogger("otp.broker")

DEFAULT_ADDRESS = "tcp://127.0.0.1:4370"
DEFAULT_TICK = 3.0
"""Seconds of silence after which a node is declared down (Erlang's net_ticktime is 60)."""
PROBE_TIMEOUT = 1.0
"""When a connection closes, nodes that do not answer a ping within this are declared down."""
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_MORE = zmq.SNDMORE | zmq.NOBLOCK
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # IntFlag operators run in Python


@dataclass(eq=False)
class _Node:
    name: str
    creation: int
    identity: bytes
    last_heard: float
    name_bytes: bytes = b""

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode()


@dataclass(eq=False)
class _Lock:
    owner: Pid | None = None
    waiters: deque = field(default_factory=deque)   # (pid, tag), in arrival order


class Broker:
    """A broker bound at ``bind``; ``start()`` serves it from a thread of this program,
    ``serve_forever()`` from the calling thread."""

    def __init__(self, bind: str = DEFAULT_ADDRESS, cookie: str | None = None,
                 tick: float = DEFAULT_TICK, max_frame: int = P.MAX_NETWORK_FRAME) -> None:
        if tick <= 0:
            raise ValueError(f"tick must be positive; got {tick!r}")
        self.bind = bind
        self.cookie = resolve_cookie(cookie)
        self.tick = float(tick)
        self.max_frame = max_frame
        self.address: str | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_endpoint = f"inproc://otp-broker-stop-{id(self)}"
        self._ctx: zmq.Context | None = None
        self.on_ready: Any = None       # called with the bound address, from the broker's thread
        self.dropped = 0
        self.malformed = 0
        self.refused = 0
        self._last_refusal_log = -1e9

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> "Broker":
        """Bind and serve from a daemon thread; return once bound (raises ``NodeError`` if
        the address cannot be bound)."""
        self._thread = threading.Thread(target=self._run_guarded, name="otp-broker", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            if self._ctx is not None:
                self._ctx.term()
            raise NodeError(f"the broker cannot bind {self.bind}: {self._error}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._ctx is None:
            return
        stopper = self._ctx.socket(zmq.PAIR)
        stopper.connect(self._stop_endpoint)
        stopper.send(b"stop")
        self._thread.join()
        stopper.close(linger=0)
        self._ctx.term()
        self._thread = None

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve from the calling thread until SIGINT or SIGTERM (raises ``NodeError`` if the
        address cannot be bound)."""
        def interrupt(*_: Any) -> None:
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, interrupt)
        try:
            self._run()
        except KeyboardInterrupt:
            pass
        except zmq.ZMQError as exc:
            raise NodeError(f"the broker cannot bind {self.bind}: {exc}") from None
        finally:
            if self._ctx is not None:
                self._ctx.term()

    def _run_guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # report a bind failure to start(); log anything else
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("broker %s stopped on an error", self.address)

    # ----------------------------------------------------------------- the loop

    def _run(self) -> None:
        ctx = self._ctx = zmq.Context()
        public, secret = curve_keypair(self.cookie, BROKER_ROLE)
        # CURVE checks clients only while a ZAP handler runs: bind it before the tcp endpoint.
        zap = ctx.socket(zmq.REP)
        zap.bind(_ZAP_ENDPOINT)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        router.setsockopt(zmq.SNDHWM, P.NODE_QUEUE)
        router.setsockopt(zmq.RCVHWM, P.NODE_QUEUE)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.HEARTBEAT_IVL, 1000)      # closes connections to silent peers
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        router.curve_server = True
        router.curve_publickey, router.curve_secretkey = public, secret
        monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                            | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        stop = ctx.socket(zmq.PAIR)
        stop.bind(self._stop_endpoint)
        try:
            router.bind(self.bind)
        except zmq.ZMQError:
            for sock in (zap, router, monitor, stop):
                sock.close(linger=0)
            raise
        self.address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.router = router
        self.nodes: dict[bytes, _Node] = {}
        self.by_name: dict[str, _Node] = {}
        self.names: dict[str, Pid] = {}
        self.locks: dict[bytes, _Lock] = {}
        self.watched: set[Pid] = set()
        self.started = time.monotonic()
        self.incarnation = secrets.randbits(62)   # tells a node this broker from a restarted one
        self.probe_started: float | None = None
        self._keys: dict[str, bytes] = {}
        self._last_drop_log = 0.0
        log.debug("otp broker listening on %s", self.address)
        self._ready.set()
        if self.on_ready is not None:
            self.on_ready(self.address)
        poller = zmq.Poller()
        for sock in (router, zap, monitor, stop):
            poller.register(sock, zmq.POLLIN)
        interval = self.tick / 4
        next_ping = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_ping:
                    self._heartbeat(now)
                    next_ping = now + interval
                wait = next_ping - now
                if self.probe_started is not None:
                    wait = min(wait, max(0.0, self.probe_started + min(PROBE_TIMEOUT, self.tick) - now))
                events = dict(poller.poll(max(1, int(wait * 1000))))
                if stop in events:
                    break
                if zap in events:
                    self._on_zap(zap)
                if monitor in events:
                    self._on_monitor(monitor)
                if router in events:
                    self._drain(router)
                if self.probe_started is not None and time.monotonic() >= self.probe_started + min(PROBE_TIMEOUT, self.tick):
                    self._end_probe()
        finally:
            router.disable_monitor()
            for sock in (zap, router, monitor, stop):
                sock.close(linger=0)

    def _drain(self, router: zmq.Socket) -> None:
        recv, get = zmq.backend.Socket.recv, zmq.backend.Socket.get   # cheaper than the sugar layer
        for _ in range(1000):  # then let the timers and the other sockets run
            if not get(router, _EVENTS) & _POLLIN:   # cheaper than a zmq.Again
                return
            # Parts as bytes (cheaper than Frames), but for a node's ops, whose Frame carries
            # the key (User-Id) the hello is checked against.
            parts = [recv(router, 0)]
            while get(router, zmq.RCVMORE):
                parts.append(recv(router, 0, len(parts) != 2 or parts[1] != P.TO_BROKER))
            try:
                self._on_frame(parts)
            except Exception as exc:  # a bad frame must never take the broker down
                self._malformed(parts[0], exc)

    def _malformed(self, identity: bytes, why: Any) -> None:
        self.malformed += 1
        node = self.nodes.get(identity)
        log.warning("broker dropped a malformed frame from %s: %s",
                    node.name if node else "an unknown peer", why)

    # ----------------------------------------------------------------- frames

    def _on_frame(self, parts: list) -> None:
        identity = parts[0]
        kind = parts[1] if len(parts) > 1 else b""
        node = self.nodes.get(identity)
        if node is not None:
            node.last_heard = time.monotonic()
        if kind == P.TO_PROCESS and len(parts) == 4:
            if node is None:
                return self._who_are_you(identity)
            dest = self.by_name.get(parts[2].decode())
            if dest is not None:  # the batch goes on unread
                self._send(dest, [P.TO_PROCESS, parts[2], parts[3]])
        elif kind == P.TO_AGENT and len(parts) == 4:
            if node is None:
                return self._who_are_you(identity)
            dest = self.by_name.get(parts[2].decode())
            if dest is not None:
                self._send(dest, [P.TO_AGENT, node.name_bytes, parts[3]])
        elif kind == P.TO_BROKER and len(parts) == 3:
            op = codec.decode(parts[2].bytes)
            if type(op) is not list or not op or type(op[0]) is not str:
                raise ValueError(f"not an op: {op!r:.80}")
            if op[0] == "hello":
                self._on_hello(identity, parts[2].get("User-Id"), *op[1:])
            elif node is None:
                self._who_are_you(identity)
            else:
                handler = getattr(self, f"_op_{op[0]}", None)
                if handler is None:
                    raise ValueError(f"unknown op {op[0]!r:.40}")
                handler(node, *op[1:])
        else:
            raise ValueError(f"{len(parts) - 1}-part frame of kind {kind[:8]!r}")

    def _send(self, node: _Node, parts: list) -> None:
        send, router = zmq.backend.Socket.send, self.router
        try:
            send(router, node.identity, _MORE)
            for part in parts[:-1]:
                send(router, part, _MORE)
            send(router, parts[-1], zmq.NOBLOCK)
        except zmq.Again:
            self._dropped(f"the queue to {node.name} is full")
        except zmq.ZMQError:  # EHOSTUNREACH: its connection is gone; the heartbeat will tell
            log.debug("broker dropped a frame to %s: its connection is gone", node.name)

    def _to_node(self, node: _Node, op: list) -> None:
        self._send(node, [P.TO_BROKER, codec.encode(op)])

    def _broadcast(self, op: list, but: _Node | None = None) -> None:
        frame = codec.encode(op)
        for node in list(self.nodes.values()):
            if node is not but:
                self._send(node, [P.TO_BROKER, frame])

    def _dropped(self, why: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            self._last_drop_log = now
            log.warning("broker dropped frames (%d so far): %s", self.dropped, why)

    def _who_are_you(self, identity: bytes) -> None:
        try:
            self.router.send_multipart([identity, P.TO_BROKER, codec.encode(["who_are_you", self.incarnation])], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # ----------------------------------------------------------------- joining and leaving

    def _on_hello(self, identity: bytes, user_id: str | None, name: str, creation: int,
                  names: list, locks: list) -> None:
        if type(name) is not str or type(creation) is not int:
            raise ValueError("hello without a node name and creation")
        expected = self._keys.get(name)
        if expected is None:
            if len(self._keys) >= 10_000:
                self._keys.clear()
            expected = self._keys[name] = curve_keypair(self.cookie, node_role(name))[0].decode()
        if user_id != expected:
            log.warning("broker refused node %s: its key is not the one the cookie gives that name", name)
            return self._refuse(identity, f"the key of {name} does not match the cookie")
        now = time.monotonic()
        old = self.by_name.get(name)
        if old is not None and old.identity != identity:
            if old.creation != creation and now - old.last_heard < self.tick:
                log.warning("broker refused a second node named %s", name)
                return self._refuse(identity, f"a node named {name} is already connected")
            self._forget_node(old, "connection_closed" if old.creation != creation else None)
        known = self.nodes.get(identity)
        if known is not None and known.name != name:
            self._forget_node(known, "connection_closed")
        fresh = identity not in self.nodes
        node = _Node(name, creation, identity, now)
        self.nodes[identity] = node
        self.by_name[name] = node
        self._to_node(node, ["welcome", self.incarnation, self.tick, [n for n in self.by_name if n != name],
                             [[n, pid] for n, pid in self.names.items()]])
        if fresh and (old is None or old.creation != creation):
            log.info("node %s joined", name)
            self._broadcast(["node_up", name], but=node)
        for gname, pid in names:
            self._claim_name(gname, pid)
        for resource, pid in locks:
            lock = self.locks.setdefault(resource, _Lock())
            if lock.owner is None:
                lock.owner = pid
                self._watch(pid)
            elif lock.owner != pid:
                log.warning("broker: two owners claim a lock after a restart; %r keeps it", lock.owner)

    def _refuse(self, identity: bytes, why: str) -> None:
        try:
            self.router.send_multipart([identity, P.TO_BROKER, codec.encode(["refused", why])], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _op_bye(self, node: _Node) -> None:
        self._forget_node(node, "connection_closed")

    def _op_pong(self, node: _Node) -> None:
        pass  # hearing from it was the point

    def _forget_node(self, node: _Node, reason: Any) -> None:
        """Drop ``node``: its names and locks go; others hear ``node_down`` (unless ``reason``
        is None: the same node came back on a new connection)."""
        self.nodes.pop(node.identity, None)
        if self.by_name.get(node.name) is node:
            del self.by_name[node.name]
        if reason is None:
            return
        log.info("node %s is down: %s", node.name, reason)
        for gname, pid in list(self.names.items()):
            if pid.node == node.name:
                self._remove_name(gname)
        self._release_pids(lambda pid: pid.node == node.name)
        self.watched = {pid for pid in self.watched if pid.node != node.name}
        self._broadcast(["node_down", node.name, reason])

    def _heartbeat(self, now: float) -> None:
        for node in list(self.nodes.values()):
            if now - node.last_heard > self.tick:
                self._forget_node(node, "net_tick_timeout")
            else:
                self._to_node(node, ["ping"])
        if self._settled():
            for resource in list(self.locks):  # locks asked for while nodes were rejoining
                self._grant_next(resource)

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        if monitor_event(monitor) == zmq.EVENT_DISCONNECTED:
            # A node's connection closed (killed, or left without a word): who is still there?
            if self.probe_started is None and self.nodes:
                self.probe_started = time.monotonic()
                self._broadcast(["ping"])
        else:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= 10.0:  # a refused peer retries ten times a second
                self._last_refusal_log = now
                log.warning("broker refused a connection on %s: the CURVE handshake failed (a node "
                            "with another cookie, or not an otp node; %d refused so far)", self.address, self.refused)

    def _end_probe(self) -> None:
        started, self.probe_started = self.probe_started, None
        for node in list(self.nodes.values()):
            if node.last_heard < started:
                self._forget_node(node, "connection_closed")

    # ----------------------------------------------------------------- ZAP

    def _on_zap(self, zap: zmq.Socket) -> None:
        """Admit CURVE clients (the handshake already proved they know the broker's key) and
        name each by its public key, which the hello then checks against the node's name."""
        request = zap.recv_multipart()
        version, request_id = request[0], request[1]
        mechanism = request[5] if len(request) > 5 else b""
        if mechanism == b"CURVE" and len(request) > 6 and len(request[6]) == 32:
            from zmq.utils import z85
            zap.send_multipart([version, request_id, b"200", b"OK", z85.encode(request[6]), b""])
        else:
            zap.send_multipart([version, request_id, b"400", b"CURVE only", b"", b""])

    # ----------------------------------------------------------------- global names

    def _op_register_name(self, node: _Node, proc_id: int, tag: int, name: str, pid: Pid) -> None:
        ok = (type(name) is str and type(pid) is Pid and name not in self.names
              and pid not in self.names.values() and pid.node in self.by_name)
        if ok:
            self._add_name(name, pid)
        self._to_node(node, ["reply", proc_id, tag, ok])

    def _op_unregister_name(self, node: _Node, proc_id: int, tag: int, name: str) -> None:
        if name in self.names:
            self._remove_name(name)
        self._to_node(node, ["reply", proc_id, tag, None])

    def _add_name(self, name: str, pid: Pid) -> None:
        self.names[name] = pid
        self._watch(pid)
        self._broadcast(["name_added", name, pid])

    def _remove_name(self, name: str) -> None:
        del self.names[name]
        self._broadcast(["name_removed", name])

    def _claim_name(self, name: str, pid: Pid) -> None:
        """A rejoining node says ``name`` is ``pid``'s: keep it, or resolve a clash as Erlang's
        default resolver does (the pid on the node whose name sorts first wins; the other is
        killed with ``("global_name_conflict", name)``)."""
        if type(name) is not str or type(pid) is not Pid:
            raise ValueError("a name claim needs a str and a Pid")
        current = self.names.get(name)
        if current is None:
            if pid not in self.names.values():
                self._add_name(name, pid)
            return
        if current == pid:
            self._watch(pid)
            return
        winner, loser = (current, pid) if current.node <= pid.node else (pid, current)
        log.warning("global: name conflict on %r between %r and %r: terminating %r", name, current, pid, loser)
        if winner != current:
            self._remove_name(name)
            self._add_name(name, winner)
        loser_node = self.by_name.get(loser.node)
        if loser_node is not None:
            self._to_node(loser_node, ["kill", loser.id, loser.creation, ("global_name_conflict", name)])

    def _watch(self, pid: Pid) -> None:
        if pid not in self.watched:
            node = self.by_name.get(pid.node)
            if node is not None:
                self.watched.add(pid)
                self._to_node(node, ["watch", pid.id, pid.creation])

    def _op_proc_down(self, node: _Node, pid: Pid, reason: Any) -> None:
        self.watched.discard(pid)
        for name, owner in list(self.names.items()):
            if owner == pid:
                self._remove_name(name)
        self._release_pids(lambda p: p == pid)

    # ----------------------------------------------------------------- locks

    def _op_set_lock(self, node: _Node, proc_id: int, tag: int, resource: bytes, pid: Pid, wait: bool) -> None:
        if type(resource) is not bytes or type(pid) is not Pid:
            raise ValueError("set_lock needs a resource and a Pid")
        lock = self.locks.setdefault(resource, _Lock())
        if lock.owner == pid or (lock.owner is None and self._settled() and not lock.waiters):
            lock.owner = pid
            self._watch(pid)
            self._to_node(node, ["reply", proc_id, tag, True])
        elif wait:
            lock.waiters.append((pid, tag))
            self._watch(pid)
        else:
            self._to_node(node, ["reply", proc_id, tag, False])
            if lock.owner is None and not lock.waiters:
                del self.locks[resource]

    def _settled(self) -> bool:
        """Whether a tick has passed since the broker started: until then, rejoining nodes may
        still bring the locks they hold, and no lock is granted."""
        return time.monotonic() - self.started > self.tick

    def _op_del_lock(self, node: _Node, resource: bytes, pid: Pid) -> None:
        lock = self.locks.get(resource)
        if lock is not None and lock.owner == pid:
            lock.owner = None
            self._grant_next(resource)

    def _grant_next(self, resource: bytes) -> None:
        lock = self.locks[resource]
        while lock.owner is None and lock.waiters:
            pid, tag = lock.waiters.popleft()
            node = self.by_name.get(pid.node)
            if node is not None:
                lock.owner = pid
                self._to_node(node, ["reply", pid.id, tag, True])
        if lock.owner is None and not lock.waiters:
            del self.locks[resource]

    def _release_pids(self, gone: Any) -> None:
        """Free the locks of the pids ``gone(pid)`` says are dead, and drop their waits."""
        for resource in list(self.locks):
            lock = self.locks[resource]
            lock.waiters = deque((pid, tag) for pid, tag in lock.waiters if not gone(pid))
            if lock.owner is not None and gone(lock.owner):
                lock.owner = None
            if lock.owner is None and self._settled():
                self._grant_next(resource)
            elif lock.owner is None and not lock.waiters:
                del self.locks[resource]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m otp broker", description="Run an otp broker.")
    parser.add_argument("--bind", default=DEFAULT_ADDRESS, help=f"ZeroMQ tcp endpoint (default {DEFAULT_ADDRESS})")
    parser.add_argument("--cookie", default=None, help="the cluster's cookie (default: $OTP_COOKIE or ~/.otp.cookie)")
    parser.add_argument("--tick", type=float, default=DEFAULT_TICK,
                        help=f"seconds of silence before a node is declared down (default {DEFAULT_TICK})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    broker = Broker(args.bind, cookie=args.cookie, tick=args.tick)
    broker.on_ready = lambda address: print(f"otp broker listening on {address}", flush=True)
    try:
        broker.serve_forever()
    except NodeError as exc:
        raise SystemExit(str(exc)) from None
