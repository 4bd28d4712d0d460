"""pytest fixtures for resilience tests; pytest loads them when otp is installed.

    import os, signal, otp
    from otp.pytest_plugin import assert_restarted

    def test_the_store_comes_back(otp_node):
        sup = AppSup.start_link()
        old = otp.whereis("kv_store")
        os.kill(otp.os_pid(old), signal.SIGKILL)
        new = assert_restarted(sup, "kv_store", old)
        assert otp.call(new, ("get", "k")) is None

Fixtures:

- ``otp_node``: a fresh node for the test (the test's thread is one of its processes); the test
  fails if it leaves an OS process, a socket file or a run directory behind.
- ``otp_cluster``: a broker in this program, this program as node ``test`` joined to it, and
  ``otp_cluster.start(name)`` for more nodes, each a process tree of its own, driven with
  ``node.run(func, *args)`` and killed with ``node.kill()``.
- ``chaos``: ``chaos(target, rate=..., ...)`` starts a ``ChaosMonkey`` stopped at teardown.

Helpers: ``wait_for(predicate, timeout)``, ``assert_restarted(sup, child_id, old_pid)``.
"""
from __future__ import annotations

import ctypes
import glob
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from typing import Any, Callable

import psutil
import pytest

import otp

COOKIE = "otp-pytest-cookie"
_tags = itertools.count(1)


# --------------------------------------------------------------------- helpers

def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Ask ``predicate`` until it returns something true and return that; fail after
    ``timeout`` seconds. Each ask should wait on something real (a call, a receive)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")


def assert_restarted(sup: Any, child_id: Any, old_pid: otp.Pid, timeout: float = 10.0) -> otp.Pid:
    """Wait until ``sup`` runs ``child_id`` as a live process other than ``old_pid``; return it."""
    def fresh() -> otp.Pid | None:
        for cid, pid, _, _ in otp.supervisor.which_children(sup):
            if cid == child_id and isinstance(pid, otp.Pid) and pid != old_pid \
                    and otp.process_info(pid, timeout=0) is not None:   # alive, on any node
                return pid
        return None
    return wait_for(fresh, timeout, f"a restart of {child_id!r} under {sup!r}")


def leftovers() -> tuple[list[psutil.Process], list[str]]:
    """This program's live descendant processes, and the nodes' run directories that exist."""
    from otp.local_node import RUNDIR_PREFIX, rundir_base
    children = [p for p in psutil.Process().children(recursive=True) if _running(p)]
    return children, glob.glob(os.path.join(rundir_base(), RUNDIR_PREFIX + "*"))


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LeakCheck:
    """Note what runs now; ``check()`` ends (by OS pid) and reports what was added since."""

    def __init__(self) -> None:
        children, self.dirs = leftovers()
        self.pids = {p.pid for p in children}

    def check(self) -> None:
        children, dirs = leftovers()
        new_children = [p for p in children if p.pid not in self.pids]
        new_dirs = sorted(set(dirs) - set(self.dirs))
        described = []
        for proc in new_children:
            try:
                described.append((proc.pid, proc.cmdline()))
                proc.kill()
                proc.wait(10)   # reaped here, not left a zombie
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
        for path in new_dirs:
            shutil.rmtree(path, ignore_errors=True)
        assert not described, f"processes left behind: {described}"
        assert not new_dirs, f"run directories left behind: {new_dirs}"


# --------------------------------------------------------------------- fixtures

@pytest.fixture
def otp_node():
    """A fresh node; fails the test if it leaves a process, socket file or run directory."""
    leaks = LeakCheck()
    with otp.Node() as node:
        yield node
    leaks.check()


@pytest.fixture
def otp_cluster():
    """A broker (tick 1 s), this program as node ``test``, and ``start(name)`` for more nodes."""
    leaks = LeakCheck()
    remotes: list[RemoteNode] = []
    with otp.Broker("tcp://127.0.0.1:0", cookie=COOKIE, tick=1.0) as broker:
        def start(name: str, cookie: str = COOKIE) -> RemoteNode:
            remote = RemoteNode(name, broker.address, cookie)
            remotes.append(remote)
            return remote
        with otp.Node("test", cookie=COOKIE, broker=broker.address) as node:
            try:
                yield types.SimpleNamespace(broker=broker, node=node, start=start)
            finally:
                for remote in remotes:
                    remote.stop()
    leaks.check()


