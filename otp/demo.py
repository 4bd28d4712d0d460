"""``python -m otp demo``: linked OS processes, one SIGKILLed, its exit signal and Down shown."""
from __future__ import annotations

import os
import signal
import time

import otp


def ticker(parent: otp.Pid, name: str) -> None:
    """A worker that answers pings until it is told to stop."""
    while True:
        msg = otp.receive()
        if msg == "stop":
            return
        otp.send(parent, ("pong", name, os.getpid()))


def main() -> int:
    say = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731
    with otp.Node("demo") as node:
        me = otp.self()
        say(f"node {node.name} up; this program is process {me!r} (OS pid {os.getpid()})")
        otp.trap_exit(True)
        workers = {name: otp.spawn_link(ticker, me, name) for name in ("alpha", "beta")}
        refs = {name: otp.monitor(pid) for name, pid in workers.items()}
        for name, pid in workers.items():
            otp.send(pid, "ping")
            _, who, os_pid = otp.receive(match=lambda m: m[:2] == ("pong", name), timeout=10)
            say(f"spawned {who} as {pid!r}, linked and monitored, in OS process {os_pid}")
        victim = otp.os_pid(workers["alpha"])
        say(f"kill -9 {victim}  (alpha)")
        os.kill(victim, signal.SIGKILL)
        exit_msg = otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == workers["alpha"], timeout=10)
        say(f"exit signal trapped: {exit_msg}")
        down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == refs["alpha"], timeout=10)
        say(f"monitor fired:       {down}")
        otp.send(workers["beta"], "ping")
        _, who, os_pid = otp.receive(match=lambda m: m[:2] == ("pong", "beta"), timeout=10)
        say(f"{who} is untouched: still answering from OS process {os_pid}")
        otp.send(workers["beta"], "stop")
        exit_msg = otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == workers["beta"], timeout=10)
        say(f"beta stopped on request: {exit_msg}")
        rundir = node.rundir
    say(f"node stopped; run directory removed: {not os.path.exists(rundir)}")
    return 0
