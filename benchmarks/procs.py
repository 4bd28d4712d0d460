"""Process functions the benchmarks spawn (importable, so otp can spawn them)."""
from __future__ import annotations

import time

import otp


def echo() -> None:
    while True:
        msg = otp.receive()
        if msg == "stop":
            return
        otp.send(msg[0], msg[1])


def pinger(parent: otp.Pid, echo_pid: otp.Pid, count: int) -> None:
    """Time count round trips to echo_pid; send the list of durations (seconds) to parent."""
    me = otp.self()
    msg = (me, ("ping", 1))
    for _ in range(50):  # warm the connection up
        otp.send(echo_pid, msg)
        otp.receive()
    times = []
    perf = time.perf_counter
    for _ in range(count):
        start = perf()
        otp.send(echo_pid, msg)
        otp.receive()
        times.append(perf() - start)
    otp.send(parent, ("times", times))


def counter(parent: otp.Pid, count: int) -> None:
    """Receive count messages; report the seconds from the first to the last."""
    otp.receive()
    start = time.perf_counter()
    for _ in range(count - 1):
        otp.receive()
    otp.send(parent, ("elapsed", time.perf_counter() - start))


def flooder(target: otp.Pid, count: int) -> None:
    msg = ("data", 1)
    for _ in range(count):
        otp.send(target, msg)


def send_back(parent: otp.Pid) -> None:
    otp.send(parent, "up")


def idle() -> None:
    otp.receive()


def mp_send_back(conn) -> None:
    """multiprocessing peer of send_back: report through a Pipe."""
    conn.send("up")


def mp_idle(conn) -> None:
    conn.send("up")
    conn.recv()
