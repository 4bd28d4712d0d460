"""The node agent: one small OS process per node that owns the node's tables and lifetimes.

It spawns every process through the zygote (``otp.forkserver``), holds the process table, the
local registry and the link and monitor tables, learns of every death from the kernel or the
zygote (``otp.deaths``; no polling), and delivers exit signals and ``Down`` messages, including
those the dead could not send. It runs no user code. When the program that started it dies, or
it is told to stop, it kills every process of the node and removes the run directory.

Started by ``otp.Node`` through ``otp.boot``, which forks the zygote first; not a public
interface.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import logging
import os
import select
import shutil
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from otp import codec, forkserver, runtime
from otp.broker_link import JOIN_TIMEOUT, BrokerLink, JoinError
from otp.deaths import DeathWatch, raise_descriptor_limit
from otp.registry import RegistryGeneration
from otp import protocol as P
from otp.errors import DecodeError
from otp.signals import Effect, exit_signal_effect, reason_from_wait_status
from otp.terms import NOCONNECTION, NOPROC, Down, Exit, NodeDown, NodeUp, Pid, Ref

log = logging.getLogger("otp.agent")
# The sugar layer's checks cost more than the call itself.
_send, _recv, _get = zmq.backend.Socket.send, zmq.backend.Socket.recv, zmq.backend.Socket.get

_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)  # IntFlag operators run in Python
ZYGOTE_STOP_TIMEOUT = 2.0
DRAIN_BATCH = 1000
"""Frames the agent takes from one source before it looks at the others (a flood of traffic
must not starve the heartbeats)."""
MAX_WARM_FDS = 64
"""Descriptors taken from the zygote's socket at a time (each Z_WARM frame carries one)."""


@dataclass(eq=False)
class Proc:
    """The agent's record of one process."""

    id: int
    endpoint: str                  # where the agent reaches its mailbox
    embedded: bool = False         # a thread of the embedding program
    os_pid: int | None = None
    spawner: tuple[int, int] | None = None   # (process id, request tag) awaiting the new pid
    trap_exit: bool = False
    name: str | None = None
    kill_reason: Any = None        # set once the agent has decided this process dies
    # A peer is a local process id, or the Pid of a process on another node.
    links: set[int | Pid] = field(default_factory=set)
    monitored_by: dict[Ref, tuple[int | Pid, Any]] = field(default_factory=dict)  # ref -> (watcher, object)
    monitoring: dict[Ref, int | Pid | tuple] = field(default_factory=dict)  # ref -> target (a remote name: (name, node))
    sock: runtime.PlainSocket | None = None
    info: dict = field(default_factory=dict)   # facts for process_info (behaviour, supervisor, restarts)


