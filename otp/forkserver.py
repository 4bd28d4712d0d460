"""The preloaded fork server (zygote) of a node: a spawn costs a fork, not an interpreter start.

The node's first process (``otp.boot``) forks it before it becomes the agent and makes any
ZeroMQ context or thread, so it holds neither (DESIGN section 6). It forks one child per spawn,
ahead of need (a *warm* process), reaps every child, and reports each death to the agent with
the exit reason the child sent it just before exiting; a child that sent none died at the
hands of the OS (SIGKILL, a segfault, ``os._exit``), and its wait status tells how.

The reasons come as datagrams on one socket that every child shares, each stamped by the kernel
with its sender's pid (``SO_PASSCRED``): the zygote holds no descriptor per child, which every
fork would copy and every new process would have to close (with 1,000 processes running, 0.7 ms
of each spawn).

It hands each warm process's assignment pipe to the agent, which gives the process its work
(a ``frame`` of ``[process id, spawn request]``, ``write_assignment``) without waking the
zygote: a spawn takes one hop, not two.

Its control channel is a unix stream socket pair with the agent: 4-byte big-endian length,
then a codec list (``protocol.Z_*``); a ``Z_WARM`` frame carries a descriptor (``SCM_RIGHTS``).
"""
from __future__ import annotations

import _signal
import ctypes
import gc
import importlib
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, NoReturn


from otp import codec
from otp import runtime
from otp import protocol as P

_LENGTH = struct.Struct(">I")
MAX_CONTROL_FRAME = 256 * 1024 * 1024
MAX_REASON_BYTES = 60_000  # one datagram, well below a unix socket's send buffer
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)
_libc_holding_gil = ctypes.PyDLL(None, use_errno=True)
_LEAN_FORK = sys.implementation.name == "cpython" and getattr(sys, "_is_gil_enabled", lambda: True)()
_child_hooks: list[Callable[[], Any]] = []   # the at-fork hooks of the modules the zygote preloaded


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that forked it exits."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_subreaper() -> None:
    """Adopt (and so reap) descendants orphaned below this process."""
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def fork_lean() -> int:
    """``os.fork()`` without the interpreter's at-fork work, in a process of one thread.

    ``os.fork`` runs the at-fork hooks in each child: ``threading``'s (marks the other threads
    dead), ``logging``'s (remakes the handlers' locks), ``random``'s (reseeds) and otp's (drops
    the parent's ZeroMQ state). That is Python code that writes to some 180 of the zygote's
    pages, each of which the kernel then copies: a child that exits at once takes 281 page
    faults after ``os.fork``, 97 after this. The zygote has no other thread, so no lock is
    held and there is nothing to remake, and no ZeroMQ state; the child here runs what it does
    need: ``random``'s reseed, and the hooks that the modules the zygote preloaded registered
    for a child (see ``_preload``). Where another thread runs, or on an interpreter without a
    GIL, this is ``os.fork()``.
    """
    if not _LEAN_FORK or threading.active_count() > 1:
        return os.fork()
    os_pid = _libc_holding_gil.fork()   # the GIL held throughout: the child has it, as after os.fork
    if os_pid < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    if os_pid == 0:
        random.seed()
        for hook in _child_hooks:
            try:
                hook()
            except BaseException as exc:  # as os.fork: reported, and the child goes on
                sys.stderr.write(f"otp: an at-fork hook failed in a new process: {exc!r}\n")
    return os_pid


def _preload(modules: list[str]) -> None:
    """Import ``modules``, keeping the at-fork hooks they register for a child, which
    ``fork_lean`` runs (they are registered with the interpreter too, for forks of the
    zygote's processes)."""
    register = os.register_at_fork

    def register_and_keep(**hooks: Callable[[], Any]) -> None:
        register(**hooks)
        if hooks.get("after_in_child") is not None:
            _child_hooks.append(hooks["after_in_child"])

    os.register_at_fork = register_and_keep
    try:
        for module in modules:
            try:
                importlib.import_module(module)
            except BaseException as exc:  # a broken module must not take the node down
                sys.stderr.write(f"otp zygote: cannot preload {module}: {exc!r}\n")
    finally:
        os.register_at_fork = register


def frame(obj: Any) -> bytes:
    """The bytes of one control frame."""
    data = codec.encode(obj)
    return _LENGTH.pack(len(data)) + data


def send_frame(sock: socket.socket, obj: Any, fd: int | None = None) -> None:
    """Send one frame, waiting while the socket is full; ``fd``, a descriptor, goes with it."""
    data = frame(obj)
    if fd is None:
        sock.sendall(data)
        return
    sent = socket.send_fds(sock, [data], [fd])
    if sent < len(data):  # interrupted part way: the descriptor went with the first byte
        sock.sendall(data[sent:])


