"""Helpers for the cluster tests: nodes in OS processes of their own, driven through ``ctl``."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from typing import Any, Callable

import otp
from otp.local_node import remove_stale_rundirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOKIE = "test-cookie"
_tags = itertools.count(1)


class RemoteNode:
    """A node running ``tests.remote_node`` in its own process tree."""

    def __init__(self, name: str, broker: str, cookie: str = COOKIE) -> None:
        # Under a reaping subreaper, so that a killed node's orphans are reaped, not left as
        # zombies of an init that does not reap.
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.subreaper",
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
