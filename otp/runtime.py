"""The runtime inside every otp process: its mailbox, its peers, its agent link.

Every process is an OS process spawned by its node, except the threads of a program that
embeds otp: each such thread that calls otp becomes a process of the node on first use (its
``Runtime`` attaches to the node agent). A process owns one mailbox socket (a PULL bound on an
ipc endpoint of the node's run directory); peers send to it directly over cached PUSH sockets,
so two processes talk without a hop through the agent. Everything that needs the node's tables
(spawn, links, monitors, names, exit signals) is a frame to the agent.
"""
from __future__ import annotations

import itertools
import math
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from otp import codec
from otp import protocol as P
from otp.errors import DecodeError, ExitError, NodeError, NoProc, Timeout
from otp.funcref import function_reference, load_function
from otp.mailbox import NOTHING, Mailbox, as_predicate
from otp.registry import RegistryGeneration
from otp.signals import exception_reason
from otp.terms import KILL, KILLED, NOPROC, NORMAL, Down, Exit, Pid, Ref

if zmq.zmq_version_info() < (4, 3, 5):  # pragma: no cover - pyzmq wheels bundle a newer one
    raise ImportError(f"otp needs libzmq >= 4.3.5, found {zmq.zmq_version()}")

log = logging.getLogger(__name__)
# Plain ints: pyzmq's constants are IntFlag members, whose operators run in Python (2.7 us a test).
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
# The sugar layer's checks cost more than the call itself.
_send, _recv, _get = zmq.backend.Socket.send, zmq.backend.Socket.recv, zmq.backend.Socket.get
_RUNTIME = P.RUNTIME
_CONTROL_ARITY = {P.REPLY: 3, P.KILL: 2, P.DEMONITOR: 2, P.INFO: 3}

REQUEST_TIMEOUT = 10.0
"""Seconds to wait for the node agent to answer a request before declaring the node gone."""
PEER_CACHE_SIZE = 1024
"""Sockets to other processes kept open per process; the oldest is closed past this."""
SEND_BLOCKED_TIMEOUT = 10.0
"""Seconds a send waits on a live peer whose queue is full before the message is dropped."""
PEER_LINGER_MS = 1000
"""How long a closing process keeps trying to deliver what it already sent."""
NAME_CACHE_SIZE = 1024
"""Names whose ``whereis`` answer a process keeps (see ``otp.registry``)."""
CALL_WATCHES = 256
"""Servers a process keeps watching between calls (and dead servers it remembers)."""
MAILBOX_CAPACITY = 1_000_000
"""Messages a mailbox socket takes in before senders must wait (Erlang's are unbounded)."""
SPIN_SECONDS = float(os.environ.get("OTP_SPIN_US", "20")) / 1e6
"""How long a receive polls without blocking before it sleeps: a wake-up costs more than this."""


@dataclass
class NodeContext:
    """What a process needs to know of its node: names, run directory, ZeroMQ context."""

    name: str
    creation: int
    rundir: str
    ctx: zmq.backend.Context   # a process's plain context (see new_process_context), or the usual one
    os_pid: int
    alive: bool = True
    _registry: RegistryGeneration | None = field(default=None, repr=False)

    def is_local(self, pid: Pid) -> bool:
        return pid.node == self.name and pid.creation == self.creation

    def registry_generation(self) -> int | None:
        """The local registry's generation now (None where it cannot be read)."""
        counter = self._registry
        if counter is None:
            counter = self._registry = RegistryGeneration.open(self.rundir)
            if counter is None:
                return None
        return counter.read()


_node: NodeContext | None = None
_tls = threading.local()
_runtimes: "weakref.WeakSet[Runtime]" = weakref.WeakSet()
_attach_lock = threading.Lock()


class CallDown:
    """The answer ``await_answer`` gives when the process it waited on died first."""

    __slots__ = ("reason",)

    def __init__(self, reason: Any) -> None:
        self.reason = reason


