"""The leanest restart this machine allows, as a floor under the supervisor's restart latency.

A small Python zygote, with no ZeroMQ and no otp, keeps one spare child forked ahead; the
timed client SIGKILLs the current child, the zygote reaps it and hands over the spare (a
byte on a pipe), which announces itself and answers a ping over a socketpair it inherited.
What is left is the kernel's teardown of the killed process, the wake-ups and a fork off the
critical path: no supervisor, no node agent, no mailbox, no connection to make.

Run in a fresh interpreter (``python -m benchmarks.prefork_floor KILLS REST_SECONDS`` prints the
times as a JSON list), so the zygote is as small as Python gets.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1


def restart_times(kills: int, rest: float = 0.0) -> list[float]:
    """Seconds from each SIGKILL to the replacement's answer, measured in a fresh interpreter;
    ``rest`` seconds before each kill."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "benchmarks.prefork_floor", str(kills), str(rest)],
                          cwd=root, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout)


def _zygote(channel: socket.socket) -> None:
    """Keep a current child and a spare; when the current one dies, the spare takes over."""
    libc = ctypes.CDLL(None)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    def fork_spare() -> tuple[int, int]:
        go_r, go_w = os.pipe()
        os_pid = os.fork()
        if os_pid == 0:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.close(go_w)
            if not os.read(go_r, 1):
                os._exit(0)
            channel.send(str(os.getpid()).encode())
            while True:
                ping = channel.recv(64)
                if not ping:
                    os._exit(0)
                channel.send(ping)
        os.close(go_r)
        return os_pid, go_w

    def take_over(spare: tuple[int, int]) -> int:
        os_pid, go_w = spare
        os.write(go_w, b"x")
        os.close(go_w)
        return os_pid

    current = take_over(fork_spare())
    spare = fork_spare()
    while not stopping:
        try:
            select.select([wake_r], [], [])
        except InterruptedError:
            continue
        os.read(wake_r, 4096)
        while True:
            try:
                os_pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if os_pid == 0:
                break
            if os_pid == current and not stopping:
                current = take_over(spare)
                spare = fork_spare()
    for os_pid in (current, spare[0]):
        try:
            os.kill(os_pid, signal.SIGKILL)
            os.waitpid(os_pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    os._exit(0)


def _measure(kills: int, rest: float) -> list[float]:
    mine, theirs = socket.socketpair()
    zygote = os.fork()
    if zygote == 0:
        mine.close()
        _zygote(theirs)
    theirs.close()
    try:
        child = int(mine.recv(64))
        times = []
        for _ in range(kills):
            time.sleep(rest)
            start = time.perf_counter()
            os.kill(child, signal.SIGKILL)
            child = int(mine.recv(64))
            mine.send(b"ping")
            mine.recv(64)
            times.append(time.perf_counter() - start)
        return times
    finally:
        os.kill(zygote, signal.SIGTERM)
        os.waitpid(zygote, 0)
        mine.close()


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]), float(sys.argv[2]))))
