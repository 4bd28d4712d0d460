"""Helpers for the cluster tests: nodes in OS processes of their own, driven through ``ctl``."""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import otp
from otp.local_node import remove_stale_rundirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOKIE = "test-cookie"
_tags = itertools.count(1)


class RemoteNode:
    """A node running ``tests.remote_node`` in its own process tree."""

    def __init__(self, name: str, broker: str, cookie: str = COOKIE, prefix: tuple[str, ...] = ()) -> None:
        # Under a reaping subreaper, so that a killed node's orphans are reaped, not left as
        # zombies of an init that does not reap. ``prefix`` runs it in a network namespace.
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "tests.subreaper",
                                      sys.executable, "-m", "tests.remote_node", name, broker, cookie],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"remote node {name} did not start (exit status {self.proc.returncode})")
        info = json.loads(line)
        self.name: str = info["node"]
        self.program_os_pid: int = info["program"]
        self.agent_os_pid: int = info["agent"]

    def run(self, func: Callable, *args: Any, timeout: float = 20) -> Any:
        """Run ``func(*args)`` in the remote node's ``ctl`` process; return its result."""
        tag = next(_tags)
        otp.send(("ctl", self.name), ("run", otp.self(), tag, f"{func.__module__}:{func.__qualname__}", args))
        _, status, value = otp.receive(match=lambda m: type(m) is tuple and len(m) == 3 and m[0] == tag,
                                       timeout=timeout)
        if status != "ok":
            raise RuntimeError(f"{func.__qualname__} failed on {self.name}: {value}")
        return value

    def kill(self) -> None:
        """SIGKILL the node, its agent and its program, by OS pid; once every process of it
        is gone, remove the run directory it could not (as its next start would)."""
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


class BrokerProcess:
    """``python -m otp broker`` in a process of its own, so that a test can SIGKILL it."""

    def __init__(self, address: str, cookie: str = COOKIE, tick: float = 1.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "otp", "broker", "--bind", address,
                                      "--cookie", cookie, "--tick", str(tick)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the broker did not start: {line!r}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdout.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    """Ask ``predicate`` until it returns something true (each ask waits on real events);
    fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
    raise AssertionError(f"{what} did not happen within {timeout} s")


class NetworkNamespace:
    """A network namespace joined to this host by a veth pair, whose link can be cut: a real
    partition. Needs root and ``ip``; ``NetworkNamespace.unavailable()`` says why not."""

    def __init__(self) -> None:
        tag = os.getpid() % 10_000
        self.name = f"otp-test-{tag}"
        self.host_if, self.ns_if = f"otpv{tag}h", f"otpv{tag}n"
        self.host_ip, self.ns_ip = "10.213.77.1", "10.213.77.2"
        ip = ["ip"]
        self._run(ip + ["netns", "add", self.name])
        try:
            self._run(ip + ["link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
            self._run(ip + ["link", "set", self.ns_if, "netns", self.name])
            self._run(ip + ["addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
            self._run(ip + ["link", "set", self.host_if, "up"])
            self._run(self.exec_prefix + ("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if))
            self._run(self.exec_prefix + ("ip", "link", "set", self.ns_if, "up"))
            self._run(self.exec_prefix + ("ip", "link", "set", "lo", "up"))
        except BaseException:
            self.delete()
            raise

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    @staticmethod
    def unavailable() -> str | None:
        """None if a namespace with a veth link can be made here, else why not."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        try:
            NetworkNamespace().delete()
        except subprocess.CalledProcessError as exc:
            return f"cannot make a network namespace with a veth link here: {exc.stderr.decode().strip()}"
        return None

    def cut(self) -> None:
        self._run(["ip", "link", "set", self.host_if, "down"])

    def heal(self) -> None:
        self._run(["ip", "link", "set", self.host_if, "up"])

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    @staticmethod
    def _run(cmd) -> None:
        subprocess.run(list(cmd), check=True, capture_output=True)
