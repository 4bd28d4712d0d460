"""Helpers for the cluster tests beyond the plugin's: a broker in a process of its own, and a
network namespace whose link can be cut."""
from __future__ import annotations

import os
import subprocess
import sys

from otp.pytest_plugin import COOKIE, RemoteNode, free_tcp_address, wait_for

__all__ = ["COOKIE", "RemoteNode", "free_tcp_address", "wait_for", "BrokerProcess", "NetworkNamespace"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
