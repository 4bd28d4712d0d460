"""The node agent: one small OS process per node that owns the node's tables and lifetimes.

It spawns every process through the zygote (``otp.forkserver``), holds the process table, the
local registry and the link and monitor tables, learns of every death from the zygote (no
polling), and delivers exit signals and ``Down`` messages, including those the dead could not
send. It runs no user code. When the program that started it dies, or it is told to stop, it
kills every process of the node and removes the run directory.

Started by ``otp.Node`` as ``python -m otp.agent``; not a public interface.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import zmq

from otp import codec, forkserver, runtime
from otp.registry import RegistryGeneration
from otp import protocol as P
from otp.errors import DecodeError
from otp.signals import Effect, exit_signal_effect, reason_from_wait_status
from otp.terms import NOPROC, Down, Exit, Pid, Ref

log = logging.getLogger("otp.agent")

ZYGOTE_STOP_TIMEOUT = 2.0


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
    links: set[int] = field(default_factory=set)
    monitored_by: dict[Ref, tuple[int, Any]] = field(default_factory=dict)  # ref -> (watcher, object)
    monitoring: dict[Ref, int] = field(default_factory=dict)                # ref -> target id
    sock: zmq.Socket | None = None
    os_pid_waiters: list[tuple[int, int]] = field(default_factory=list)  # asked before the fork was reported


class Agent:
    """The agent's state and event loop."""

    def __init__(self, name: str, creation: int, rundir: str, zygote_pid: int,
                 zygote: socket.socket, parent_fd: int) -> None:
        self.name = name
        self.creation = creation
        self.rundir = rundir
        self.zygote_pid = zygote_pid
        self.zygote = zygote
        self.parent_fd = parent_fd
        self.ctx = runtime.new_context()
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
        self.stopping = False
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def pid(self, proc_id: int) -> Pid:
        return Pid(self.name, proc_id, self.creation)

    # ----------------------------------------------------------------- loop

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        poller.register(self.zygote.fileno(), zmq.POLLIN)
        poller.register(self.parent_fd, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        handlers = self._handlers()
        while not self.stopping:
            events = dict(poller.poll())
            if self.inbox in events:
                self._drain_inbox(handlers)
            if self.zygote.fileno() in events:
                self._on_zygote()
            if self.wake_r in events:
                os.read(self.wake_r, 4096)
                self._reap_orphans()
            if self.parent_fd in events and not os.read(self.parent_fd, 4096):
                log.debug("the program that started node %s is gone: stopping", self.name)
                self.stopping = True
        self.shutdown()

    def _drain_inbox(self, handlers: dict) -> None:
        inbox = self.inbox
        while True:
            try:
                frame = inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
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
            P.SPAWN: self.on_spawn, P.STARTED: self.on_started, P.ATTACH: self.on_attach,
            P.DETACH: self.on_detach, P.LINK: self.on_link, P.UNLINK: self.on_unlink,
            P.MONITOR: self.on_monitor, P.DEMONITOR: self.on_demonitor, P.EXIT: self.on_exit,
            P.TRAP_EXIT: self.on_trap_exit, P.REGISTER: self.on_register,
            P.UNREGISTER: self.on_unregister, P.WHEREIS: self.on_whereis,
            P.REGISTERED: self.on_registered, P.IS_ALIVE: self.on_is_alive,
            P.OS_PID: self.on_os_pid, P.STOP_NODE: self.on_stop_node,
        }

    def _on_zygote(self) -> None:
        try:
            data = self.zygote.recv(1 << 20)
        except ConnectionError:
            data = b""
        if not data:
            if not self.stopping:
                log.error("the fork server of node %s died: stopping the node", self.name)
            self.stopping = True
            return
        for op, *args in self.zygote_reader.feed(data):
            if op == P.Z_FORKED:
                self.on_forked(*args)
            elif op == P.Z_EXITED:
                self.on_exited(*args)
            elif op == P.Z_FORK_FAILED:
                self.on_fork_failed(*args)

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
        sock = proc.sock
        if sock is None:
            sock = proc.sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.connect(P.endpoint(self.rundir, proc.endpoint))
        try:
            sock.send(prefix + codec.encode(obj), zmq.NOBLOCK)
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
                 monitor_ref: Ref | None) -> None:
        spawner = self.procs.get(sender)
        if spawner is None:
            return
        proc_id = next(self.ids)
        proc = Proc(proc_id, str(proc_id), spawner=(sender, tag))
        self.procs[proc_id] = proc
        if link:
            proc.links.add(sender)
            spawner.links.add(proc_id)
        if monitor_ref is not None:
            proc.monitored_by[monitor_ref] = (sender, self.pid(proc_id))
            spawner.monitoring[monitor_ref] = proc_id
        payload = codec.encode([funcref, args_bytes, sender, tag])
        forkserver.send_frame(self.zygote, [P.Z_SPAWN, proc_id, payload])

    def on_forked(self, proc_id: int, os_pid: int) -> None:
        proc = self.procs.get(proc_id)
        if proc is None:
            return
        proc.os_pid = os_pid
        for sender, tag in proc.os_pid_waiters:
            self._reply(sender, tag, os_pid)
        proc.os_pid_waiters.clear()
        if proc.kill_reason is not None:
            self._sigkill(proc)

    def on_fork_failed(self, proc_id: int, error: str) -> None:
        log.error("node %s could not fork process %d: %s", self.name, proc_id, error)
        proc = self.procs.get(proc_id)
        if proc is not None:
            self._announce_spawned(proc)
            self._finalize(proc, ("spawn_failed", error))

    def on_started(self, proc_id: int) -> None:
        proc = self.procs.get(proc_id)
        if proc is not None:
            self._announce_spawned(proc)

    def _announce_spawned(self, proc: Proc) -> None:
        """Answer the spawner with the new pid, once the process's mailbox is bound or it died.

        The process answers its spawner directly too, and that answer is usually first; but a
        process that dies at once (``os._exit``) may take it down unsent. The spawner takes the
        first answer and drops the other, so a spawn always returns, even a dead process's pid.
        """
        if proc.spawner is not None:
            self._reply(*proc.spawner, proc.id)
            proc.spawner = None

    def on_exited(self, proc_id: int, os_pid: int, status: int, reason_bytes: bytes) -> None:
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
        if proc.name is not None:
            self.names.pop(proc.name, None)
            self.registry_generation.bump()
        pid = self.pid(proc.id)
        for ref, target_id in proc.monitoring.items():
            target = self.procs.get(target_id)
            if target is not None:
                target.monitored_by.pop(ref, None)
        for ref, (watcher_id, obj) in proc.monitored_by.items():
            watcher = self.procs.get(watcher_id)
            if watcher is not None:
                watcher.monitoring.pop(ref, None)
                self._signal(watcher, Down(ref, obj, reason))
        for linked_id in proc.links:
            linked = self.procs.get(linked_id)
            if linked is not None:
                linked.links.discard(proc.id)
                self._exit_signal(linked, pid, reason, via_link=True)
        for sender, tag in proc.os_pid_waiters:
            self._reply(sender, tag, None)
        if proc.sock is not None:
            proc.sock.close(linger=0)
        for name in {proc.endpoint, str(proc.id)}:
            try:
                os.unlink(os.path.join(self.rundir, name))
            except FileNotFoundError:
                pass

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

    def on_link(self, sender: int, tag: int, target_id: int) -> None:
        proc = self.procs.get(sender)
        if proc is None:
            return
        target = self.procs.get(target_id)
        if target is None:
            if proc.trap_exit:
                self._signal(proc, Exit(self.pid(target_id), NOPROC))
                self._reply(sender, tag, True)
            else:
                self._reply(sender, tag, NOPROC)
            return
        proc.links.add(target_id)
        target.links.add(sender)
        self._reply(sender, tag, True)

    def on_unlink(self, sender: int, target_id: int) -> None:
        for a, b in ((sender, target_id), (target_id, sender)):
            proc = self.procs.get(a)
            if proc is not None:
                proc.links.discard(b)

    def on_monitor(self, sender: int, ref: Ref, target: int | str) -> None:
        proc = self.procs.get(sender)
        if proc is None:
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
        target_id = proc.monitoring.pop(ref, None)
        target = self.procs.get(target_id) if target_id is not None else None
        if target is not None:
            target.monitored_by.pop(ref, None)
        self._send(proc, P.CONTROL_PREFIX, [P.DEMONITOR, ref])

    def on_exit(self, sender: int, target_id: int, reason: Any) -> None:
        target = self.procs.get(target_id)
        if target is not None:
            self._exit_signal(target, self.pid(sender), reason, via_link=False)

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
        target = self.procs.get(target_id)
        if target is not None and target.os_pid is None:
            # A new process can run (and be asked about) before the zygote's report arrives.
            target.os_pid_waiters.append((sender, tag))
            return
        self._reply(sender, tag, None if target is None else target.os_pid)

    def on_stop_node(self, _sender: int) -> None:
        self.stopping = True

    # ----------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        """Kill every process of the node, reap them, remove the run directory."""
        if self.zygote_pid:
            try:
                forkserver.send_frame(self.zygote, [P.Z_STOP])
            except OSError:
                pass
            self.zygote.settimeout(ZYGOTE_STOP_TIMEOUT)
            try:
                while self.zygote.recv(1 << 20):
                    pass
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
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.rundir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m otp.agent")
    parser.add_argument("--name", required=True)
    parser.add_argument("--creation", type=int, required=True)
    parser.add_argument("--rundir", required=True)
    parser.add_argument("--parent-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.path[:] = json.loads(os.environ.get("OTP_SYS_PATH", "[]")) or sys.path
    forkserver.become_subreaper()
    agent_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote_pid = os.fork()  # before any ZeroMQ context or thread exists
    if zygote_pid == 0:
        agent_end.close()
        os.close(args.parent_fd)
        os.close(args.ready_fd)
        forkserver.serve(zygote_end, args.name, args.creation, args.rundir, args.preload)
    zygote_end.close()
    agent = Agent(args.name, args.creation, args.rundir, zygote_pid, agent_end, args.parent_fd)
    os.write(args.ready_fd, f"ready {zygote_pid}\n".encode())
    os.close(args.ready_fd)
    agent.run()


if __name__ == "__main__":
    main()