class Runtime:
    """One process: its pid, mailbox socket, save queue, peer sockets and agent link."""

    def __init__(self, node: NodeContext, mailbox: PlainSocket, embedded: bool,
                 agent: PlainSocket | None = None) -> None:
        self.node = node
        self.embedded = embedded
        self.thread = threading.get_ident()
        self.id = -1
        self.pid: Pid | None = None
        self._sock = mailbox
        self._rcvtimeo = -1
        self._agent = agent if agent is not None else connect_agent(node.ctx, node.rundir)
        self._peers: dict[int, PlainSocket] = {}
        self._dead_peers: list[PlainSocket] = []   # sockets to processes that died, closed when idle
        self._route_heads: dict[Any, bytes] = {}   # destination on another node -> route frame head
        self._mailbox = Mailbox()
        self._replies: dict[Any, Any] = {}   # answers by tag or ref (see await_answer)
        self._awaiting: set[Any] = set()
        self._cancelled_monitors: set[Ref] = set()
        self._names: dict[Any, tuple[Pid | None, int]] = {}   # whereis answers (local and global), by registry generation
        # Calls watch their server through one lasting monitor per server, made on the first
        # call and kept while it lives, so a call costs the agent nothing (see ``call``).
        self._call_watches: dict[Pid, Ref] = {}        # server -> monitor ref
        self._watched_by_ref: dict[Ref, Pid] = {}
        self._dead_servers: dict[Pid, Any] = {}       # server -> exit reason (the latest few)
        self._serials = itertools.count(1)
        self._spare: Ref | None = None   # the key of the spare process kept ahead (see keep_spare)
        self.initial_call: list | None = None   # the function a spawned process runs (by reference)
        self._trapping = False
        self._killed: Any = None
        self.closed = False
        _runtimes.add(self)

    # ----------------------------------------------------------------- creation

    def rehearse(self) -> None:
        """Take the paths of a message's arrival once, on nothing. A process forked ahead of
        its spawn does this while it waits (as ``codec.rehearse``): the first run of code in a
        new process copies the pages it writes and takes the interpreter's slow paths, and a
        spawn should not wait for that. It leaves no trace: the mailbox socket holds nothing
        yet, and the answer handled is one nobody awaits."""
        codec.rehearse()
        self._next_frame(time.monotonic())   # nothing there, and no waiting
        self._handle(P.CONTROL_PREFIX + codec.encode([P.REPLY, -1, None]))
        self._mailbox.put(None)
        self._mailbox.take(as_predicate(lambda msg: msg is None), 0)

    def _start_spawned(self, proc_id: int, spawner_id: int, tag: int) -> None:
        """Take the id the spawn gave, the mailbox now bound at its endpoint, and tell the
        spawner, which waits for that to return the pid, so that the pid can be sent to at once
        (the agent answers the spawner instead if this process dies first)."""
        self._set_id(proc_id)
        self._deliver(spawner_id, P.CONTROL_PREFIX + codec.encode([P.REPLY, tag, proc_id]))

    @classmethod
    def attach(cls, node: NodeContext) -> "Runtime":
        """Make the calling thread of an embedding program a process of the node."""
        token = f"t{os.getpid()}-{threading.get_ident()}-{next(_attach_serials)}"
        rt = cls(node, bind_mailbox(node.ctx, node.rundir, token), embedded=True)
        tag = next(rt._serials)
        rt._to_agent([P.ATTACH, -1, tag, token, os.getpid()])
        proc_id = rt._await_reply(tag)
        rt._sock.bind(P.endpoint(node.rundir, proc_id))
        rt._set_id(proc_id)
        return rt

    def _set_id(self, proc_id: int) -> None:
        self.id = proc_id
        self.pid = Pid(self.node.name, proc_id, self.node.creation)

    def close(self, reason: Any = NORMAL, linger: bool = True) -> None:
        """Close every socket of this process; an embedded one tells the agent it ended."""
        if self.closed:
            return
        self.closed = True
        if self.embedded and self.id >= 0 and reason is not None:
            self._to_agent([P.DETACH, self.id, reason])
        for proc_id, sock in self._peers.items():
            # Linger only for live peers: what waits for a dead one would hold the exit up.
            alive = linger and self._mailbox_exists(proc_id)
            sock.close(linger=PEER_LINGER_MS if alive else 0)
        self._peers.clear()
        self._close_dead_peers()
        self._sock.close()
        self._agent.close(linger=PEER_LINGER_MS if linger else 0)
        if getattr(_tls, "rt", None) is self:
            _tls.rt = None

    # ----------------------------------------------------------------- sending

    def send(self, dest: Any, msg: Any) -> None:
        frame = codec.encode(msg)
        pid = dest if type(dest) is Pid else self.resolve(dest)
        if pid is None:  # (name, node) of another node: its agent resolves the name
            self._route(dest[1], dest[0], frame)
            return
        if not self.node.is_local(pid):
            self._route(pid.node, pid, frame)
            return
        if pid.id == self.id:
            self._mailbox.put(codec.decode(frame))
            return
        self._deliver(pid.id, frame)

    def _route(self, node: str, dest: Pid | str, frame: bytes) -> None:
        """Send a frame to a process of another node, through the agent and the broker (a node
        outside a cluster, or an old run of this one, drops it, as Erlang drops what it cannot
        deliver)."""
        if node == self.node.name:
            return
        head = self._route_heads.get(dest)
        if head is None:
            if len(self._route_heads) >= PEER_CACHE_SIZE:
                self._route_heads.clear()
            head = self._route_heads[dest] = P.route_frame_head(node, codec.encode(dest))
        _send(self._agent, head + frame, 0)

    def _deliver(self, proc_id: int, frame: bytes) -> None:
        sock = self._peers.get(proc_id)
        if sock is None:
            sock = self._connect(proc_id)
        try:
            _send(sock, frame, _NOBLOCK)
        except zmq.Again:
            self._send_when_ready(proc_id, sock, frame)

    def _connect(self, proc_id: int) -> PlainSocket:
        peers = self._peers
        if len(peers) >= PEER_CACHE_SIZE:
            peers.pop(next(iter(peers))).close(linger=PEER_LINGER_MS)
        # Without ZMQ_IMMEDIATE the first frames queue while the connection is made, so a send
        # never waits for a handshake. Frames to a peer that died queue up to the high-water
        # mark; past it the slow path finds the mailbox gone and drops them with the socket.
        sock = peer_socket(self.node.ctx, PEER_LINGER_MS)
        sock.set(zmq.RECONNECT_IVL_MAX, 5000)
        sock.connect(P.endpoint(self.node.rundir, proc_id))
        peers[proc_id] = sock
        return sock

    def _send_when_ready(self, proc_id: int, sock: PlainSocket, frame: bytes) -> None:
        """Slow path: a new connection still being made, a full queue, or a dead peer."""
        deadline = time.monotonic() + SEND_BLOCKED_TIMEOUT
        while True:
            if not self._mailbox_exists(proc_id):
                self._forget_peer(proc_id)  # the process is gone: the message is dropped
                return
            if zmq.zmq_poll([(sock, zmq.POLLOUT)], 50):
                try:
                    _send(sock, frame, _NOBLOCK)
                    return
                except zmq.Again:
                    continue
            if time.monotonic() > deadline:
                log.warning("message to %r dropped: its mailbox stayed full for %.0f s",
                            Pid(self.node.name, proc_id, self.node.creation), SEND_BLOCKED_TIMEOUT)
                return

    def _mailbox_exists(self, proc_id: int) -> bool:
        """Whether a process's mailbox is there (the agent removes a dead one's)."""
        return os.path.exists(f"{self.node.rundir}/{proc_id}")

    def _forget_peer(self, proc_id: int) -> None:
        sock = self._peers.pop(proc_id, None)
        if sock is not None:
            sock.close(linger=0)

    def _forget_dead_peer(self, proc_id: int) -> None:
        """Let go of the socket to a process that died, closing it when this process next waits:
        a close wakes ZeroMQ's reaper thread, and the news of a death is often what a process
        must act on at once (a supervisor restarting a child)."""
        sock = self._peers.pop(proc_id, None)
        if sock is not None:
            self._dead_peers.append(sock)

    def _close_dead_peers(self) -> None:
        for sock in self._dead_peers:
            sock.close(linger=0)
        self._dead_peers.clear()

    def resolve(self, dest: Any) -> Pid | None:
        """The pid behind a Pid, a local name, ``(name, node)`` or ``("global", name)``; None
        for a name on another node (that node resolves it). Raises ``NoProc`` for a name that
        is not registered."""
        if type(dest) is Pid:
            return dest
        if type(dest) is str:
            pid = self.whereis(dest)
        elif type(dest) is tuple and len(dest) == 2 and type(dest[0]) is str and type(dest[1]) is str:
            name, node = dest
            if name == "global":
                pid = self.global_whereis(node)
            elif node != self.node.name:
                return None
            else:
                pid = self.whereis(name)
        else:
            raise TypeError(f"expected a Pid, a name, (name, node) or ('global', name); got {dest!r}")
        if pid is None:
            raise NoProc(dest)
        return pid

    def _to_agent(self, request: list) -> None:
        self._agent.send(codec.encode(request))

    # ----------------------------------------------------------------- receiving

    def receive(self, match: Any = None, timeout: float | str | None = None) -> Any:
        if match is None and timeout is None:
            return self._receive_any()
        predicate = as_predicate(match)
        if timeout == "infinity":
            timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        box = self._mailbox
        start = 0
        while True:
            msg, start = box.take(predicate, start)
            if msg is not NOTHING:
                return msg
            frame = self._next_frame(deadline)
            if frame is None:
                raise Timeout(f"no matching message within {timeout} s")
            self._handle(frame)

    def _receive_any(self) -> Any:
        """The fast path of ``receive()``: the oldest message, waiting as long as it takes."""
        box = self._mailbox
        while True:
            if box:
                return box.take(None, 0)[0]
            frame = self._next_frame(None)
            if not frame or frame[0] != _RUNTIME:  # a message: no slice to allocate
                try:
                    return codec.decode(frame)
                except DecodeError as exc:
                    log.warning("malformed frame dropped by %r: %s", self.pid, exc)
            else:
                self._handle(frame)

    def _next_frame(self, deadline: float | None) -> bytes | None:
        """The next frame, or None once the deadline has passed."""
        sock = self._sock
        try:  # a frame is usually there under load, and a recv costs less than a look first
            return _recv(sock, _NOBLOCK)
        except zmq.Again:
            pass
        if SPIN_SECONDS > 0 and (deadline is None or deadline - time.monotonic() > SPIN_SECONDS):
            spin_until = time.perf_counter() + SPIN_SECONDS
            while time.perf_counter() < spin_until:
                if _get(sock, _EVENTS) & _POLLIN:
                    return _recv(sock, 0)
        if self._dead_peers:
            self._close_dead_peers()
        # A blocking recv with a receive timeout wakes faster than zmq_poll then recv.
        if deadline is None:
            timeout_ms = -1
        else:  # a deadline passed by a millisecond or more must not become ZeroMQ's -1, for ever
            timeout_ms = math.ceil((deadline - time.monotonic()) * 1000)
            if timeout_ms <= 0:
                return None
        if timeout_ms != self._rcvtimeo:
            sock.set(zmq.RCVTIMEO, timeout_ms)
            self._rcvtimeo = timeout_ms
        try:
            return _recv(sock, 0)
        except zmq.Again:
            return None

    def _handle(self, frame: bytes) -> None:
        try:
            if not frame or frame[0] != _RUNTIME:  # a message: no slice to allocate
                self._mailbox.put(codec.decode(frame))
            elif frame[:2] == P.SIGNAL_PREFIX:
                self._on_signals([codec.decode(frame[2:])])
            elif frame[:2] == P.CONTROL_PREFIX:
                self._on_control(codec.decode(frame[2:]))
            else:
                log.warning("runtime frame of unknown kind %r dropped by %r", frame[1:2], self.pid)
        except DecodeError as exc:
            log.warning("malformed frame dropped by %r: %s", self.pid, exc)
        if self._killed is not None:
            self._die(self._killed)

    def _on_signals(self, signals: list) -> None:
        # What a dead process sent before dying may still wait in the socket: take it first, so
        # the news of its death does not overtake its last messages.
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frame[:2] == P.SIGNAL_PREFIX:
                try:
                    signals.append(codec.decode(frame[2:]))
                except DecodeError as exc:
                    log.warning("malformed frame dropped by %r: %s", self.pid, exc)
            else:
                self._handle(frame)
        for sig in signals:
            if type(sig) is Down:
                if type(sig.pid) is Pid and self.node.is_local(sig.pid):
                    self._forget_dead_peer(sig.pid.id)   # a Down is the news of a death
                server = self._watched_by_ref.pop(sig.ref, None)
                if server is not None:
                    self._call_watches.pop(server, None)
                    self._note_dead_server(server, sig.reason)
                    continue
                if sig.ref in self._awaiting:
                    self._replies.setdefault(sig.ref, CallDown(sig.reason))
                    continue
                if sig.ref in self._cancelled_monitors:
                    continue
            elif (type(sig) is Exit and type(sig.pid) is Pid and self.node.is_local(sig.pid)
                  and not self._mailbox_exists(sig.pid.id)):
                # An exit signal comes from a death, or from a live process's otp.exit: the
                # socket to a live one is kept, or what was sent to it could be lost or overtaken
                # (the agent removes a dead process's mailbox before it signals the death).
                self._forget_dead_peer(sig.pid.id)
            self._mailbox.put(sig)

    def _on_control(self, body: Any) -> None:
        if type(body) is not list or not body or (body[0] in _CONTROL_ARITY and len(body) != _CONTROL_ARITY[body[0]]):
            log.warning("malformed control frame dropped by %r: %.80r", self.pid, body)
            return
        op = body[0]
        if op == P.REPLY:
            if body[1] in self._awaiting:  # the first answer counts (a spawn gets two)
                spare = self._spare  # None but in a supervisor: a call's reply pays one look
                if spare is not None and body[1] == spare and spare not in self._replies and type(body[2]) is int:
                    self._connect(body[2])  # the spare's connection is made before it is needed
                self._replies.setdefault(body[1], body[2])
        elif op == P.KILL:
            self._killed = body[1]
        elif op == P.DEMONITOR:
            self._cancelled_monitors.discard(body[1])
        elif op == P.INFO:
            self._answer_info(body[1], body[2])
        else:
            log.warning("unknown control op %r dropped by %r", op, self.pid)

    def _answer_info(self, tag: Any, reply_to: Any) -> None:
        """Tell ``reply_to`` how many messages wait in this mailbox (taking in those the
        socket holds first)."""
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._handle(frame)
        if type(reply_to) is Pid:
            self.reply((reply_to, tag), {"mailbox": len(self._mailbox)})

    def _die(self, reason: Any) -> None:
        """Exit this process with ``reason`` (an exit signal or ``exit(self(), reason)``)."""
        if self.embedded:
            self.close(reason=None if self._killed is not None else reason)
        raise ExitError(reason)

    def _request(self, op: str, *args: Any, unbounded: bool = False) -> Any:
        """Ask the agent; wait ``REQUEST_TIMEOUT`` for its answer, or for ever if ``unbounded``
        (an answer that depends on others, such as a lock)."""
        tag = next(self._serials)
        self._to_agent([op, self.id, tag, *args])
        return self.await_answer(tag, None) if unbounded else self._await_reply(tag)

    def _await_reply(self, tag: int) -> Any:
        try:
            return self.await_answer(tag, REQUEST_TIMEOUT)
        except Timeout:
            raise NodeError(f"the node agent did not answer within {REQUEST_TIMEOUT} s") from None

    def await_answer(self, key: Any, timeout: float | None, server: Pid | None = None) -> Any:
        """Wait for the answer keyed ``key``: a reply (``reply``) to it, or, when ``key`` is
        the ref of a monitor, that monitor's ``Down``, returned as a ``CallDown``, as is the
        death of the watched ``server`` (see ``call``). The first answer counts; one that
        comes once nobody waits is dropped. Raises ``Timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        replies, dead = self._replies, self._dead_servers
        self._awaiting.add(key)
        try:
            while key not in replies:
                if server in dead:
                    return CallDown(dead[server])
                frame = self._next_frame(deadline)
                if frame is None:
                    raise Timeout(f"no answer within {timeout} s")
                self._handle(frame)
        finally:
            self._awaiting.discard(key)
        return replies.pop(key)

    def call(self, pid: Pid, message: Any, key: Ref, timeout: float | None) -> Any:
        """Send ``message`` to ``pid`` and wait for the reply at ``key``; ``CallDown`` if the
        process is or goes down first. Raises ``Timeout``; a reply after it is dropped.

        The caller watches each server it calls with one monitor, made on its first call to it
        and kept until it dies (at most ``CALL_WATCHES`` servers, the oldest let go), instead of
        a monitor per call as Erlang does: the same answers, without a frame to the agent per
        call. One difference: a server that died just before the call, its Down not yet read,
        fails the call with its exit reason where Erlang would say ``noproc``.
        """
        if pid in self._dead_servers:
            return CallDown(NOPROC)
        if pid not in self._call_watches:
            if len(self._call_watches) >= CALL_WATCHES:
                old_pid, old_ref = next(iter(self._call_watches.items()))
                del self._call_watches[old_pid], self._watched_by_ref[old_ref]
                self.demonitor(old_ref, flush=False)
            ref = self.monitor(pid)
            self._call_watches[pid] = ref
            self._watched_by_ref[ref] = pid
        self.send(pid, message)
        return self.await_answer(key, timeout, pid)

    def _note_dead_server(self, server: Pid, reason: Any) -> None:
        dead = self._dead_servers
        if len(dead) >= CALL_WATCHES:
            del dead[next(iter(dead))]
        dead[server] = reason

    def reply(self, caller: tuple[Pid, Any], value: Any) -> None:
        """Answer ``caller`` (a ``(pid, key)`` pair) with ``value``, for its ``await_answer``."""
        pid, key = caller
        frame = P.CONTROL_PREFIX + codec.encode([P.REPLY, key, value])
        if not self.node.is_local(pid):
            self._route(pid.node, pid, frame)
        elif pid.id == self.id:
            self._handle(frame)
        else:
            self._deliver(pid.id, frame)

    # ----------------------------------------------------------------- node tables

    def spawn(self, func: Callable, args: tuple, link: bool, monitor: bool | Ref,
              info: dict | None = None) -> tuple[Pid, Ref | None]:
        """Spawn ``func(*args)``; ``info`` is what ``process_info`` tells of the new process from
        its birth (see ``set_info``). ``monitor`` may be the ref the monitor is to have, at which
        the caller then awaits an answer (``await_answer``), the monitor's ``Down`` being one.
        That ``Down`` may be handled before the spawn returns (the frames queued behind a signal
        are taken in with it: the spawn's answer, and the ``Down`` of a process that died at
        once): it is kept for the caller's wait, not put in the mailbox, where nothing looks."""
        funcref = function_reference(func)
        args_bytes = codec.encode(tuple(args))
        answer_at = type(monitor) is Ref
        ref = monitor if answer_at else self.make_ref() if monitor else None
        if link and self._spare is not None:
            proc_id = self._hand_over(funcref, args_bytes, ref, info)
            if proc_id is not None:
                return Pid(self.node.name, proc_id, self.node.creation), ref
        if answer_at:
            self._awaiting.add(ref)
        try:
            proc_id = self._request(P.SPAWN, funcref, args_bytes, link, ref, info)
        finally:
            if answer_at:
                self._awaiting.discard(ref)   # a Down come by now waits in _replies
        return Pid(self.node.name, proc_id, self.node.creation), ref

    def keep_spare(self) -> None:
        """Have a spare process spawned ahead, linked to this one, so that this process's next
        ``spawn`` with a link hands its function to the spare, one message, instead of
        spawning: the new process is then already running, its mailbox bound and its
        connections made. A supervisor restarts its children this way. Returns at once; a
        no-op while a spare is kept. The spare exits when this process does, for any reason.
        """
        if self._spare is not None:
            return
        key = self._spare = self.make_ref()
        self._awaiting.add(key)  # the spawn's answer is kept until the spare is taken
        self._to_agent([P.SPARE, self.id, key, _SPARE_BODY, codec.encode((key,))])

    def _hand_over(self, funcref: list, args_bytes: bytes, monitor_ref: Ref | None, info: dict | None) -> int | None:
        """Give ``funcref(*args)`` to the spare, if it has started and lives; its process id."""
        key = self._spare
        proc_id = self._replies.pop(key, None)
        if proc_id is None:
            return None  # not started yet: it will be taken next time
        self._spare = None
        self._awaiting.discard(key)
        if not self._mailbox_exists(proc_id):
            return None  # it died idle: its exit signal comes as any linked process's does
        self._to_agent([P.TAKE_SPARE, self.id, proc_id, key, monitor_ref, info])
        self._deliver(proc_id, P.CONTROL_PREFIX + codec.encode([P.REPLY, key, [funcref, args_bytes]]))
        return proc_id

    def make_ref(self) -> Ref:
        return Ref(self.node.name, self.node.creation, self.id, next(self._serials))

    def link(self, pid: Pid) -> None:
        _check_pid(pid)
        if pid == self.pid:
            return
        # The agent answers "noproc" only to a caller that does not trap exits; one that
        # does gets Exit(pid, "noproc") as a message instead. A process of another node is
        # linked at once; if it is not there, its node sends the exit signal "noproc".
        if self._request(P.LINK, self._peer(pid)) != NOPROC:
            return
        raise NoProc(pid)

    def _peer(self, pid: Pid) -> int | Pid:
        """How the agent names ``pid``: its id if local, else the Pid itself."""
        return pid.id if self.node.is_local(pid) else pid

    def unlink(self, pid: Pid) -> None:
        _check_pid(pid)
        if pid != self.pid:
            self._to_agent([P.UNLINK, self.id, self._peer(pid)])

    def monitor(self, target: Any, ref: Ref | None = None) -> Ref:
        """Monitor a Pid, a local name or ``(name, node)``; the monitor's ref is ``ref`` if given."""
        ref = self.make_ref() if ref is None else ref
        if type(target) is Pid:
            self._to_agent([P.MONITOR, self.id, ref, self._peer(target)])
        elif type(target) is str:
            self._to_agent([P.MONITOR, self.id, ref, target])
        elif type(target) is tuple and len(target) == 2 and type(target[0]) is str and type(target[1]) is str:
            if target[0] == "global":
                self._to_agent([P.MONITOR, self.id, ref, self._peer(self.resolve(target))])
            elif target[1] == self.node.name:
                self._to_agent([P.MONITOR, self.id, ref, target[0]])
            else:
                self._to_agent([P.MONITOR, self.id, ref, list(target)])
        else:
            raise TypeError(f"monitor needs a Pid, a registered name or (name, node); got {target!r}")
        return ref

    def demonitor(self, ref: Ref, flush: bool) -> None:
        if type(ref) is not Ref:
            raise TypeError(f"demonitor needs a Ref; got {ref!r}")
        # A Down may already be on its way: it is dropped until the agent confirms.
        self._cancelled_monitors.add(ref)
        self._to_agent([P.DEMONITOR, self.id, ref])
        if flush:
            self._mailbox.remove_if(lambda m: type(m) is Down and m.ref == ref)

    def exit(self, pid: Pid, reason: Any) -> None:
        _check_pid(pid)
        if pid == self.pid:
            if self._trapping and reason != KILL:
                self._mailbox.put(Exit(pid, reason))
                return
            self._die(KILLED if reason == KILL else reason)
        self._to_agent([P.EXIT, self.id, self._peer(pid), reason])

    def trap_exit(self, flag: bool) -> bool:
        old, self._trapping = self._trapping, bool(flag)
        if old != self._trapping:
            self._to_agent([P.TRAP_EXIT, self.id, self._trapping])
        return old

    def register(self, name: str, pid: Pid) -> None:
        _check_name(name)
        _check_pid(pid)
        if not self.node.is_local(pid):
            raise ValueError(f"cannot register {name!r}: {pid!r} is not a process of this node")
        error = self._request(P.REGISTER, name, pid.id)
        if error is not None:
            raise ValueError(error)

    def unregister(self, name: str) -> None:
        _check_name(name)
        error = self._request(P.UNREGISTER, name)
        if error is not None:
            raise ValueError(error)

    def whereis(self, name: str) -> Pid | None:
        _check_name(name)
        return self._cached_lookup(name, self._ask_whereis)

    def _ask_whereis(self, name: str) -> Pid | None:
        proc_id = self._request(P.WHEREIS, name)
        return None if proc_id is None else Pid(self.node.name, proc_id, self.node.creation)

    def _cached_lookup(self, key: Any, ask: Callable[[Any], Pid | None]) -> Pid | None:
        """``ask``'s answer for ``key``, kept while the registry's generation stands still
        (see ``otp.registry``); local names are keyed by name, global ones by
        ``("global", name)``."""
        generation = self.node.registry_generation()
        known = self._names.get(key)
        if known is not None and generation is not None and known[1] == generation:
            return known[0]
        pid = ask(key)
        if generation is not None:
            if len(self._names) >= NAME_CACHE_SIZE:
                self._names.clear()
            self._names[key] = (pid, generation)
        return pid

    def registered(self) -> list[str]:
        return self._request(P.REGISTERED)

    # ----------------------------------------------------------------- introspection

    def set_info(self, pid: Pid, info: dict) -> None:
        """Record facts about a local process for ``process_info``."""
        if self.node.is_local(pid):
            self._to_agent([P.SET_INFO, self.id, pid.id, info])

    def process_table_info(self, pid: Pid) -> dict | None:
        """What the pid's node agent knows of it (None if it is not alive)."""
        _check_pid(pid)
        return self._request(P.PROCESS_INFO, pid)

    def mailbox_length(self, pid: Pid, timeout: float) -> int | None:
        """Ask a process how many messages wait in its mailbox; None if it does not answer
        within ``timeout`` (it is busy, or gone)."""
        if pid == self.pid:
            self._answer_info(None, None)
            return len(self._mailbox)
        tag = self.make_ref()
        frame = P.CONTROL_PREFIX + codec.encode([P.INFO, tag, self.pid])
        if self.node.is_local(pid):
            self._deliver(pid.id, frame)
        else:
            self._route(pid.node, pid, frame)
        try:
            return self.await_answer(tag, timeout)["mailbox"]
        except Timeout:
            return None

    def processes(self, node: str | None) -> list[Pid]:
        return self._request(P.PROCESSES, node or self.node.name)

    # ----------------------------------------------------------------- the cluster

    def nodes(self) -> list[str]:
        return self._request(P.NODES)

    def monitor_nodes(self, flag: bool) -> None:
        self._to_agent([P.MONITOR_NODES, self.id, bool(flag)])

    def register_global(self, name: str, pid: Pid) -> bool:
        _check_name(name)
        _check_pid(pid)
        return _in_cluster(self._request(P.REGISTER_NAME, name, pid))

    def unregister_global(self, name: str) -> None:
        _check_name(name)
        _in_cluster(self._request(P.UNREGISTER_NAME, name))

    def global_whereis(self, name: str) -> Pid | None:
        """The pid registered as ``name`` in the cluster, from the node's replica of the table
        (kept per registry generation, as local names are)."""
        _check_name(name)
        return self._cached_lookup(("global", name),
                                   lambda key: _in_cluster(self._request(P.GLOBAL_WHEREIS, key[1])))

    def global_names(self) -> list[str]:
        return _in_cluster(self._request(P.GLOBAL_NAMES))

    def set_lock(self, resource: bytes, wait: bool) -> bool:
        """Take the cluster lock ``resource`` (waiting at the broker if ``wait``)."""
        return _in_cluster(self._request(P.SET_LOCK, resource, wait, unbounded=wait))

    def del_lock(self, resource: bytes) -> None:
        self._to_agent([P.DEL_LOCK, self.id, resource])

    def is_alive(self, pid: Pid) -> bool:
        _check_pid(pid)
        return self.node.is_local(pid) and self._request(P.IS_ALIVE, pid.id)

    def os_pid(self, pid: Pid) -> int | None:
        _check_pid(pid)
        if pid == self.pid:
            return os.getpid()
        return self._request(P.OS_PID, pid.id) if self.node.is_local(pid) else None


