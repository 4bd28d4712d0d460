"""The node running in this program: a named runtime made of a node agent, its zygote and the processes they spawn.

    with otp.Node("node_a") as node:       # the calling thread is a process of the node
        pid = otp.spawn(worker.main)

A program that calls otp without a ``Node`` gets an implicit, unnamed one on first use, stopped
at exit. One node runs per program at a time. Its run directory (mode 0700, in the temp dir)
holds the ipc endpoints and is removed when the node stops; one left by a killed node is
removed when the next node starts.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

import psutil
import zmq

from otp import codec, runtime
from otp import protocol as P
from otp.cookie import resolve_cookie
from otp.errors import NodeError

log = logging.getLogger(__name__)

AGENT_START_TIMEOUT = 20.0
AGENT_STOP_TIMEOUT = 5.0
RUNDIR_PREFIX = f"otp-{os.getuid()}-"
_SHARED_MEMORY_DIR = "/dev/shm"
_OWNER_FILE = "owner"

_lock = threading.RLock()
_running: "Node | None" = None


class Node:
    """A running otp node; use it as a context manager, or ``start()`` and ``stop()`` it."""

    def __init__(self, name: str | None = None, cookie: str | None = None, broker: str | None = None,
                 preload: list[str] | tuple[str, ...] = ()) -> None:
        """``broker`` (a tcp endpoint) joins the node to a cluster (see ``otp.broker``); it then
        needs a ``name`` and a cookie (``cookie``, else ``$OTP_COOKIE``, else ``~/.otp.cookie``),
        and ``start`` raises ``NodeError`` if the broker refuses it or none answers.

        ``preload`` names modules the node's zygote imports once at start, so that the
        processes that run their functions start without importing them (as multiprocessing's
        ``set_forkserver_preload``). Their import must start no thread and no ZeroMQ context;
        the hooks they register with ``os.register_at_fork`` for a child run in each process."""
        if broker is not None and name is None:
            raise ValueError("a node that joins a broker needs a name")
        if name is not None and isinstance(name, str) and len(name.encode()) > 200:
            raise ValueError(f"a node name has at most 200 bytes; got {len(name.encode())}")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"a node name is a non-empty str without '/'; got {name!r}")
        if name is None:
            self.name = "nonode@nohost"
        else:
            self.name = name if "@" in name else f"{name}@{socket.gethostname()}"
        self.broker = broker
        self.cookie = resolve_cookie(cookie) if broker is not None else cookie
        self.preload = list(preload)
        self.rundir: str | None = None
        self.creation = secrets.randbits(31)
        self._agent: subprocess.Popen | None = None
        self._ctx: zmq.Context | None = None
        self._liveness_w: int | None = None
        self._stop_r, self._stop_w = -1, -1
        self._watcher: threading.Thread | None = None
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Node":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> "Node":
        """Start the agent and the zygote; return once the node accepts processes."""
        global _running
        with _lock:
            if _running is not None:
                raise NodeError(f"node {_running.name} is already running in this program")
            remove_stale_rundirs()
            short = self.name.split("@")[0]
            self.rundir = tempfile.mkdtemp(prefix=f"{RUNDIR_PREFIX}{short}-", dir=rundir_base())
            os.chmod(self.rundir, 0o700)
            try:
                self._start_agent()
            except BaseException:
                shutil.rmtree(self.rundir, ignore_errors=True)
                raise
            self._ctx = runtime.new_context(runtime.LARGE_MAX_SOCKETS)
            runtime.set_node(runtime.NodeContext(self.name, self.creation, self.rundir, self._ctx, os.getpid()))
            _running = self
        return self

    def _start_agent(self) -> None:
        liveness_r, self._liveness_w = os.pipe()
        ready_r, ready_w = os.pipe()
        env = dict(os.environ, OTP_SYS_PATH=json.dumps([p or os.getcwd() for p in sys.path]))
        cmd = [sys.executable, "-m", "otp.boot", "--name", self.name, "--creation", str(self.creation),
               "--rundir", self.rundir, "--parent-fd", str(liveness_r), "--ready-fd", str(ready_w)]
        for module in self.preload:
            cmd += ["--preload", module]
        if self.broker is not None:
            cmd += ["--broker", self.broker]
            env["OTP_AGENT_COOKIE"] = self.cookie  # not on the command line, which others may read
        try:
            self._agent = subprocess.Popen(cmd, pass_fds=(liveness_r, ready_w), env=env,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(liveness_r)
            os.close(ready_w)
        try:
            line = _read_line(ready_r, AGENT_START_TIMEOUT)
        finally:
            os.close(ready_r)
        if not line.startswith("ready "):
            self._agent.kill()
            self._agent.wait()
            os.close(self._liveness_w)
            if line.startswith("error "):
                raise NodeError(f"node {self.name} could not start: {line[6:].strip()}")
            raise NodeError(f"the agent of node {self.name} did not start (exit status {self._agent.returncode})")
        zygote_pid = int(line.split()[1])
        with open(os.path.join(self.rundir, _OWNER_FILE), "w") as f:
            f.write(f"{self._agent.pid} {_create_time(self._agent.pid)}\n")
        self.zygote_pid = zygote_pid
        self._stop_r, self._stop_w = os.pipe()
        self._watcher = threading.Thread(target=self._watch_agent, name=f"otp-node-{self.name}", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Kill every process of the node, stop the agent, remove the run directory."""
        global _running
        with _lock:
            if self._agent is None or self._stopping:
                return
            self._stopping = True
            os.write(self._stop_w, b"x")
            self._watcher.join()
            all_closed = runtime.end_runtimes("shutdown")
            runtime.set_node(None)
            if self._agent.poll() is None:
                sock = self._ctx.socket(zmq.PUSH)
                sock.connect(P.endpoint(self.rundir, P.AGENT_ENDPOINT))
                sock.send(codec.encode([P.STOP_NODE, -1]))
                sock.close(linger=1000)
                try:
                    self._agent.wait(AGENT_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.error("the agent of node %s did not stop in %.0f s: killing it", self.name, AGENT_STOP_TIMEOUT)
                    self._agent.kill()
                    self._agent.wait()
            if all_closed:
                self._ctx.destroy(linger=0)
            else:  # other threads close their own sockets when they next run; then it ends
                threading.Thread(target=self._ctx.term, name="otp-context-term", daemon=True).start()
            for fd in (self._liveness_w, self._stop_r, self._stop_w):
                os.close(fd)
            shutil.rmtree(self.rundir, ignore_errors=True)
            if _running is self:
                _running = None

    @property
    def agent_os_pid(self) -> int | None:
        """The OS pid of the node agent (for tools and tests)."""
        return None if self._agent is None else self._agent.pid

    def _watch_agent(self) -> None:
        """Notice an agent that dies while the node runs, and tell the node's threads."""
        pidfd = os.pidfd_open(self._agent.pid)
        try:
            readable, _, _ = select.select([pidfd, self._stop_r], [], [])
        finally:
            os.close(pidfd)
        if self._stop_r in readable:
            return
        log.error("the agent of node %s died: its processes are gone", self.name)
        runtime.node_down()

    def __repr__(self) -> str:
        return f"<otp.Node {self.name} rundir={self.rundir}>"


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _create_time(os_pid: int) -> float:
    try:
        return psutil.Process(os_pid).create_time()
    except psutil.Error:
        return 0.0


def rundir_base() -> str:
    """Where nodes make their run directories: ``$OTP_RUNDIR`` if set, else ``/dev/shm`` where
    it is a writable directory (a memory file system: binding a mailbox there costs no disk
    inode work), else the temporary directory."""
    base = os.environ.get("OTP_RUNDIR")
    if base:
        return base
    if os.path.isdir(_SHARED_MEMORY_DIR) and os.access(_SHARED_MEMORY_DIR, os.W_OK | os.X_OK):
        return _SHARED_MEMORY_DIR
    return tempfile.gettempdir()


def remove_stale_rundirs() -> list[str]:
    """Remove run directories whose agent is gone (left by a killed node); return them."""
    removed = []
    base = rundir_base()
    for entry in os.listdir(base):
        if not entry.startswith(RUNDIR_PREFIX):
            continue
        path = os.path.join(base, entry)
        try:
            with open(os.path.join(path, _OWNER_FILE)) as f:
                agent_pid, created = f.read().split()
        except (OSError, ValueError):
            continue  # still starting, or not ours
        if _create_time(int(agent_pid)) != float(created):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def start_implicit_node() -> None:
    """Start the unnamed node a program gets on its first use of otp, stopped at exit."""
    implicit = Node().start()
    atexit.register(implicit.stop)
