"""Scale: one supervisor with 1,000 children: time to start them all, their total USS, the
restart latency of one child while the other 999 run (kills back to back, and at rest as in
``benchmarks.restart``), and the time to stop them all. Medians over ``RUNS`` runs, each on a
new node; the start's figures of every run are given too.

Side by side in the same run: 1,000 ``multiprocessing`` processes (fork) started one after the
other by a fresh interpreter, each answering a ping over its Pipe before the next starts (as a
supervisor starts its children), their total USS, the restart loop of ``benchmarks.restart``
run on one of them at a time while the other 999 run, and the time to kill them all and reap
them: a process per child with no supervision, no mailbox and no node.

multiprocessing's ``Process.start`` polls every process it has started and not yet joined
(``multiprocessing.process._cleanup``): with 1,000 children that is 4-5 ms of each of its
restarts here, which a program restarting its own processes with multiprocessing pays too.

Back to back, the CPU per restart is given for both (the machine's busy CPU over the kills, as
in ``benchmarks.restart``): next to the figure with one child, it shows what the 999 others
cost each restart, whichever process or kernel thread spends it.

Targets: start <= 10 s, USS <= 4 GB, one restart p50 <= 10 ms.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import psutil

from benchmarks.common import (REST_SECONDS, CpuMeter, emit, median, percentile, restart_mp_answerer,
                               start_mp_answerer)

CHILDREN = 1000
KILLS = 50
RUNS = 3


def otp_run() -> dict[str, float]:
    """One run on a new node: start, USS, restarts (back to back, then at rest), stop."""
    import otp   # here, not above: the multiprocessing peer's interpreter stays small
    from benchmarks import procs
    from benchmarks.restart import announced, time_restart
    with otp.Node("bench", preload=["benchmarks.procs"]):
        me = otp.self()
        template = otp.child_spec("announcer", procs.Announcer, restart="permanent", shutdown="brutal_kill")
        sup = otp.Supervisor.start([template], strategy="simple_one_for_one", intensity=10 * KILLS, period=1)
        start = time.perf_counter()
        pids = [otp.supervisor.start_child(sup, (me,)) for _ in range(CHILDREN)]
        start_seconds = time.perf_counter() - start
        for _ in pids:  # each announced itself from its init
            announced()
        uss = sum(psutil.Process(otp.os_pid(pid)).memory_full_info().uss for pid in pids)
        victims = [otp.os_pid(pid) for pid in pids[:2 * KILLS]]
        with CpuMeter() as meter:
            restarts = [time_restart(victim)[0] for victim in victims[:KILLS]]
        at_rest = []
        for victim in victims[KILLS:]:
            time.sleep(REST_SECONDS)
            at_rest.append(time_restart(victim)[0])
        start = time.perf_counter()
        otp.stop(sup, "shutdown")
        stop_seconds = time.perf_counter() - start
    return {"start_all_s": start_seconds, "total_uss_mb": uss / 2**20,
            "one_restart_p50_ms": median(restarts) * 1e3, "one_restart_p99_ms": percentile(restarts, 0.99) * 1e3,
            "one_restart_at_rest_p50_ms": median(at_rest) * 1e3,
            "one_restart_at_rest_p99_ms": percentile(at_rest, 0.99) * 1e3, "stop_all_s": stop_seconds,
            **cpu_per_restart(meter)}


def cpu_per_restart(meter: CpuMeter) -> dict[str, float]:
    """The CPU milliseconds per restart of the ``KILLS`` timed back to back, where readable."""
    return {} if meter.cpu is None else {"one_restart_cpu_ms": meter.cpu / KILLS * 1e3}


def mp_run() -> dict[str, float]:
    """The multiprocessing peer, in a fresh interpreter (``python -m benchmarks.scale mp``),
    whose forks copy no more than a program of its own would."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "mp"], cwd=root, capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def mp_measure() -> dict[str, float]:
    """Start 1,000 forked processes one by one, each answering a ping before the next starts;
    their USS; restart one at a time (back to back, then at rest); kill them all and wait for
    their ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)   # a Pipe to each child
    wanted = 4 * CHILDREN if hard == resource.RLIM_INFINITY else min(hard, 4 * CHILDREN)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    children, pipes = [], []
    try:
        start = time.perf_counter()
        for _ in range(CHILDREN):
            child, mine = start_mp_answerer()
            children.append(child)
            pipes.append(mine)
        start_seconds = time.perf_counter() - start
        uss = sum(psutil.Process(child.pid).memory_full_info().uss for child in children)
        restarts, at_rest = [], []
        with CpuMeter() as meter:
            for i in range(KILLS):
                seconds, children[i], pipes[i] = restart_mp_answerer(children[i], pipes[i])
                restarts.append(seconds)
        for i in range(KILLS, 2 * KILLS):
            time.sleep(REST_SECONDS)
            seconds, children[i], pipes[i] = restart_mp_answerer(children[i], pipes[i])
            at_rest.append(seconds)
        start = time.perf_counter()
        for child in children:
            child.kill()
        for child in children:
            child.join()
        stop_seconds = time.perf_counter() - start
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        for pipe in pipes:
            pipe.close()
    return {"start_all_s": start_seconds, "total_uss_mb": uss / 2**20,
            "one_restart_p50_ms": median(restarts) * 1e3, "one_restart_at_rest_p50_ms": median(at_rest) * 1e3,
            "stop_all_s": stop_seconds, **cpu_per_restart(meter)}


def run() -> None:
    otp_runs, mp_runs = [], []
    for _ in range(RUNS):
        otp_runs.append(otp_run())
        mp_runs.append(mp_run())
    result: dict = {"bench": "scale", "children": CHILDREN, "runs": RUNS}
    for key in otp_runs[0]:
        result[key] = median(r[key] for r in otp_runs)
    result["start_all_s_each_run"] = [round(r["start_all_s"], 2) for r in otp_runs]
    for key in mp_runs[0]:
        result[f"mp_{key}"] = median(r[key] for r in mp_runs)
    result["otp_vs_mp_start"] = result["start_all_s"] / result["mp_start_all_s"]
    result["otp_vs_mp_uss"] = result["total_uss_mb"] / result["mp_total_uss_mb"]
    result["otp_vs_mp_one_restart_p50"] = result["one_restart_p50_ms"] / result["mp_one_restart_p50_ms"]
    result["otp_vs_mp_one_restart_at_rest_p50"] = (result["one_restart_at_rest_p50_ms"]
                                                   / result["mp_one_restart_at_rest_p50_ms"])
    emit(dict(result, target_start_s=10.0, target_uss_mb=4096, target_restart_p50_ms=10.0))


if __name__ == "__main__":
    if sys.argv[1:] == ["mp"]:
        print(json.dumps(mp_measure()))
    else:
        run()