_attach_serials = itertools.count(1)


def _in_cluster(answer: Any) -> Any:
    if answer == P.NOT_IN_CLUSTER:
        raise NodeError("global names and locks need a node in a cluster: start it with otp.Node(name, broker=...)")
    return answer


def _check_pid(pid: Any) -> None:
    if type(pid) is not Pid:
        raise TypeError(f"expected a Pid; got {pid!r}")


def _check_name(name: Any) -> None:
    if type(name) is not str or not name:
        raise TypeError(f"a registered name is a non-empty str; got {name!r}")


# --------------------------------------------------------------------- the current process

def current() -> Runtime:
    """The runtime of the calling thread, attaching it to the node (or starting one) if needed."""
    rt = getattr(_tls, "rt", None)
    if rt is not None and not rt.closed:
        return rt
    with _attach_lock:
        if _node is not None and not _node.alive:
            raise NodeError(f"node {_node.name} is down: its agent died")
        if _node is None or _node.os_pid != os.getpid():
            if _node is not None:
                raise NodeError("otp cannot be used in a process forked outside otp; spawn one instead")
            from otp.local_node import start_implicit_node  # only a program that embeds otp needs it
            start_implicit_node()
        node = _node
    rt = Runtime.attach(node)
    _tls.rt = rt
    return rt