@pytest.fixture
def chaos():
    """``chaos(target, **options)`` starts a ChaosMonkey; every one is stopped at teardown."""
    from otp.chaos import ChaosMonkey
    monkeys = []

    def start(target: Any, **options: Any) -> ChaosMonkey:
        monkey = ChaosMonkey(target, **options).start()
        monkeys.append(monkey)
        return monkey
    yield start
    for monkey in monkeys:
        monkey.stop()


# --------------------------------------------------------------------- nodes of their own

class RemoteNode:
    """A node in a process tree of its own (under a reaping subreaper, so that a killed node's
    orphans do not linger as zombies), driven through its ``ctl`` process."""

    def __init__(self, name: str, broker: str, cookie: str = COOKIE, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "otp.pytest_plugin", "subreaper",
                                      sys.executable, "-m", "otp.pytest_plugin", "remote-node", name, broker, cookie],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path)))
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"remote node {name} did not start (exit status {self.proc.returncode})")
        info = json.loads(line)
        self.name: str = info["node"]
        self.program_os_pid: int = info["program"]
        self.agent_os_pid: int = info["agent"]

    def run(self, func: Callable, *args: Any, timeout: float = 20) -> Any:
        """Run ``func(*args)`` (an importable function) on the node; return its result."""
        tag = next(_tags)
        otp.send(("ctl", self.name), ("run", otp.self(), tag, f"{func.__module__}:{func.__qualname__}", args))
        _, status, value = otp.receive(match=lambda m: type(m) is tuple and len(m) == 3 and m[0] == tag,
                                       timeout=timeout)
        if status != "ok":
            raise RuntimeError(f"{func.__qualname__} failed on {self.name}: {value}")
        return value

    def kill(self) -> None:
        """SIGKILL the node's agent and program by OS pid; once its processes are gone, remove
        the run directory it could not."""
        from otp.local_node import remove_stale_rundirs
        for os_pid in (self.agent_os_pid, self.program_os_pid):
            try:
                os.kill(os_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        remove_stale_rundirs()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.stdout.close()
        if not self.proc.stdin.closed:
            self.proc.stdin.close()


def free_tcp_address() -> str:
    """A loopback tcp endpoint with a port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _remote_node_main(name: str, broker: str, cookie: str) -> None:
    """A node whose ``ctl`` process runs what a test sends it: ``("run", reply_to, tag,
    "module:function", args)`` answers ``(tag, "ok", result)`` or ``(tag, "error", text)``.
    It stops when its stdin closes."""
    import importlib
    import threading

    def quit_on_eof() -> None:
        sys.stdin.read()
        otp.send("ctl", ("quit",))

    with otp.Node(name, cookie=cookie, broker=broker) as node:
        otp.register("ctl", otp.self())
        threading.Thread(target=quit_on_eof, daemon=True).start()
        print(json.dumps({"node": node.name, "program": os.getpid(), "agent": node.agent_os_pid}), flush=True)
        while True:
            msg = otp.receive()
            if msg == ("quit",):
                return
            _, reply_to, tag, funcref, args = msg
            module, _, qualname = funcref.partition(":")
            try:
                func: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    func = getattr(func, part)
                otp.send(reply_to, (tag, "ok", func(*args)))
            except Exception as exc:
                otp.send(reply_to, (tag, "error", f"{type(exc).__name__}: {exc}"))


def _subreaper_main(command: list[str]) -> None:
    """Run ``command`` as the child of a subreaper that reaps every orphan below it."""
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    subprocess.Popen(command)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    if sys.argv[1] == "subreaper":
        _subreaper_main(sys.argv[2:])
    elif sys.argv[1] == "remote-node":
        _remote_node_main(*sys.argv[2:5])