class FrameReader:
    """Splits a byte stream of length-prefixed codec frames into decoded lists."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list:
        buf = self._buffer
        buf += data
        frames = []
        while len(buf) >= 4:
            (length,) = _LENGTH.unpack_from(buf)
            if length > MAX_CONTROL_FRAME:
                raise ValueError(f"control frame of {length} bytes")
            if len(buf) < 4 + length:
                break
            frames.append(codec.decode(bytes(buf[4:4 + length])))
            del buf[:4 + length]
        return frames


WARM_PROCESSES = int(os.environ.get("OTP_WARM_PROCESSES", "1"))
"""Processes the zygote keeps forked ahead, their ZeroMQ context already up, waiting for work."""
WARM_BURST = 8
"""At most this many warm processes while spawns come in a burst (as a supervisor starting its
children): forked back to back, they cost the zygote its copy-on-write page faults once per
batch instead of once per spawn."""
BURST_WINDOW = 0.1
"""Spawns within this many seconds count as one burst."""


def serve(ctl: socket.socket) -> NoReturn:
    """The zygote's loop; runs in the process ``otp.boot`` forked before it became the agent,
    until told to stop.

    The agent's first frame (``Z_START``) names the node and the modules to import once here,
    so that processes running their functions find them loaded. A spawn takes a *warm*
    process: one forked ahead of need that has already made its ZeroMQ context and connected to
    the agent, and now waits on a pipe for its process id and function. The zygote then forks
    the next warm process while the new one runs, so a spawn pays neither the fork nor the
    ZeroMQ set-up.

    The zygote sends each warm process's assignment pipe to the agent (``Z_WARM``), which
    writes the assignment itself and then tells the zygote (``Z_TAKEN``), so that the zygote
    forks the next one off the spawn's path. Each ``Z_TAKEN`` also says how many spawns wait
    in the agent for a warm process; for each that cannot be forked, the agent hears why
    (``Z_FORK_FAILED``) and fails the oldest.
    """
    die_with_parent()
    zygote_pid = os.getpid()
    os.closerange(3, ctl.fileno())  # what the agent inherited (its pipes to the program) is its own
    os.closerange(ctl.fileno() + 1, 1 << 20)
    start = _read_frame(ctl.fileno())
    if start is None:
        os._exit(0)  # the agent is gone
    _, node_name, creation, rundir, preload = codec.decode(start)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _preload(preload)
    # Children share the zygote's memory copy-on-write: keep their garbage collector off the
    # zygote's objects, or its first collection would copy every page that holds one.
    gc.collect()
    gc.freeze()
    # Hand the heap's free pages back: every page the zygote maps, each fork copies an entry
    # for and each death of a process unmaps (1.8 MB of 15 here).
    _libc.malloc_trim(0)
    reasons_in, reasons_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reasons_in.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    reasons_in.setblocking(False)
    children: set[int] = set()          # os pids of the children not yet reaped
    reasons: dict[int, bytes] = {}      # os pid -> the exit reason it sent, until it is reaped
    warm: set[int] = set()              # os pids of the warm processes not yet taken
    waiting = 0                         # spawns waiting in the agent for a warm process
    reader = FrameReader()
    node = (node_name, creation, rundir)
    recent_spawns: list[float] = []     # monotonic times of the spawns in the current burst window
    # A warm process that died unused is replaced at the next spawn, not at once: where warm
    # processes cannot start (no descriptors left, the run directory gone), the zygote would
    # otherwise fork them in a loop. Spawns still fork on demand, and fail as processes do.
    keep_warm = True

    def fork_warm() -> None:
        assign_r, assign_w = os.pipe()
        try:
            os_pid = fork_lean()
        except OSError as exc:
            os.close(assign_r)
            os.close(assign_w)
            raise exc
        if os_pid == 0:
            try:
                _warm_child(zygote_pid, reasons_out.fileno(), assign_r, node)
            finally:
                os._exit(70)
        os.close(assign_r)
        children.add(os_pid)
        warm.add(os_pid)
        send_frame(ctl, [P.Z_WARM, os_pid], assign_w)
        os.close(assign_w)

    def taken(os_pid: int | None, spawns_waiting: int) -> None:
        nonlocal keep_warm, waiting
        keep_warm = True
        waiting = spawns_waiting
        if os_pid is not None:
            warm.discard(os_pid)
            recent_spawns.append(time.monotonic())

    def take_reasons() -> None:
        """Keep the exit reasons the children have sent, by the pid the kernel stamped."""
        while True:
            try:
                data, ancillary, _, _ = reasons_in.recvmsg(MAX_REASON_BYTES + _LENGTH.size, _CREDENTIALS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            for level, kind, creds in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    os_pid = _CREDENTIALS.unpack_from(creds)[0]
                    if os_pid in children:  # not some descendant that found the socket
                        reasons[os_pid] = data

    def reap() -> None:
        nonlocal keep_warm
        dead = []
        while children:
            try:
                os_pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if os_pid == 0:
                break
            if os_pid in children:
                dead.append((os_pid, status))
        if not dead:
            return
        take_reasons()  # a child sends its reason before it exits: those reaped have theirs in
        for os_pid, status in dead:
            children.discard(os_pid)
            reason = _reason(reasons.pop(os_pid, b""))
            if os_pid in warm:  # it died unused (or the agent's Z_TAKEN is on its way)
                warm.discard(os_pid)
                keep_warm = False
                try:
                    os.unlink(os.path.join(rundir, warm_mailbox_name(os_pid)))
                except FileNotFoundError:
                    pass
            send_frame(ctl, [P.Z_EXITED, os_pid, status, reason])

    def stop() -> NoReturn:
        for os_pid in children:
            try:
                os.kill(os_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while children:
            try:
                os_pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            children.discard(os_pid)
        os._exit(0)

    def refill() -> None:
        """Keep warm processes ahead: one, more in a burst, and one for each spawn waiting."""
        nonlocal waiting
        if recent_spawns:
            horizon = time.monotonic() - BURST_WINDOW
            while recent_spawns and recent_spawns[0] < horizon:
                recent_spawns.pop(0)
        wanted = max(WARM_PROCESSES, min(WARM_BURST, len(recent_spawns))) if keep_warm else 0
        wanted += waiting
        while len(warm) < wanted:
            try:
                fork_warm()
            except OSError as exc:
                if len(warm) < waiting:  # a spawn waits for it: it fails, as a process would
                    send_frame(ctl, [P.Z_FORK_FAILED, str(exc)])
                    waiting -= 1
                    wanted -= 1
                    continue
                sys.stderr.write(f"otp zygote: cannot fork a warm process: {exc}\n")
                break

    while True:
        refill()
        try:
            readable, _, _ = select.select([ctl, wake_r, reasons_in], [], [])
        except InterruptedError:
            continue
        if reasons_in in readable:
            take_reasons()
        if wake_r in readable:
            os.read(wake_r, 4096)
            reap()
        if ctl in readable:
            data = ctl.recv(1 << 20)
            if not data:
                stop()  # the agent is gone
            for op, *args in reader.feed(data):
                if op == P.Z_TAKEN:
                    taken(*args)
                elif op == P.Z_STOP:
                    stop()


def _reason(data: bytes) -> bytes:
    """The exit reason in a child's datagram (b"" if none, or not well framed)."""
    if len(data) < 4 or _LENGTH.unpack_from(data)[0] != len(data) - 4:
        return b""
    return data[4:]