def set_node(node: NodeContext | None) -> None:
    """Install this OS process's node context (None when its node stops)."""
    global _node
    _node = node


def node_down() -> None:
    """The node's agent died: no thread attaches any more, and every thread's process exits
    with ``"noconnection"``."""
    if _node is not None:
        _node.alive = False
    end_runtimes("noconnection")


def end_runtimes(reason: Any) -> bool:
    """The node is going away: close the calling thread's process, and tell every other
    thread's process to exit with ``reason`` (its thread raises ``ExitError`` and closes its own
    sockets: ZeroMQ sockets must not be closed from another thread).

    Returns whether every runtime is closed, so that the context may be destroyed at once.
    """
    node, me = _node, threading.get_ident()
    others = [rt for rt in list(_runtimes) if not rt.closed and rt.thread != me]
    for rt in list(_runtimes):
        if not rt.closed and rt.thread == me:
            rt.close(reason=None, linger=False)
    if node is not None and others:
        frame = P.CONTROL_PREFIX + codec.encode([P.KILL, reason])
        for rt in others:
            if rt.embedded and rt.id >= 0:
                sock = peer_socket(node.ctx, 500)
                sock.connect(P.endpoint(node.rundir, rt.id))
                sock.send(frame, zmq.NOBLOCK)
                sock.close()
    return not others


