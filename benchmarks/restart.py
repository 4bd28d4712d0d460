"""Restart latency: SIGKILL a supervised GenServer to the moment its replacement answers a
call, vs a plain multiprocessing restart loop (watch the sentinel, start a new Process) as the
floor, and the leanest restart this machine allows (``benchmarks.prefork_floor``: a small
zygote hands over a spare forked ahead). Erlang's in-VM restart (about 0.03 ms here) is the
far anchor.

Targets: p50 <= 10 ms, p99 <= 30 ms.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time

import otp
from benchmarks import prefork_floor, procs
from benchmarks.common import REPETITIONS, emit, median, percentile

KILLS = 200
_fork = multiprocessing.get_context("fork")


def otp_restart_times(kills: int) -> list[float]:
    """The replacement announces itself from its init; then it must answer a call."""
    spec = otp.child_spec("target", procs.Announcer, args=(otp.self(),))
    sup = otp.Supervisor.start([spec], intensity=10 * kills, period=1)
    _, pid = otp.receive(match=lambda m: m[0] == "up", timeout=30)
    times = []
    for _ in range(kills):
        seconds, pid = time_restart(pid)
        times.append(seconds)
    otp.stop(sup, "shutdown")
    return times


def time_restart(victim: otp.Pid) -> tuple[float, otp.Pid]:
    """SIGKILL a supervised ``procs.Announcer``; return the seconds until its replacement has
    announced itself and answered a call, and the replacement."""
    os_pid = otp.os_pid(victim)
    start = time.perf_counter()
    os.kill(os_pid, signal.SIGKILL)
    _, fresh = otp.receive(match=lambda m: m[0] == "up", timeout=30)
    otp.call(fresh, ("ping", 1))
    return time.perf_counter() - start, fresh


def mp_restart_times(kills: int) -> list[float]:
    times = []
    mine, theirs = _fork.Pipe()
    proc = _fork.Process(target=procs.mp_answer, args=(theirs,))
    proc.start()
    for _ in range(kills):
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGKILL)
        multiprocessing.connection.wait([proc.sentinel])
        proc.join()
        mine, theirs = _fork.Pipe()
        proc = _fork.Process(target=procs.mp_answer, args=(theirs,))
        proc.start()
        mine.send("ping")
        mine.recv()
        times.append(time.perf_counter() - start)
    proc.kill()
    proc.join()
    return times


def run() -> None:
    ours, floor, lean = [], [], []
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for _ in range(REPETITIONS):
            ours.append(otp_restart_times(KILLS))
            floor.append(mp_restart_times(KILLS))
            lean.append(prefork_floor.restart_times(KILLS))
    emit({"bench": "restart", "kills": KILLS, "repetitions": REPETITIONS,
          "otp_p50_ms": median(percentile(t, 0.5) for t in ours) * 1e3,
          "otp_p99_ms": median(percentile(t, 0.99) for t in ours) * 1e3,
          "mp_fork_restart_p50_ms": median(percentile(t, 0.5) for t in floor) * 1e3,
          "mp_fork_restart_p99_ms": median(percentile(t, 0.99) for t in floor) * 1e3,
          "lean_prefork_restart_p50_ms": median(percentile(t, 0.5) for t in lean) * 1e3,
          "lean_prefork_restart_p99_ms": median(percentile(t, 0.99) for t in lean) * 1e3,
          "erlang_in_vm_restart_ms": 0.03, "target_p50_ms": 10.0, "target_p99_ms": 30.0})


if __name__ == "__main__":
    run()
