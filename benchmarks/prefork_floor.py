"""The leanest restart this machine allows, as a floor under the supervisor's restart latency.

A small Python zygote, with no otp, keeps one spare child forked ahead; the timed client
SIGKILLs the current child, the zygote reaps it and hands over the spare (a byte on a pipe),
which announces itself and answers a ping. What is left is the kernel's teardown of the killed
process, the wake-ups and a fork off the critical path: no supervisor, no node agent.

Two transports:
- ``"pipe"``: the spare talks over a socketpair it inherited: no ZeroMQ, no mailbox, no
  connection to make. The floor of any design with a process per child.
- ``"zmq"``: what otp's transport cannot do without. Each spare makes its ZeroMQ context and
  binds its mailbox (a PULL socket) while it waits; the replacement announces itself over a
  new connection to the client's mailbox, and the client pings it over a new connection to
  its mailbox, as a process's first messages to a restarted server go. The floor of a design
  with a process per child and ZeroMQ between processes.

Run in a fresh interpreter (``python -m benchmarks.prefork_floor KILLS REST_SECONDS [pipe|zmq]``
prints the times, and the CPU and wall seconds of the kills, as JSON), so the zygote is as small
as Python gets.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Callable, NoReturn

if TYPE_CHECKING:
    from benchmarks.common import CpuMeter

_PR_SET_PDEATHSIG = 1


def restart_times(kills: int, rest: float = 0.0, transport: str = "pipe") -> tuple[list[float], float | None, float]:
    """Seconds from each SIGKILL to the replacement's answer, measured in a fresh interpreter;
    ``rest`` seconds before each kill; ``transport`` ``"pipe"`` or ``"zmq"``. Also the
    machine's busy CPU seconds and the wall seconds over the kills (see ``common.CpuMeter``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "benchmarks.prefork_floor", str(kills), str(rest), transport],
                          cwd=root, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout)
    return result["times"], result["cpu"], result["wall"]


def _pipe_spare(channel: socket.socket) -> Callable[[], NoReturn]:
    """A spare of the pipe transport: nothing to set up; its service once it takes over."""
    def serve() -> NoReturn:
        channel.send(str(os.getpid()).encode())
        while True:
            ping = channel.recv(64)
            if not ping:
                os._exit(0)
            channel.send(ping)
    return serve


def _zmq_spare(rundir: str) -> Callable[[], NoReturn]:
    """A spare of the ZeroMQ transport: its context and bound mailbox made while it waits."""
    import zmq
    ctx = zmq.Context()
    mailbox = ctx.socket(zmq.PULL)
    mailbox.bind(f"ipc://{rundir}/{os.getpid()}")

    def serve() -> NoReturn:
        client = ctx.socket(zmq.PUSH)
        client.connect(f"ipc://{rundir}/client")
        client.send(str(os.getpid()).encode())
        while True:
            client.send(mailbox.recv())
    return serve


def _zygote(make_spare: Callable[[], Callable[[], NoReturn]]) -> NoReturn:
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
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(go_w)
            serve = make_spare()
            if not os.read(go_r, 1):
                os._exit(0)
            serve()
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


def _measure(kills: int, rest: float, transport: str) -> tuple[list[float], CpuMeter]:
    if transport == "zmq":
        importlib.import_module("zmq")  # before the zygote forks: each spare inherits it
    rundir = tempfile.mkdtemp(prefix="otp-floor-")
    mine, theirs = socket.socketpair()
    zygote = os.fork()
    if zygote == 0:
        mine.close()
        _zygote(functools.partial(_zmq_spare, rundir) if transport == "zmq" else functools.partial(_pipe_spare, theirs))
    theirs.close()
    try:
        if transport == "zmq":
            return _zmq_client(rundir, kills, rest)

        def ping(child: int) -> None:
            mine.send(b"ping")
            mine.recv(64)
        return _time_kills(kills, rest, lambda: int(mine.recv(64)), ping)
    finally:
        os.kill(zygote, signal.SIGTERM)
        os.waitpid(zygote, 0)
        mine.close()
        shutil.rmtree(rundir, ignore_errors=True)


def _zmq_client(rundir: str, kills: int, rest: float) -> tuple[list[float], CpuMeter]:
    import zmq
    ctx = zmq.Context()
    try:
        inbox = ctx.socket(zmq.PULL)
        inbox.bind(f"ipc://{rundir}/client")

        def ping(child: int) -> Callable[[], None]:
            server = ctx.socket(zmq.PUSH)   # a new connection, as to a restarted process
            server.connect(f"ipc://{rundir}/{child}")
            server.send(b"ping")
            inbox.recv()
            return functools.partial(server.close, linger=0)
        return _time_kills(kills, rest, lambda: int(inbox.recv()), ping)
    finally:
        ctx.destroy(linger=0)


def _time_kills(kills: int, rest: float, announced: Callable[[], int],
                ping: Callable[[int], Callable[[], None] | None]) -> tuple[list[float], CpuMeter]:
    """Kill the current child ``kills`` times, ``rest`` seconds apart; each time, the seconds
    until its replacement has announced itself (``announced`` returns its os pid) and answered
    a ping (``ping`` may return what to clean up once the time is taken). Also the CPU and
    wall time of the whole loop."""
    from benchmarks.common import CpuMeter  # here, not above: the zygote, forked first, stays small
    child = announced()
    times = []
    with CpuMeter() as meter:
        for _ in range(kills):
            time.sleep(rest)
            start = time.perf_counter()
            os.kill(child, signal.SIGKILL)
            child = announced()
            cleanup = ping(child)
            times.append(time.perf_counter() - start)
            if cleanup is not None:
                cleanup()
    return times, meter


if __name__ == "__main__":
    times, meter = _measure(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "pipe")
    print(json.dumps({"times": times, "cpu": meter.cpu, "wall": meter.wall}))