def _forget_after_fork() -> None:
    # A forked child must never touch its parent's ZeroMQ context or sockets.
    global _tls
    _tls = threading.local()
    _runtimes.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


MAX_SOCKETS = 4096
"""Sockets a process's ZeroMQ context may hold: its peers (at most ``PEER_CACHE_SIZE``), its
mailbox and its agent link. libzmq touches memory for every slot when a context starts: 65,536
slots cost each process 0.75 MB more."""
LARGE_MAX_SOCKETS = 65_536
"""Sockets the node agent's context may hold (one per process of the node), and an embedding
program's (each of its threads is a process with its own peers)."""


def new_context(max_sockets: int = MAX_SOCKETS) -> zmq.Context:
    """A ZeroMQ context for this OS process (libzmq's default of 1,023 sockets is too few)."""
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, max_sockets)
    return ctx


def new_process_context() -> zmq.backend.Context:
    """The ZeroMQ context of a spawned process, on pyzmq's plain class: its sockets are all
    ``PlainSocket``s, which it closes itself, and the usual class, with its socket tracking,
    costs a new process 0.25 ms more."""
    ctx = zmq.backend.Context()
    ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
    return ctx


class PlainSocket(zmq.backend.Socket):
    """A socket on pyzmq's plain class, as a process's sockets are (its mailbox, its socket to
    the agent, one to each peer): the usual class's attribute machinery costs more than the
    socket (one takes 120 us to make here, this one 40), and a process makes three on its way
    up and one per new peer. Like the usual class, it closes itself when collected (a thread
    that ended without closing its process leaves its sockets to the collector, and the context
    cannot end while one is open); unlike it, the context's ``destroy`` does not see it."""

    __slots__ = ()

    def __del__(self) -> None:
        if not self.closed:
            self.close()


