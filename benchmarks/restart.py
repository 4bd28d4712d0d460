"""Restart latency: SIGKILL a supervised GenServer to the moment its replacement answers a
call, vs a plain multiprocessing restart loop (watch the sentinel, start a new Process) as the
floor, and the leanest restarts this machine allows (``benchmarks.prefork_floor``: a small
zygote hands over a spare forked ahead, which talks over a pipe, or over ZeroMQ as otp's
processes do). Erlang's in-VM restart (about 0.03 ms here) is the far anchor.

Targets: p50 <= 10 ms, p99 <= 30 ms.

Each is measured twice: kills back to back (the next kill as soon as the replacement has
answered: a restart storm, where each restart also pays for the background work of the one
before, such as the zygote's next warm process, and the supervisor, never idle, keeps no spare),
and at rest (kills ``REST_SECONDS`` apart, as restarts come when they are rare enough for a
supervisor's intensity to allow them).
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
REST_SECONDS = 0.03
_fork = multiprocessing.get_context("fork")


def otp_restart_times(kills: int, rest: float = 0.0) -> list[float]:
    """The replacement announces itself from its init; then it must answer a call."""
    spec = otp.child_spec("target", procs.Announcer, args=(otp.self(),))
    sup = otp.Supervisor.start([spec], intensity=10 * kills, period=1)
    _, pid = otp.receive(match=lambda m: m[0] == "up", timeout=30)
    times = []
    for _ in range(kills):
        time.sleep(rest)
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


def mp_restart_times(kills: int, rest: float = 0.0) -> list[float]:
    times = []
    mine, theirs = _fork.Pipe()
    proc = _fork.Process(target=procs.mp_answer, args=(theirs,))
    proc.start()
    for _ in range(kills):
        time.sleep(rest)
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
    runs: dict[str, list[list[float]]] = {}
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for _ in range(REPETITIONS):
            for rest, suffix in ((0.0, ""), (REST_SECONDS, "_at_rest")):
                runs.setdefault("otp" + suffix, []).append(otp_restart_times(KILLS, rest))
                runs.setdefault("mp_fork_restart" + suffix, []).append(mp_restart_times(KILLS, rest))
                lean = prefork_floor.restart_times(KILLS, rest)
                runs.setdefault("lean_prefork_restart" + suffix, []).append(lean)
                lean_zmq = prefork_floor.restart_times(KILLS, rest, "zmq")
                runs.setdefault("zmq_prefork_restart" + suffix, []).append(lean_zmq)
    result = {"bench": "restart", "kills": KILLS, "repetitions": REPETITIONS, "rest_ms": REST_SECONDS * 1e3}
    for name, times in runs.items():
        result[f"{name}_p50_ms"] = median(percentile(t, 0.5) for t in times) * 1e3
        result[f"{name}_p99_ms"] = median(percentile(t, 0.99) for t in times) * 1e3
    result["otp_vs_mp_p50"] = result["otp_p50_ms"] / result["mp_fork_restart_p50_ms"]
    result["otp_vs_mp_at_rest_p50"] = result["otp_at_rest_p50_ms"] / result["mp_fork_restart_at_rest_p50_ms"]
    result["otp_vs_zmq_floor_p50"] = result["otp_p50_ms"] / result["zmq_prefork_restart_p50_ms"]
    result["otp_vs_zmq_floor_at_rest_p50"] = result["otp_at_rest_p50_ms"] / result["zmq_prefork_restart_at_rest_p50_ms"]
    emit(dict(result, erlang_in_vm_restart_ms=0.03, target_p50_ms=10.0, target_p99_ms=30.0))


if __name__ == "__main__":
    run()