def write_assignment(fd: int, data: bytes | memoryview) -> int:
    """Write what a warm process's assignment pipe (non-blocking) takes now of ``data``; the
    count written. Raises ``OSError`` if the process is gone."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


def warm_mailbox_name(os_pid: int) -> str:
    return f"w{os_pid}"


def _warm_child(zygote_pid: int, reason_out: int, assign_r: int, node: tuple[str, int, str]) -> NoReturn:
    """A warm process: shed the zygote's state, make a ZeroMQ context and connect to the agent,
    then wait for an assignment; run it, report the exit reason, exit."""
    signal.set_wakeup_fd(-1)
    # signal.signal's wrapper turns the old handler into an enum member, cold code that costs a
    # new process 0.1 ms; the C function underneath does the same without it.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    die_with_parent()
    if os.getppid() != zygote_pid:
        os._exit(1)  # the zygote died while we were born
    low, high = sorted((reason_out, assign_r))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 20)
    node_name, creation, rundir = node
    ctx = runtime.new_process_context()
    agent = runtime.connect_agent(ctx, rundir)
    # The mailbox is bound ahead too, under a name of its own; the assignment renames the
    # socket file to the process id's endpoint (peers connect by path, so the socket is theirs).
    warm_path = os.path.join(rundir, warm_mailbox_name(os.getpid()))
    mailbox = runtime.bind_mailbox(ctx, rundir, warm_mailbox_name(os.getpid()))
    context = runtime.NodeContext(node_name, creation, rundir, ctx, os.getpid())
    rt = runtime.Runtime(context, mailbox, embedded=False, agent=agent)
    rt.rehearse()
    assignment = _read_frame(assign_r)
    os.close(assign_r)
    if assignment is None:
        os._exit(0)  # the zygote stopped before it needed us
    proc_id, payload = codec.decode(assignment)
    os.rename(warm_path, os.path.join(rundir, str(proc_id)))
    reason = runtime.run_spawned(rt, proc_id, codec.decode(payload))
    sys.stdout.flush()
    sys.stderr.flush()
    data = _encode_reason(reason)
    os.write(reason_out, _LENGTH.pack(len(data)) + data)  # one datagram, sent before the exit
    os._exit(0)


def _read_frame(fd: int) -> bytes | None:
    """One length-prefixed frame from ``fd``, read whole; None at the end of the stream."""
    header = _read_exactly(fd, _LENGTH.size)
    return None if header is None else _read_exactly(fd, _LENGTH.unpack(header)[0])


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _encode_reason(reason: Any) -> bytes:
    try:
        data = codec.encode(reason)
    except TypeError as exc:
        data = codec.encode(("exception", "TypeError", f"unencodable exit reason: {exc}", ""))
    if len(data) > MAX_REASON_BYTES:
        if type(reason) is tuple and reason and reason[0] == "exception":
            data = codec.encode(reason[:3] + ("(traceback too long)",))
        if len(data) > MAX_REASON_BYTES:
            data = codec.encode(("exception", "ValueError", "exit reason too large", ""))
    return data