def peer_socket(ctx: zmq.backend.Context, linger_ms: int) -> PlainSocket:
    """A PUSH socket to one peer, lingering ``linger_ms`` at its close."""
    sock = PlainSocket(ctx, zmq.PUSH)
    sock.set(zmq.LINGER, linger_ms)
    return sock


def bind_mailbox(ctx: zmq.backend.Context, rundir: str, name: str | int) -> PlainSocket:
    """A mailbox socket bound at the endpoint ``name`` of the run directory."""
    sock = PlainSocket(ctx, zmq.PULL)
    # LINGER 0 here would drop what a peer sent just before it exited (ZeroMQ terminates a
    # disconnected peer's pipe without delay when the receiving socket does not linger).
    sock.set(zmq.LINGER, 1000)
    # ZeroMQ drops what a peer sent before exiting if the receiving pipe was full when it
    # disconnected: a mailbox holds up to MAILBOX_CAPACITY messages before senders wait.
    sock.set(zmq.RCVHWM, MAILBOX_CAPACITY)
    sock.bind(P.endpoint(rundir, name))
    return sock


def connect_agent(ctx: zmq.backend.Context, rundir: str) -> PlainSocket:
    """A socket to the node agent of the run directory."""
    sock = peer_socket(ctx, PEER_LINGER_MS)
    sock.connect(P.endpoint(rundir, P.AGENT_ENDPOINT))
    return sock


