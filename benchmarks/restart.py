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

At rest, the first part of a restart is measured alone too: from the SIGKILL to the kernel's
word that the process is dead (its pidfd readable), which nothing can hear sooner. It is the
kernel tearing the killed process down (its memory, its threads, its sockets), for otp's child
and for multiprocessing's.

Back to back, each variant's CPU per restart is reported too (the machine's busy CPU over the
kills, every process and the kernel included), and for otp the cores it kept busy: where that
nears the core count, the restarts wait on CPU, and CPU per restart over the cores bounds the
mean restart time from below.
"""
from __future__ import annotations

import functools
import os
import select
import signal
import time

import otp
from benchmarks import prefork_floor, procs
from benchmarks.common import (REPETITIONS, REST_SECONDS, CpuMeter, emit, median, percentile, restart_mp_answerer,
                               start_mp_answerer)

KILLS = 200
TEARDOWN_KILLS = 50


def otp_restart_times(kills: int, rest: float = 0.0) -> tuple[list[float], float | None, float]:
    """The replacement announces itself from its init; then it must answer a call. Also the
    machine's busy CPU seconds and the wall seconds over the kills."""
    sup, os_pid = supervised_announcer(kills)
    times = []
    with CpuMeter() as meter:
        for _ in range(kills):
            time.sleep(rest)
            seconds, os_pid = time_restart(os_pid)
            times.append(seconds)
    otp.stop(sup, "shutdown")
    return times, meter.cpu, meter.wall


def supervised_announcer(kills: int) -> tuple[otp.Pid, int]:
    """A supervisor of one ``procs.Announcer`` (announcing itself to the caller) that allows
    ``kills`` restarts; its pid, and the OS pid of the child once it has announced itself."""
    spec = otp.child_spec("target", procs.Announcer, args=(otp.self(),))
    sup = otp.Supervisor.start([spec], intensity=10 * kills, period=1)
    return sup, announced()[1]


def announced() -> tuple[otp.Pid, int]:
    """The pid and OS pid that the next ``procs.Announcer`` to start announces from its init."""
    _, pid, os_pid = otp.receive(match=lambda m: m[0] == "up", timeout=30)
    return pid, os_pid


def time_restart(victim_os_pid: int) -> tuple[float, int]:
    """SIGKILL a supervised ``procs.Announcer`` by its OS pid; return the seconds until its
    replacement has announced itself and answered a call, and the replacement's OS pid (which
    it announces, so that the loop asks the node nothing between kills)."""
    start = time.perf_counter()
    os.kill(victim_os_pid, signal.SIGKILL)
    fresh, fresh_os_pid = announced()
    otp.call(fresh, ("ping", 1))
    return time.perf_counter() - start, fresh_os_pid


def otp_teardown_times(kills: int) -> list[float]:
    """Seconds from the SIGKILL of a supervised ``procs.Announcer`` to its pidfd's readiness,
    kills ``REST_SECONDS`` apart, each once its replacement has announced itself."""
    sup, os_pid = supervised_announcer(kills)
    times = []
    for _ in range(kills):
        time.sleep(REST_SECONDS)
        times.append(time_death(os_pid))
        os_pid = announced()[1]
    otp.stop(sup, "shutdown")
    return times


def mp_teardown_times(kills: int) -> list[float]:
    """The same for the child of the multiprocessing restart loop, once it has answered."""
    times = []
    for _ in range(kills):
        proc, conn = start_mp_answerer()
        time.sleep(REST_SECONDS)
        times.append(time_death(proc.pid))
        proc.join()
        conn.close()
    return times


def time_death(os_pid: int) -> float:
    """SIGKILL ``os_pid``; the seconds until the kernel says it has died (its pidfd readable)."""
    pidfd = os.pidfd_open(os_pid)
    try:
        start = time.perf_counter()
        os.kill(os_pid, signal.SIGKILL)
        select.select([pidfd], [], [])
        return time.perf_counter() - start
    finally:
        os.close(pidfd)


def mp_restart_times(kills: int, rest: float = 0.0) -> tuple[list[float], float | None, float]:
    times = []
    proc, conn = start_mp_answerer()
    with CpuMeter() as meter:
        for _ in range(kills):
            time.sleep(rest)
            seconds, proc, conn = restart_mp_answerer(proc, conn)
            times.append(seconds)
    proc.kill()
    proc.join()
    conn.close()
    return times, meter.cpu, meter.wall


def run() -> None:
    runs: dict[str, list[list[float]]] = {}
    cpu_per_restart: dict[str, list[float]] = {}   # back to back only: at rest, idle time counts too
    cores_busy: list[float] = []
    deaths: dict[str, list[float]] = {}
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for _ in range(REPETITIONS):
            if hasattr(os, "pidfd_open"):  # Linux 5.3
                deaths.setdefault("otp", []).append(percentile(otp_teardown_times(TEARDOWN_KILLS), 0.5))
                deaths.setdefault("mp_fork_restart", []).append(percentile(mp_teardown_times(TEARDOWN_KILLS), 0.5))
            for rest, suffix in ((0.0, ""), (REST_SECONDS, "_at_rest")):
                for name, measure in (("otp", otp_restart_times), ("mp_fork_restart", mp_restart_times),
                                      ("lean_prefork_restart", prefork_floor.restart_times),
                                      ("zmq_prefork_restart", functools.partial(prefork_floor.restart_times,
                                                                                transport="zmq"))):
                    times, cpu, wall = measure(KILLS, rest)
                    runs.setdefault(name + suffix, []).append(times)
                    if not rest and cpu is not None:
                        cpu_per_restart.setdefault(name, []).append(cpu / KILLS)
                        if name == "otp":
                            cores_busy.append(cpu / wall)
    result = {"bench": "restart", "kills": KILLS, "repetitions": REPETITIONS, "rest_ms": REST_SECONDS * 1e3}
    for name, times in runs.items():
        result[f"{name}_p50_ms"] = median(percentile(t, 0.5) for t in times) * 1e3
        result[f"{name}_p99_ms"] = median(percentile(t, 0.99) for t in times) * 1e3
    for name, cpus in cpu_per_restart.items():
        result[f"{name}_cpu_ms_per_restart"] = median(cpus) * 1e3
    if cores_busy:
        result["otp_cores_busy"] = median(cores_busy)
    for name, p50s in deaths.items():
        result[f"{name}_kill_to_death_p50_ms"] = median(p50s) * 1e3
    result["otp_vs_mp_p50"] = result["otp_p50_ms"] / result["mp_fork_restart_p50_ms"]
    result["otp_vs_mp_at_rest_p50"] = result["otp_at_rest_p50_ms"] / result["mp_fork_restart_at_rest_p50_ms"]
    result["otp_vs_zmq_floor_p50"] = result["otp_p50_ms"] / result["zmq_prefork_restart_p50_ms"]
    result["otp_vs_zmq_floor_at_rest_p50"] = result["otp_at_rest_p50_ms"] / result["zmq_prefork_restart_at_rest_p50_ms"]
    emit(dict(result, erlang_in_vm_restart_ms=0.03, target_p50_ms=10.0, target_p99_ms=30.0))


if __name__ == "__main__":
    run()
