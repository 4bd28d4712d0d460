"""Spawn: time from spawn to a first message back (p50/p99) and the USS of an idle process,
vs multiprocessing's fork, forkserver and spawn start methods.

Targets: p50 <= 5 ms; idle USS <= 4 MB.
"""
from __future__ import annotations

import multiprocessing
import time

import psutil

import otp
from benchmarks import procs
from benchmarks.common import REPETITIONS, emit, median, percentile

SPAWNS = {"otp": 200, "fork": 100, "forkserver": 100, "spawn": 10}
IDLE = 5


def otp_spawn_times(count: int) -> list[float]:
    """Each spawn timed alone: the next starts once the previous process is gone, as with the
    multiprocessing peers, whose ``join`` waits for the exit."""
    me, times = otp.self(), []
    for _ in range(count):
        start = time.perf_counter()
        _, ref = otp.spawn_monitor(procs.send_back, me)
        otp.receive(match=lambda m: m == "up", timeout=30)
        times.append(time.perf_counter() - start)
        otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=30)
    return times


def otp_idle_uss() -> float:
    pids = [otp.spawn(procs.idle) for _ in range(IDLE)]
    refs = [otp.monitor(pid) for pid in pids]
    uss = median(psutil.Process(otp.os_pid(pid)).memory_full_info().uss for pid in pids)
    for pid in pids:
        otp.exit(pid, "kill")
    for ref in refs:
        otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=30)
    return uss


def mp_spawn_times(method: str, count: int) -> list[float]:
    ctx = multiprocessing.get_context(method)
    times = []
    for _ in range(count):
        receiver, sender = ctx.Pipe(duplex=False)
        start = time.perf_counter()
        proc = ctx.Process(target=procs.mp_send_back, args=(sender,))
        proc.start()
        receiver.recv()
        times.append(time.perf_counter() - start)
        proc.join()
    return times


def mp_idle_uss(method: str) -> float:
    ctx = multiprocessing.get_context(method)
    workers = []
    for _ in range(IDLE):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=procs.mp_idle, args=(theirs,))
        proc.start()
        mine.recv()
        workers.append((proc, mine))
    uss = median(psutil.Process(proc.pid).memory_full_info().uss for proc, _ in workers)
    for proc, conn in workers:
        conn.send("stop")
        proc.join()
    return uss


def run() -> None:
    times: dict[str, list[list[float]]] = {name: [] for name in SPAWNS}
    uss: dict[str, list[float]] = {name: [] for name in SPAWNS}
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for _ in range(REPETITIONS):
            times["otp"].append(otp_spawn_times(SPAWNS["otp"]))
            uss["otp"].append(otp_idle_uss())
            for method in ("fork", "forkserver", "spawn"):
                times[method].append(mp_spawn_times(method, SPAWNS[method]))
                uss[method].append(mp_idle_uss(method))
    result = {"bench": "spawn", "repetitions": REPETITIONS}
    for name in SPAWNS:
        key = name if name == "otp" else f"mp_{name}"
        result[f"{key}_p50_ms"] = median(percentile(t, 0.5) for t in times[name]) * 1e3
        result[f"{key}_p99_ms"] = median(percentile(t, 0.99) for t in times[name]) * 1e3
        result[f"{key}_idle_uss_mb"] = median(uss[name]) / 2**20
    result.update(target_p50_ms=5.0, target_idle_uss_mb=4.0,
                  p50_ratio_vs_mp_forkserver=result["otp_p50_ms"] / result["mp_forkserver_p50_ms"],
                  uss_ratio_vs_mp_forkserver=result["otp_idle_uss_mb"] / result["mp_forkserver_idle_uss_mb"])
    emit(result)


if __name__ == "__main__":
    run()