def run_spawned(rt: Runtime, proc_id: int, spawn_request: list) -> Any:
    """Run a spawned process's function in this (new) OS process, whose runtime ``rt`` was
    made while it waited for its spawn, before its id was known; return its exit reason."""
    funcref, args_bytes, spawner_id, tag = spawn_request
    node = rt.node
    set_node(node)
    rt._start_spawned(proc_id, spawner_id, tag)
    rt.initial_call = funcref
    _tls.rt = rt
    try:
        func = load_function(funcref)
        func(*codec.decode(args_bytes))
        reason: Any = NORMAL
    except ExitError as exc:
        reason = exc.reason
    except SystemExit as exc:
        code = exc.code
        reason = NORMAL if code in (None, 0) else ("exit_code", code if type(code) is int else 1)
    except BaseException as exc:  # the process crashed: its reason says how, and where
        reason = exception_reason(exc)
        log.error("process %r (%s) crashed:\n%s", rt.pid, rt.initial_call[2], reason[3])
    rt.close(reason)
    for hook in _exit_hooks:
        try:
            hook()
        except Exception:
            log.exception("an exit hook of %r failed", rt.pid)
    node.ctx.term()
    return reason


def run_spare(key: Ref) -> None:
    """The body of a spare process (see ``Runtime.keep_spare``): wait for the function its
    spawner hands over and run it, as if spawned with it; or exit with the spawner. The agent
    made the spare monitor its spawner under ``key``, so that the handover and the spawner's
    ``Down`` are both the answer to ``key``, and drops that monitor at the handover."""
    rt = current()
    work = rt.await_answer(key, None)
    if type(work) is CallDown:
        return
    funcref, args_bytes = work
    rt.initial_call = funcref
    load_function(funcref)(*codec.decode(args_bytes))


_SPARE_BODY = function_reference(run_spare)
_exit_hooks: list[Callable[[], None]] = []


def at_process_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` when a spawned process ends, before its ZeroMQ context is terminated (which
    waits for every socket: a hook closes the sockets its threads own)."""
    if hook not in _exit_hooks:
        _exit_hooks.append(hook)