class Agent:
    """The agent's state and event loop."""

    def __init__(self, name: str, creation: int, rundir: str, zygote_pid: int,
                 zygote: socket.socket, parent_fd: int, broker: str | None = None,
                 cookie: str | None = None) -> None:
        self.name = name
        self.creation = creation
        self.rundir = rundir
        self.zygote_pid = zygote_pid
        self.zygote = zygote
        self.parent_fd = parent_fd
        self.ctx = runtime.new_context(runtime.LARGE_MAX_SOCKETS)
        self.inbox = self.ctx.socket(zmq.PULL)
        # A receiving socket with LINGER 0 drops what a disconnected peer sent but was not yet
        # read: every receiving socket keeps a linger.
        self.inbox.setsockopt(zmq.LINGER, 1000)
        self.inbox.setsockopt(zmq.RCVHWM, 1_000_000)
        self.inbox.bind(P.endpoint(rundir, P.AGENT_ENDPOINT))
        self.procs: dict[int, Proc] = {}
        self.names: dict[str, int] = {}
        self.registry_generation = RegistryGeneration.create(rundir)
        self.ids = itertools.count(1)
        self.zygote_reader = forkserver.FrameReader()
        self.deaths = DeathWatch(zygote_pid)
        # Frames to the zygote wait here while its socket is full: the zygote may itself be
        # blocked sending to us, and the two must never both wait.
        self.zygote_out = bytearray()
        self.zygote_fds: deque[int] = deque()   # received with Z_WARM frames not yet decoded
        # Warm processes (os pid, assignment pipe), and spawns waiting for one; the assignments
        # a pipe has not taken whole yet; the os pids of the processes assigned.
        self.warm: deque[tuple[int, int]] = deque()
        self.unassigned: deque[tuple[int, bytes]] = deque()
        self.assigning: dict[int, memoryview] = {}
        self.os_pids: dict[int, int] = {}
        self.poller = zmq.Poller()
        self.stopping = False
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The cluster (a node that joined a broker): see otp.broker.
        self.link = BrokerLink(self.ctx, broker, cookie or "", name) if broker else None
        self.nodes: set[str] = set()               # the other nodes up, as far as we know
        self.node_watchers: set[int] = set()       # processes that asked for NodeUp / NodeDown
        self.global_names: dict[str, Pid] = {}     # replica of the broker's table
        self.broker_watched: set[int] = set()      # processes whose death the broker must hear of
        self.lock_requests: dict[tuple[int, int], bytes] = {}   # (process id, tag) -> resource
        self.held_locks: dict[bytes, int] = {}     # resource -> process id, told again on a rejoin
        self.rejoin_deadline: float | None = None  # nodes not back by then are down (broker restart)
        self.missing_nodes: set[str] = set()
        self.remote_monitors: dict[Ref, int] = {}  # ref -> the local process a remote one watches
        self.route_dests: dict[bytes, int] = {}    # encoded Pid of ours -> its id (for batches)
        self.handlers = self._handlers()

    def pid(self, proc_id: int) -> Pid:
        return Pid(self.name, proc_id, self.creation)

    # ----------------------------------------------------------------- loop

    def run(self) -> None:
        poller = self.poller
        poller.register(self.inbox, zmq.POLLIN)
        zygote_fd = self.zygote.fileno()
        poller.register(zygote_fd, zmq.POLLIN)
        zygote_flags = _POLLIN
        poller.register(self.parent_fd, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        deaths_fd = self.deaths.fileno()
        if deaths_fd is not None:
            poller.register(deaths_fd, zmq.POLLIN)
        link = self.link
        if link is not None:
            poller.register(link.sock, zmq.POLLIN)
        handlers = self.handlers
        while not self.stopping:
            timeout = None if link is None else max(1, int(link.tick * 250))
            if zygote_flags != (_POLLIN | _POLLOUT if self.zygote_out else _POLLIN):
                zygote_flags ^= _POLLOUT
                poller.register(zygote_fd, zygote_flags)
            events = dict(poller.poll(timeout))
            if self.inbox in events:
                self._drain_inbox(handlers)
            if events.get(zygote_fd, 0) & _POLLOUT:
                self._flush_zygote()
            if self.assigning:
                for fd in [fd for fd in self.assigning if fd in events]:
                    self._write_assignment(fd)
            if deaths_fd in events:
                self._on_deaths()
            if events.get(zygote_fd, 0) & _POLLIN:
                self._on_zygote()
            if self.wake_r in events:
                os.read(self.wake_r, 4096)
                self._reap_orphans()
            if self.parent_fd in events and not os.read(self.parent_fd, 4096):
                log.debug("the program that started node %s is gone: stopping", self.name)
                self.stopping = True
            if link is not None:
                if link.sock in events:
                    self._drain_broker()
                self._keep_time()
        self.shutdown()

    def _drain_inbox(self, handlers: dict) -> None:
        try:
            self._take_inbox(handlers)
        finally:
            if self.link is not None:
                self.link.flush_routes()

    def _take_inbox(self, handlers: dict) -> None:
        inbox = self.inbox
        for _ in range(DRAIN_BATCH):  # then the other sources get their turn
            try:  # under load a frame is there, and a recv costs less than a look first
                frame = _recv(inbox, zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame and frame[0] == P.ROUTE:  # for a process of another node: batched
                if self.link is not None:
                    self.link.queue_route(frame)
                continue
            if self.link is not None:
                self.link.flush_routes()  # what a process sent before this request goes first
            try:
                op, sender, *args = codec.decode(frame)
                handler = handlers[op]
            except (DecodeError, ValueError, KeyError, TypeError) as exc:
                log.warning("malformed request dropped by node agent %s: %s", self.name, exc)
                continue
            try:
                handler(sender, *args)
            except Exception:  # a bad request must never take the node down
                log.exception("node agent %s failed on %r", self.name, op)

    def _handlers(self) -> dict:
        return {
            P.SPAWN: self.on_spawn, P.ATTACH: self.on_attach,
            P.SPARE: self.on_spare, P.TAKE_SPARE: self.on_take_spare,
            P.DETACH: self.on_detach, P.LINK: self.on_link, P.UNLINK: self.on_unlink,
            P.MONITOR: self.on_monitor, P.DEMONITOR: self.on_demonitor, P.EXIT: self.on_exit,
            P.TRAP_EXIT: self.on_trap_exit, P.REGISTER: self.on_register,
            P.UNREGISTER: self.on_unregister, P.WHEREIS: self.on_whereis,
            P.REGISTERED: self.on_registered, P.IS_ALIVE: self.on_is_alive,
            P.OS_PID: self.on_os_pid, P.STOP_NODE: self.on_stop_node,
            P.NODES: self.on_nodes, P.MONITOR_NODES: self.on_monitor_nodes,
            P.REGISTER_NAME: self.on_register_name, P.UNREGISTER_NAME: self.on_unregister_name,
            P.GLOBAL_WHEREIS: self.on_global_whereis, P.GLOBAL_NAMES: self.on_global_names,
            P.SET_LOCK: self.on_set_lock, P.DEL_LOCK: self.on_del_lock,
            P.SET_INFO: self.on_set_info, P.PROCESS_INFO: self.on_process_info,
            P.PROCESSES: self.on_processes,
        }

    def _on_zygote(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.zygote, 1 << 20, MAX_WARM_FDS)
        except ConnectionError:
            data, fds = b"", []
        self.zygote_fds.extend(fds)
        if not data:
            if not self.stopping:
                log.error("the fork server of node %s died: stopping the node", self.name)
            self.stopping = True
            return
        frames = self.zygote_reader.feed(data)
        if any(op == P.Z_EXITED for op, *_ in frames):
            # What a process sent (to other nodes, through us) before it died goes out before
            # the news of its death.
            self._drain_inbox(self.handlers)
        for op, *args in frames:
            if op == P.Z_WARM:
                if self.zygote_fds:
                    self.on_warm(args[0], self.zygote_fds.popleft())
                else:  # never seen: its pipe lost, the process waits until the node stops
                    log.error("node %s: warm process %d came without its pipe", self.name, args[0])
            elif op == P.Z_EXITED:
                self._on_zygote_exited(*args)
            elif op == P.Z_FORK_FAILED and self.unassigned:
                proc_id, _ = self.unassigned.popleft()
                self.on_fork_failed(proc_id, *args)

    def _on_deaths(self) -> None:
        """Processes the kernel says have died: one killed by a signal is done with now, as
        its wait status is its exit reason; one that ended on its own wrote its reason to the
        zygote, whose report follows."""
        killed = [(proc_id, status) for proc_id, _, status in self.deaths.deaths()
                  if status is not None and os.WIFSIGNALED(status)]
        if killed:
            self._drain_inbox(self.handlers)  # what they sent before dying goes first
        for proc_id, status in killed:
            self.on_exited(proc_id, status, b"")  # as the zygote tells it: no reason written

    def _to_zygote(self, request: list) -> None:
        self.zygote_out += forkserver.frame(request)
        self._flush_zygote()

    def _flush_zygote(self) -> None:
        """Send what the zygote's socket takes now, without waiting."""
        out = self.zygote_out
        while out:
            try:
                sent = self.zygote.send(out, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:  # the zygote is gone: _on_zygote sees it
                out.clear()
                return
            del out[:sent]

    def _reap_orphans(self) -> None:
        """Reap whatever was reparented to the agent (it is a subreaper), and notice the zygote."""
        while True:
            try:
                os_pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if os_pid == 0:
                return
            if os_pid == self.zygote_pid:
                self.zygote_pid = 0
                self.stopping = True

    # ----------------------------------------------------------------- sending to processes

    def _send(self, proc: Proc, prefix: bytes, obj: Any) -> None:
        self._send_frame(proc, prefix + codec.encode(obj))

    def _send_frame(self, proc: Proc, frame: bytes) -> None:
        sock = proc.sock
        if sock is None:
            sock = proc.sock = runtime.peer_socket(self.ctx, 0)
            sock.set(zmq.SNDHWM, 100_000)
            sock.connect(P.endpoint(self.rundir, proc.endpoint))
        try:
            _send(sock, frame, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("node agent %s dropped a frame to %r: its queue is full", self.name, self.pid(proc.id))

    def _reply(self, proc_id: int, tag: int, value: Any) -> None:
        proc = self.procs.get(proc_id)
        if proc is not None:
            self._send(proc, P.CONTROL_PREFIX, [P.REPLY, tag, value])

    def _signal(self, proc: Proc, msg: Any) -> None:
        self._send(proc, P.SIGNAL_PREFIX, msg)

    # ----------------------------------------------------------------- lifecycle

    def on_spawn(self, sender: int, tag: int, funcref: list, args_bytes: bytes, link: bool,
                 monitor_ref: Ref | None, info: dict | None = None) -> Proc | None:
        spawner = self.procs.get(sender)
        if spawner is None:
            return None
        proc_id = next(self.ids)
        proc = Proc(proc_id, str(proc_id), spawner=(sender, tag))
        if type(info) is dict:
            proc.info.update(info)
        self.procs[proc_id] = proc
        if link:
            proc.links.add(sender)
            spawner.links.add(proc_id)
        if monitor_ref is not None:
            proc.monitored_by[monitor_ref] = (sender, self.pid(proc_id))
            spawner.monitoring[monitor_ref] = proc_id
        data = forkserver.frame([proc_id, codec.encode([funcref, args_bytes, sender, tag])])
        os_pid = self._assign(proc, data)
        if os_pid is None:
            self.unassigned.append((proc_id, data))
        self._to_zygote([P.Z_TAKEN, os_pid, len(self.unassigned)])
        return proc

    def on_warm(self, os_pid: int, fd: int) -> None:
        """The zygote forked a warm process: it takes the oldest spawn waiting, or waits."""
        os.set_blocking(fd, False)
        self.warm.append((os_pid, fd))
        while self.unassigned and self.warm:
            proc_id, data = self.unassigned.popleft()
            proc = self.procs.get(proc_id)
            if proc is None:
                continue
            taker = self._assign(proc, data)
            if taker is None:  # it died while warm
                self.unassigned.appendleft((proc_id, data))
                return
            self._to_zygote([P.Z_TAKEN, taker, len(self.unassigned)])

    def _assign(self, proc: Proc, data: bytes) -> int | None:
        """Give the spawn to the oldest warm process alive, which is the process's OS process
        from now on; its os pid, None if there is none."""
        while self.warm:
            os_pid, fd = self.warm.popleft()
            try:
                written = forkserver.write_assignment(fd, data)
            except OSError:  # it died while warm: the zygote reports it
                os.close(fd)
                continue
            if written < len(data):  # a large spawn: the rest as the pipe takes it
                self.assigning[fd] = memoryview(data)[written:]
                self.poller.register(fd, zmq.POLLOUT)
            else:
                os.close(fd)
            self.os_pids[os_pid] = proc.id
            proc.os_pid = os_pid
            self.deaths.add(proc.id, os_pid)
            if proc.kill_reason is not None:  # killed (its spawner died) while it waited
                self._sigkill(proc)
            return os_pid
        return None

    def _write_assignment(self, fd: int) -> None:
        view = self.assigning[fd]
        try:
            view = view[forkserver.write_assignment(fd, view):]
        except OSError:  # the process died: the zygote reports it
            view = view[:0]
        if view:
            self.assigning[fd] = view
            return
        del self.assigning[fd]
        self.poller.unregister(fd)
        os.close(fd)

    def _on_zygote_exited(self, os_pid: int, status: int, reason_bytes: bytes) -> None:
        proc_id = self.os_pids.pop(os_pid, None)
        if proc_id is not None:
            self.on_exited(proc_id, status, reason_bytes)
            return
        for i, (warm_pid, fd) in enumerate(self.warm):
            if warm_pid == os_pid:  # a warm process died unused
                del self.warm[i]
                os.close(fd)
                return

    def on_spare(self, sender: int, key: Ref, funcref: list, args_bytes: bytes) -> None:
        """A spawn kept ahead (``Runtime.keep_spare``): linked to its spawner, and monitoring
        it under ``key`` so that it exits with the spawner for any reason; all set up here, so
        that the spare sends nothing of its own."""
        proc = self.on_spawn(sender, key, funcref, args_bytes, True, None)
        if proc is not None:
            proc.info["behaviour"] = "spare"
            self.on_monitor(proc.id, key, sender)

    def on_take_spare(self, sender: int, spare_id: int, key: Ref, monitor_ref: Ref | None,
                      info: dict | None = None) -> None:
        """The spawner handed its spare a function: the spare is an ordinary process now."""
        proc = self.procs.get(spare_id)
        if proc is not None:
            self._drop_monitor(proc, key)
            if proc.info.get("behaviour") == "spare":  # unless it has told what it is now
                del proc.info["behaviour"]
                if type(info) is dict:
                    proc.info.update(info)
        if monitor_ref is not None:
            self.on_monitor(sender, monitor_ref, spare_id)

    def on_fork_failed(self, proc_id: int, error: str) -> None:
        log.error("node %s could not fork process %d: %s", self.name, proc_id, error)
        proc = self.procs.get(proc_id)
        if proc is not None:
            self._announce_spawned(proc)
            self._finalize(proc, ("spawn_failed", error))

    def _announce_spawned(self, proc: Proc) -> None:
        """Answer the spawner with the pid of a process that died without writing its exit
        reason (or was never forked).

        A process answers its spawner itself once its mailbox is bound, and that answer is
        usually long there; but one that dies abruptly (``os._exit``, a signal) may take it down
        unsent. The spawner takes the first answer and drops the other (its tag is never used
        again), so a spawn always returns, even a dead process's pid. A spawner that names the
        process to the agent has its pid (``_spawn_answered``): it is not answered again.
        """
        if proc.spawner is not None:
            self._reply(*proc.spawner, proc.id)
            proc.spawner = None

    @staticmethod
    def _spawn_answered(proc: Proc | None, sender: int) -> None:
        """``sender`` named ``proc`` in a request: if it spawned it, it has had its answer."""
        if proc is not None and proc.spawner is not None and proc.spawner[0] == sender:
            proc.spawner = None

    def on_exited(self, proc_id: int, status: int, reason_bytes: bytes) -> None:
        proc = self.procs.get(proc_id)
        if proc is None:
            return
        reason = None
        if reason_bytes:
            try:
                reason = codec.decode(reason_bytes)
            except DecodeError as exc:
                log.warning("process %d reported a malformed exit reason: %s", proc_id, exc)
        if reason is None:
            reason = proc.kill_reason if proc.kill_reason is not None else reason_from_wait_status(status)
        if not reason_bytes:  # one that wrote its reason ran to its end: its own answer went out
            self._announce_spawned(proc)
        self._finalize(proc, reason)

    def on_attach(self, _sender: int, tag: int, token: str, os_pid: int) -> None:
        proc_id = next(self.ids)
        proc = Proc(proc_id, token, embedded=True, os_pid=os_pid)
        self.procs[proc_id] = proc
        self._send(proc, P.CONTROL_PREFIX, [P.REPLY, tag, proc_id])

    def on_detach(self, sender: int, reason: Any) -> None:
        proc = self.procs.get(sender)
        if proc is not None:
            self._finalize(proc, reason)

    def _finalize(self, proc: Proc, reason: Any) -> None:
        """The process is dead: free its name, signal its links, fire its monitors."""
        if self.procs.pop(proc.id, None) is None:
            return
        self.deaths.discard(proc.id)
        for name in {proc.endpoint, str(proc.id)}:  # first: its peers tell its death by this
            try:
                os.unlink(os.path.join(self.rundir, name))
            except FileNotFoundError:
                pass
        if proc.name is not None:
            self.names.pop(proc.name, None)
            self.registry_generation.bump()
        pid = self.pid(proc.id)
        # Links first: a supervisor waits on this exit signal to restart the process.
        for linked_id in proc.links:
            if type(linked_id) is Pid:
                self._to_node(linked_id, ["exit", linked_id.id, linked_id.creation, pid, reason, True])
                continue
            linked = self.procs.get(linked_id)
            if linked is not None:
                linked.links.discard(proc.id)
                self._exit_signal(linked, pid, reason, via_link=True)
        for ref, target in proc.monitoring.items():
            if type(target) is int:
                target_proc = self.procs.get(target)
                if target_proc is not None:
                    target_proc.monitored_by.pop(ref, None)
            else:
                self._to_node(target, ["demonitor", ref, target])
        for ref, (watcher, obj) in proc.monitored_by.items():
            if type(watcher) is Pid:
                self._to_node(watcher, ["down", watcher.id, ref, obj, reason])
                continue
            watcher_proc = self.procs.get(watcher)
            if watcher_proc is not None:
                watcher_proc.monitoring.pop(ref, None)
                self._signal(watcher_proc, Down(ref, obj, reason))
        self.node_watchers.discard(proc.id)
        if proc.id in self.broker_watched:
            self.broker_watched.discard(proc.id)
            self.link.send_op(["proc_down", pid, reason])
            names = [name for name, owner in self.global_names.items() if owner == pid]
            for name in names:  # gone here at once; the broker tells the other nodes
                del self.global_names[name]
            if names:
                self.registry_generation.bump()
        if self.held_locks:
            for resource in [r for r, owner in self.held_locks.items() if owner == proc.id]:
                del self.held_locks[resource]
        if proc.sock is not None:
            proc.sock.close(linger=0)

    def _exit_signal(self, target: Proc, sender: Pid, reason: Any, via_link: bool) -> None:
        effect, death_reason = exit_signal_effect(reason, target.trap_exit, via_link)
        if effect is Effect.TRAP:
            self._signal(target, Exit(sender, reason))
        elif effect is Effect.DIE:
            self._kill(target, death_reason)

    def _kill(self, proc: Proc, reason: Any) -> None:
        if proc.kill_reason is not None:
            return
        proc.kill_reason = reason
        if proc.embedded:
            # A thread of the embedding program cannot be SIGKILLed: it is told, and its process
            # is dead from here on; the thread gets a new pid when it next uses otp.
            self._send(proc, P.CONTROL_PREFIX, [P.KILL, reason])
            self._finalize(proc, reason)
        elif proc.os_pid is not None:
            self._sigkill(proc)

    def _sigkill(self, proc: Proc) -> None:
        try:
            os.kill(proc.os_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # ----------------------------------------------------------------- links, monitors, exits

    def on_link(self, sender: int, tag: int, target: int | Pid) -> None:
        proc = self.procs.get(sender)
        if proc is None:
            return
        if type(target) is Pid:  # a process of another node
            self._reply(sender, tag, True)
            if target.node in self.nodes:
                proc.links.add(target)
                self._to_node(target, ["link", self.pid(sender), target.id, target.creation])
            else:  # as Erlang: the link is made, and broken at once
                self._exit_signal(proc, target, NOCONNECTION, via_link=True)
            return
        target_proc = self.procs.get(target)
        if target_proc is None:
            if proc.trap_exit:
                self._signal(proc, Exit(self.pid(target), NOPROC))
                self._reply(sender, tag, True)
            else:
                self._reply(sender, tag, NOPROC)
            return
        proc.links.add(target)
        target_proc.links.add(sender)
        self._reply(sender, tag, True)

    def on_unlink(self, sender: int, target: int | Pid) -> None:
        proc = self.procs.get(sender)
        if type(target) is Pid:
            if proc is not None and target in proc.links:
                proc.links.discard(target)
                self._to_node(target, ["unlink", self.pid(sender), target.id])
            return
        if proc is not None:
            proc.links.discard(target)
        target_proc = self.procs.get(target)
        if target_proc is not None:
            target_proc.links.discard(sender)

    def on_monitor(self, sender: int, ref: Ref, target: int | str | Pid | list) -> None:
        proc = self.procs.get(sender)
        if proc is None:
            return
        if type(target) in (Pid, list):  # a pid or a (name, node) of another node
            node = target.node if type(target) is Pid else target[1]
            obj = target if type(target) is Pid else tuple(target)
            if node not in self.nodes:
                self._signal(proc, Down(ref, obj, NOCONNECTION))
                return
            proc.monitoring[ref] = obj
            remote = target.id if type(target) is Pid else target[0]
            creation = target.creation if type(target) is Pid else None
            self.link.to_agent(node, ["monitor", ref, self.pid(sender), remote, creation])
            return
        if type(target) is str:
            target_id, obj = self.names.get(target), (target, self.name)
        else:
            target_id, obj = target, self.pid(target)
        target_proc = self.procs.get(target_id) if target_id is not None else None
        if target_proc is None:
            self._signal(proc, Down(ref, obj, NOPROC))
            return
        target_proc.monitored_by[ref] = (sender, obj)
        proc.monitoring[ref] = target_id

    def on_demonitor(self, sender: int, ref: Ref) -> None:
        proc = self.procs.get(sender)
        if proc is None:
            return
        target = proc.monitoring.get(ref)
        if type(target) is int:  # the monitor of a spawn_monitor or a start: the spawn returned
            self._spawn_answered(self.procs.get(target), sender)
        self._drop_monitor(proc, ref)
        self._send(proc, P.CONTROL_PREFIX, [P.DEMONITOR, ref])

    def _drop_monitor(self, proc: Proc, ref: Ref) -> None:
        """Remove ``proc``'s monitor ``ref`` from both ends (the other end may be another node)."""
        target = proc.monitoring.pop(ref, None)
        if type(target) is int:
            target_proc = self.procs.get(target)
            if target_proc is not None:
                target_proc.monitored_by.pop(ref, None)
        elif target is not None:
            self._to_node(target, ["demonitor", ref, target])

    def on_exit(self, sender: int, target: int | Pid, reason: Any) -> None:
        if type(target) is Pid:
            self._to_node(target, ["exit", target.id, target.creation, self.pid(sender), reason, False])
            return
        target_proc = self.procs.get(target)
        if target_proc is not None:
            self._exit_signal(target_proc, self.pid(sender), reason, via_link=False)

    def on_trap_exit(self, sender: int, flag: bool) -> None:
        proc = self.procs.get(sender)
        if proc is not None:
            proc.trap_exit = bool(flag)

    # ----------------------------------------------------------------- registry

    def on_register(self, sender: int, tag: int, name: str, target_id: int) -> None:
        target = self.procs.get(target_id)
        if name in self.names:
            error = f"name {name!r} is already registered to {self.pid(self.names[name])!r}"
        elif target is None or target.kill_reason is not None:
            error = f"cannot register {name!r}: {self.pid(target_id)!r} is not alive"
        elif target.name is not None:
            error = f"cannot register {name!r}: {self.pid(target_id)!r} is already registered as {target.name!r}"
        else:
            error = None
            target.name = name
            self.names[name] = target_id
            self.registry_generation.bump()
        self._reply(sender, tag, error)

    def on_unregister(self, sender: int, tag: int, name: str) -> None:
        target_id = self.names.pop(name, None)
        if target_id is None:
            self._reply(sender, tag, f"name {name!r} is not registered")
            return
        self.registry_generation.bump()
        self.procs[target_id].name = None
        self._reply(sender, tag, None)

    def on_whereis(self, sender: int, tag: int, name: str) -> None:
        self._reply(sender, tag, self.names.get(name))

    def on_registered(self, sender: int, tag: int) -> None:
        self._reply(sender, tag, sorted(self.names))

    def on_is_alive(self, sender: int, tag: int, target_id: int) -> None:
        target = self.procs.get(target_id)
        self._reply(sender, tag, target is not None and target.kill_reason is None)

    def on_os_pid(self, sender: int, tag: int, target_id: int) -> None:
        # A process's pid is known only once it runs, and it runs only once assigned, when the
        # agent learns its OS pid: no one asks before.
        target = self.procs.get(target_id)
        self._reply(sender, tag, None if target is None else target.os_pid)

    def on_stop_node(self, _sender: int) -> None:
        self.stopping = True

    # ----------------------------------------------------------------- introspection

    def on_set_info(self, sender: int, target_id: int, info: dict) -> None:
        proc = self.procs.get(target_id)
        self._spawn_answered(proc, sender)
        if proc is not None and type(info) is dict:
            proc.info.update(info)

    def on_process_info(self, sender: int, tag: int, pid: Pid) -> None:
        if pid.node == self.name:
            self._reply(sender, tag, self._process_info(pid))
        elif pid.node in self.nodes:
            self.link.to_agent(pid.node, ["process_info", self.pid(sender), tag, pid])
        else:
            self._reply(sender, tag, None)

    def on_processes(self, sender: int, tag: int, node: str) -> None:
        if node == self.name:
            self._reply(sender, tag, [self.pid(i) for i in self.procs])
        elif node in self.nodes:
            self.link.to_agent(node, ["processes", self.pid(sender), tag])
        else:
            self._reply(sender, tag, [])

    def _remote_process_info(self, node: str, requester: Pid, tag: int, pid: Pid) -> None:
        self._answer_remote(requester, tag, self._process_info(pid))

    def _remote_processes(self, node: str, requester: Pid, tag: int) -> None:
        self._answer_remote(requester, tag, [self.pid(i) for i in self.procs])

    def _answer_remote(self, requester: Pid, tag: int, value: Any) -> None:
        """Reply to a process of another node, as its own agent would."""
        body = P.CONTROL_PREFIX + codec.encode([P.REPLY, tag, value])
        self.link.queue_route(P.route_frame_head(requester.node, codec.encode(requester)) + body)
        self.link.flush_routes()

    def _process_info(self, pid: Pid) -> dict | None:
        """What this agent knows of one of its processes, with its OS-level figures."""
        proc = self.procs.get(pid.id) if pid.creation == self.creation else None
        if proc is None or proc.kill_reason is not None:
            return None
        info = {"pid": pid, "node": self.name, "os_pid": proc.os_pid, "registered_name": proc.name,
                "embedded": proc.embedded, "trap_exit": proc.trap_exit,
                "links": sorted((self.pid(p) if type(p) is int else p for p in proc.links), key=repr),
                "monitors": [self.pid(t) if type(t) is int else t for t in proc.monitoring.values()],
                "monitored_by": [self.pid(w) if type(w) is int else w for w, _ in proc.monitored_by.values()],
                "behaviour": None, "module": None, "supervisor": None, "child_id": None, "restarts": None}
        info.update(proc.info)
        info.update(_os_figures(proc.os_pid))
        return info

    # ----------------------------------------------------------------- the cluster

    def join(self) -> str | None:
        """Join the broker (a node started with one): None once welcomed, else why not."""
        link = self.link
        link.hello([], [], self.creation)
        deadline = time.monotonic() + JOIN_TIMEOUT
        try:
            while not link.joined:
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"no broker answered at {link.address} within {JOIN_TIMEOUT:.0f} s"
                if link.handshake_failed():
                    return (f"the broker at {link.address} refused the connection: the CURVE handshake "
                            f"failed (the cookie differs from the broker's)")
                if link.sock.poll(min(100, int(left * 1000) + 1)):
                    self._drain_broker()
        except JoinError as exc:
            return str(exc)
        return None

    def _to_node(self, target: Pid | tuple, op: list) -> None:
        """Send an agent op to the node of ``target`` (a Pid, or a (name, node) pair)."""
        node = target.node if type(target) is Pid else target[1]
        if self.link is not None and node in self.nodes:
            self.link.to_agent(node, op)

    def _drain_broker(self) -> None:
        link = self.link
        for _ in range(DRAIN_BATCH):
            parts = link.receive()
            if parts is None:
                return
            try:
                kind = parts[0]
                if kind == P.TO_PROCESS and len(parts) == 3:
                    self._deliver_batch(parts[2])
                elif kind == P.TO_AGENT and len(parts) == 3:
                    op, *args = codec.decode(parts[2])
                    getattr(self, f"_remote_{op}")(parts[1].decode(), *args)
                elif kind == P.TO_BROKER and len(parts) == 2:
                    op, *args = codec.decode(parts[1])
                    getattr(self, f"_broker_{op}")(*args)
                else:
                    raise ValueError(f"{len(parts)}-part frame of kind {kind[:8]!r}")
            except JoinError:
                raise
            except Exception as exc:  # a bad frame from the network is dropped, never fatal
                log.warning("node %s dropped a malformed frame from the broker: %r", self.name, exc)

    def _deliver_batch(self, batch: bytes) -> None:
        """Hand each frame of a batch from another node to its process (dropped if it is gone)."""
        known = self.route_dests
        procs = self.procs
        for dest_bytes, body in P.read_batch(batch):
            proc_id = known.get(dest_bytes)
            if proc_id is None:
                dest = codec.decode(dest_bytes)
                if type(dest) is str:  # a name: resolved each time, names move
                    proc_id = self.names.get(dest)
                elif type(dest) is Pid:
                    if dest.node != self.name or dest.creation != self.creation:
                        continue
                    proc_id = dest.id
                    if len(known) >= 100_000:
                        known.clear()
                    known[dest_bytes] = proc_id
                else:
                    raise ValueError(f"not a destination: {dest!r:.80}")
            proc = procs.get(proc_id) if proc_id is not None else None
            if proc is not None:
                self._send_frame(proc, body)

    def _keep_time(self) -> None:
        link = self.link
        now = time.monotonic()
        if link.joined and now - link.last_heard > link.tick:
            log.warning("node %s lost the broker: nothing heard for %.1f s", self.name, now - link.last_heard)
            self._lose_cluster("net_tick_timeout")
        if not link.joined and now - link.last_hello > link.tick / 4:
            link.hello(*self._claims(), self.creation)
        if self.rejoin_deadline is not None and now > self.rejoin_deadline:
            self.rejoin_deadline = None
            for node in self.missing_nodes:
                self._node_down(node, "connection_closed")
            self.missing_nodes = set()

    def _claims(self) -> tuple[list, list]:
        """What this node holds in the cluster, told to the broker at each (re)join."""
        names = [[name, pid] for name, pid in self.global_names.items() if pid.node == self.name]
        locks = [[resource, self.pid(owner)] for resource, owner in self.held_locks.items()]
        return names, locks

    def _fail_lock_requests(self) -> None:
        """Requests the broker will never answer (it restarted, or is out of reach) get False,
        and their processes ask again."""
        for proc_id, tag in self.lock_requests:
            self._reply(proc_id, tag, False)
        self.lock_requests.clear()

    def _lose_cluster(self, reason: Any) -> None:
        """The broker is gone, or forgot us: every other node is down for us."""
        self.link.joined = False
        self._fail_lock_requests()
        for node in list(self.nodes):
            self._node_down(node, reason)
        self.missing_nodes, self.rejoin_deadline = set(), None

    # frames from the broker

    def _broker_welcome(self, incarnation: int, tick: float, nodes: list, names: list) -> None:
        link = self.link
        restarted = link.incarnation is not None and link.incarnation != incarnation
        link.incarnation, link.tick, link.joined = incarnation, float(tick), True
        if restarted:
            self._fail_lock_requests()
            # A restarted broker: the nodes we knew rejoin at their own pace; those not back
            # within a tick are down.
            self.missing_nodes = self.nodes - set(nodes)
            self.rejoin_deadline = time.monotonic() + link.tick
        mine = {n: pid for n, pid in self.global_names.items() if pid.node == self.name}
        self.global_names = {name: pid for name, pid in names}
        self.global_names.update(mine)   # ours are on their way to the broker in our hello
        self.registry_generation.bump()
        for node in nodes:
            self._node_up(node)

    def _broker_refused(self, why: str) -> None:
        if not self.link.joined and self.link.incarnation is None:
            raise JoinError(f"the broker at {self.link.address} refused node {self.name}: {why}")
        log.error("the broker refused node %s: %s", self.name, why)

    def _broker_who_are_you(self, incarnation: int) -> None:
        link = self.link
        if link.joined and link.incarnation == incarnation:
            # The same broker forgot us: it declared us down (we were silent too long), and
            # the other nodes saw us go. So do we see them go, before they come back.
            log.warning("node %s was declared down by the broker: rejoining", self.name)
            self._lose_cluster("disconnect")
        elif link.joined:
            link.joined = False
        if time.monotonic() - link.last_hello > 0.05:
            link.hello(*self._claims(), self.creation)

    def _broker_ping(self) -> None:
        self.link.send_op(["pong"])

    def _broker_node_up(self, node: str) -> None:
        self._node_up(node)

    def _broker_node_down(self, node: str, reason: Any) -> None:
        self._node_down(node, reason)

    def _broker_name_added(self, name: str, pid: Pid) -> None:
        self.global_names[name] = pid
        self.registry_generation.bump()

    def _broker_name_removed(self, name: str) -> None:
        if self.global_names.pop(name, None) is not None:
            self.registry_generation.bump()

    def _broker_reply(self, proc_id: int, tag: int, value: Any) -> None:
        resource = self.lock_requests.pop((proc_id, tag), None)
        if resource is not None and value is True:
            self.held_locks[resource] = proc_id
        self._reply(proc_id, tag, value)

    def _broker_watch(self, proc_id: int, creation: int) -> None:
        proc = self.procs.get(proc_id) if creation == self.creation else None
        if proc is None or proc.kill_reason is not None:
            self.link.send_op(["proc_down", Pid(self.name, proc_id, creation), NOPROC])
        else:
            self.broker_watched.add(proc_id)

    def _broker_kill(self, proc_id: int, creation: int, reason: Any) -> None:
        proc = self.procs.get(proc_id) if creation == self.creation else None
        if proc is not None:
            self._kill(proc, reason)

    def _node_up(self, node: str) -> None:
        self.missing_nodes.discard(node)
        if node == self.name or node in self.nodes:
            return
        self.nodes.add(node)
        for watcher_id in list(self.node_watchers):
            watcher = self.procs.get(watcher_id)
            if watcher is not None:
                self._signal(watcher, NodeUp(node))

    def _node_down(self, node: str, reason: Any) -> None:
        """``node`` is gone: its names go, and links and monitors to and from its processes
        fire with ``"noconnection"``."""
        self.missing_nodes.discard(node)
        if node not in self.nodes:
            return
        self.nodes.discard(node)
        gone = [name for name, pid in self.global_names.items() if pid.node == node]
        for name in gone:
            del self.global_names[name]
        if gone:
            self.registry_generation.bump()
        for proc in list(self.procs.values()):
            for ref, target in list(proc.monitoring.items()):
                if type(target) is not int and (target.node if type(target) is Pid else target[1]) == node:
                    del proc.monitoring[ref]
                    self._signal(proc, Down(ref, target, NOCONNECTION))
            for ref, (watcher, _) in list(proc.monitored_by.items()):
                if type(watcher) is Pid and watcher.node == node:
                    del proc.monitored_by[ref]
            for peer in [p for p in proc.links if type(p) is Pid and p.node == node]:
                proc.links.discard(peer)
                if proc.id in self.procs:
                    self._exit_signal(proc, peer, NOCONNECTION, via_link=True)
        for watcher_id in list(self.node_watchers):
            watcher = self.procs.get(watcher_id)
            if watcher is not None:
                self._signal(watcher, NodeDown(node, reason))

    # ops from the agents of other nodes

    def _local(self, proc_id: int, creation: int | None) -> Proc | None:
        if creation is not None and creation != self.creation:
            return None
        proc = self.procs.get(proc_id)
        return proc if proc is not None and proc.kill_reason is None else None

    def _remote_link(self, node: str, from_pid: Pid, proc_id: int, creation: int) -> None:
        proc = self._local(proc_id, creation)
        if proc is None:
            self.link.to_agent(node, ["exit", from_pid.id, from_pid.creation, self.pid(proc_id), NOPROC, True])
        else:
            proc.links.add(from_pid)

    def _remote_unlink(self, node: str, from_pid: Pid, proc_id: int) -> None:
        proc = self.procs.get(proc_id)
        if proc is not None:
            proc.links.discard(from_pid)

    def _remote_monitor(self, node: str, ref: Ref, watcher: Pid, target: int | str, creation: int | None) -> None:
        if type(target) is str:
            proc_id, obj = self.names.get(target), (target, self.name)
            proc = self._local(proc_id, None) if proc_id is not None else None
        else:
            proc, obj = self._local(target, creation), Pid(self.name, target, creation)
        if proc is None:
            self.link.to_agent(node, ["down", watcher.id, ref, obj, NOPROC])
        else:
            proc.monitored_by[ref] = (watcher, obj)
            self.remote_monitors[ref] = proc.id

    def _remote_demonitor(self, node: str, ref: Ref, _target: Any) -> None:
        proc = self.procs.get(self.remote_monitors.pop(ref, -1))
        if proc is not None:
            proc.monitored_by.pop(ref, None)

    def _remote_exit(self, node: str, proc_id: int, creation: int, sender: Pid, reason: Any, via_link: bool) -> None:
        proc = self._local(proc_id, creation)
        if proc is None:
            return
        if via_link:
            if sender not in proc.links:
                return  # unlinked meanwhile
            proc.links.discard(sender)
        self._exit_signal(proc, sender, reason, via_link)

    def _remote_down(self, node: str, proc_id: int, ref: Ref, obj: Any, reason: Any) -> None:
        proc = self.procs.get(proc_id)
        if proc is not None and proc.monitoring.pop(ref, None) is not None:
            self._signal(proc, Down(ref, obj, reason))

    # requests from processes

    def on_nodes(self, sender: int, tag: int) -> None:
        self._reply(sender, tag, sorted(self.nodes))

    def on_monitor_nodes(self, sender: int, flag: bool) -> None:
        if flag:
            self.node_watchers.add(sender)
        else:
            self.node_watchers.discard(sender)

    def _cluster_request(self, sender: int, tag: int, op: list) -> bool:
        """Pass a request on to the broker; answer False at once while the broker is out of
        reach, and ``NOT_IN_CLUSTER`` on a node that joined none."""
        if self.link is None:
            self._reply(sender, tag, P.NOT_IN_CLUSTER)
            return False
        if not self.link.joined:
            self._reply(sender, tag, False)
            return False
        self.link.send_op(op)
        return True

    def on_register_name(self, sender: int, tag: int, name: str, pid: Pid) -> None:
        self._cluster_request(sender, tag, ["register_name", sender, tag, name, pid])

    def on_unregister_name(self, sender: int, tag: int, name: str) -> None:
        if self.link is None or not self.link.joined:
            self._reply(sender, tag, None if self.link else P.NOT_IN_CLUSTER)
            return
        self.link.send_op(["unregister_name", sender, tag, name])

    def on_global_whereis(self, sender: int, tag: int, name: str) -> None:
        self._reply(sender, tag, self.global_names.get(name) if self.link else P.NOT_IN_CLUSTER)

    def on_global_names(self, sender: int, tag: int) -> None:
        self._reply(sender, tag, sorted(self.global_names) if self.link else P.NOT_IN_CLUSTER)

    def on_set_lock(self, sender: int, tag: int, resource: bytes, wait: bool) -> None:
        if self._cluster_request(sender, tag, ["set_lock", sender, tag, resource, self.pid(sender), bool(wait)]):
            self.lock_requests[(sender, tag)] = resource

    def on_del_lock(self, sender: int, resource: bytes) -> None:
        if self.held_locks.get(resource) == sender:
            del self.held_locks[resource]
        if self.link is not None and self.link.joined:
            self.link.send_op(["del_lock", resource, self.pid(sender)])

    # ----------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        """Kill every process of the node, reap them, remove the run directory."""
        if self.link is not None:
            self.link.close(leaving=True)
        if self.zygote_pid:
            self.zygote_out += forkserver.frame([P.Z_STOP])
            # Until it has taken the stop and closed: what it sends meanwhile is dropped.
            deadline = time.monotonic() + ZYGOTE_STOP_TIMEOUT
            try:
                while time.monotonic() < deadline:
                    writable = [self.zygote] if self.zygote_out else []
                    left = max(0.0, deadline - time.monotonic())
                    readable, writable, _ = select.select([self.zygote], writable, [], left)
                    if writable:
                        self._flush_zygote()
                    if readable and not self.zygote.recv(1 << 20):
                        break
            except OSError:
                pass
            try:
                os.kill(self.zygote_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():  # orphans of a dead zygote, adopted by the agent
            if proc.os_pid and not proc.embedded:
                try:
                    os.kill(proc.os_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        for proc in self.procs.values():  # destroy() sees only sockets of pyzmq's usual class
            if proc.sock is not None:
                proc.sock.close(linger=0)
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.rundir, ignore_errors=True)


def _os_figures(os_pid: int | None) -> dict:
    """Status, memory and CPU of an OS process (psutil), None where it cannot be read."""
    figures = {"status": None, "memory_rss": None, "memory_uss": None, "cpu_user": None,
               "cpu_system": None, "started": None}
    if os_pid is None:
        return figures
    import psutil  # only here: the agent's start stays quick
    try:
        proc = psutil.Process(os_pid)
        with proc.oneshot():
            status = proc.status()
            figures["status"] = {"sleeping": "waiting", "disk-sleep": "waiting", "stopped": "suspended",
                                 "tracing-stop": "suspended"}.get(status, status)
            figures["memory_rss"] = proc.memory_info().rss
            times = proc.cpu_times()
            figures["cpu_user"], figures["cpu_system"] = times.user, times.system
            figures["started"] = proc.create_time()
        figures["memory_uss"] = proc.memory_full_info().uss
    except psutil.Error:
        pass
    return figures


def main(argv: list[str], zygote_pid: int, zygote: socket.socket, cookie: str | None) -> None:
    """Run the agent of the node ``argv`` describes, its zygote already forked (``otp.boot``)."""
    parser = argparse.ArgumentParser(prog="python -m otp.boot")
    parser.add_argument("--name", required=True)
    parser.add_argument("--creation", type=int, required=True)
    parser.add_argument("--rundir", required=True)
    parser.add_argument("--parent-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--broker", default=None)
    args = parser.parse_args(argv)
    forkserver.become_subreaper()
    raise_descriptor_limit()  # a socket to each process it signals, a pidfd for each process
    forkserver.send_frame(zygote, [P.Z_START, args.name, args.creation, args.rundir, args.preload])
    agent = Agent(args.name, args.creation, args.rundir, zygote_pid, zygote, args.parent_fd,
                  broker=args.broker, cookie=cookie)
    error = agent.join() if agent.link is not None else None
    if error is not None:
        os.write(args.ready_fd, f"error {error}\n".encode())
        os.close(args.ready_fd)
        agent.stopping = True
        agent.shutdown()
        return
    os.write(args.ready_fd, f"ready {zygote_pid}\n".encode())
    os.close(args.ready_fd)
    # What is loaded now lives as long as the agent: keep the collector off it. A full collection
    # would walk every object of every module (20 ms with 1,000 processes here), and write to
    # pages the agent still shares with the zygote it forked.
    gc.freeze()
    agent.run()

