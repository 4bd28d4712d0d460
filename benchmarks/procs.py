"""Process functions the benchmarks spawn (importable, so otp can spawn them)."""
from __future__ import annotations

import os
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


class CallServer(otp.GenServer):
    """Replies to ("ping", n) with the request; counts casts and reports when it has them all."""

    def init(self) -> None:
        self.casts = 0
        self.expected = None
        self.watcher = None
        self.started = 0.0

    def handle_call(self, request, caller):
        if request[0] == "expect":
            _, self.expected, self.watcher = request
            self.casts = 0
            return "ok"
        return request

    def handle_cast(self, msg):
        if self.casts == 0:
            self.started = time.perf_counter()
        self.casts += 1
        if self.casts == self.expected:
            otp.send(self.watcher, ("casts_done", time.perf_counter() - self.started))


def call_times(server, count: int) -> list[float]:
    """Time count calls (a small tuple) to server, after 50 to warm up; seconds each."""
    request = ("ping", 1)
    for _ in range(50):
        otp.call(server, request)
    times = []
    perf = time.perf_counter
    for _ in range(count):
        start = perf()
        otp.call(server, request)
        times.append(perf() - start)
    return times


def caller(parent: otp.Pid, server: otp.Pid, count: int) -> None:
    """Time count calls to server; send the durations (seconds) to parent."""
    otp.send(parent, ("times", call_times(server, count)))


def caster(server: otp.Pid, count: int) -> None:
    msg = ("data", 1)
    for _ in range(count):
        otp.cast(server, msg)


def call_loop(parent: otp.Pid, server: otp.Pid, go: otp.Ref, seconds: float) -> None:
    """Wait for the go message, then call server for seconds; report how many calls were done."""
    otp.receive(match=lambda m: m == go)
    request = ("ping", 1)
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        otp.call(server, request)
        done += 1
    otp.send(parent, ("calls", done))


class Idle(otp.GenServer):
    """A child that only answers pings."""

    def handle_call(self, request, caller):
        return request


class Announcer(otp.GenServer):
    """A child that tells a watcher each time it has started (its pid and OS pid), then
    answers pings."""

    def init(self, watcher: otp.Pid) -> None:
        otp.send(watcher, ("up", otp.self(), os.getpid()))

    def handle_call(self, request, caller):
        return request


def inc(x: int) -> int:
    return x + 1


def sleep_seconds(seconds: float) -> None:
    time.sleep(seconds)
