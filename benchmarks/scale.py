"""Scale: one supervisor with 1,000 children: time to start them all, their total USS, the
restart latency of one child while the other 999 run (kills back to back, and at rest as in
``benchmarks.restart``), and the time to stop them all. Medians over ``RUNS`` runs, each on a
new node; the start's figures of every run are given too.

Side by side in the same run: 1,000 ``multiprocessing`` processes (fork) started one after the
other by a fresh interpreter, each answering a ping over its Pipe before the next starts (as a
supervisor starts its children), their total USS and the time to kill them all and reap them:
a process per child with no supervision, no mailbox and no node.

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

from benchmarks.common import emit, median, percentile, start_mp_answerer

CHILDREN = 1000
KILLS = 50
RUNS = 3


def otp_run() -> dict[str, float]:
    """One run on a new node: start, USS, restarts (back to back, then at rest), stop."""
    import otp   # here, not above: the multiprocessing peer's interpreter stays small
    from benchmarks import procs
    from benchmarks.restart import REST_SECONDS, time_restart
    with otp.Node("bench", preload=["benchmarks.procs"]):
        me = otp.self()
        template = otp.child_spec("announcer", procs.Announcer, restart="permanent", shutdown="brutal_kill")
        sup = otp.Supervisor.start([template], strategy="simple_one_for_one", intensity=10 * KILLS, period=1)
        start = time.perf_counter()
        pids = [otp.supervisor.start_child(sup, (me,)) for _ in range(CHILDREN)]
        start_seconds = time.perf_counter() - start
        for _ in pids:  # each announced itself from its init
            otp.receive(match=lambda m: m[0] == "up", timeout=30)
        uss = sum(psutil.Process(otp.os_pid(pid)).memory_full_info().uss for pid in pids)
        victims = [otp.os_pid(pid) for pid in pids[:2 * KILLS]]
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
            "one_restart_at_rest_p99_ms": percentile(at_rest, 0.99) * 1e3, "stop_all_s": stop_seconds}


def mp_run() -> dict[str, float]:
    """The multiprocessing peer, in a fresh interpreter (``python -m benchmarks.scale mp``),
    whose forks copy no more than a program of its own would."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "mp"], cwd=root, capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def mp_measure() -> dict[str, float]:
    """Start 1,000 forked processes one by one, each answering a ping before the next starts;
    their USS; kill them all and wait for their ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)   # a Pipe to each child
    wanted = 4 * CHILDREN if hard == resource.RLIM_INFINITY else min(hard, 4 * CHILDREN)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    children, pipes = [], []
    try:
        start = time.perf_counter()
        for _ in range(CHILDREN):
            child, mine = start_mp_answerer()
            mine.send("ping")
            mine.recv()
            children.append(child)
            pipes.append(mine)
        start_seconds = time.perf_counter() - start
        uss = sum(psutil.Process(child.pid).memory_full_info().uss for child in children)
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
    return {"start_all_s": start_seconds, "total_uss_mb": uss / 2**20, "stop_all_s": stop_seconds}


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
    emit(dict(result, target_start_s=10.0, target_uss_mb=4096, target_restart_p50_ms=10.0))


if __name__ == "__main__":
    if sys.argv[1:] == ["mp"]:
        print(json.dumps(mp_measure()))
    else:
        run()
