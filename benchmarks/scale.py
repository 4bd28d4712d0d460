"""Scale: one supervisor with 1,000 children: time to start them all, their total USS, the
restart latency of one child while the other 999 run, and the time to stop them all.

Targets: start <= 10 s, USS <= 4 GB, one restart p50 <= 10 ms.
"""
from __future__ import annotations

import os
import signal
import time

import psutil

import otp
from benchmarks import procs
from benchmarks.common import emit, median, percentile

CHILDREN = 1000
KILLS = 50


def run() -> None:
    with otp.Node("bench", preload=["benchmarks.procs"]):
        template = otp.child_spec("idle", procs.Idle, restart="permanent", shutdown="brutal_kill")
        sup = otp.Supervisor.start([template], strategy="simple_one_for_one", intensity=10 * KILLS, period=1)
        start = time.perf_counter()
        pids = [otp.supervisor.start_child(sup, ()) for _ in range(CHILDREN)]
        start_seconds = time.perf_counter() - start
        uss = sum(psutil.Process(otp.os_pid(pid)).memory_full_info().uss for pid in pids)
        restarts = []
        children = [pid for _, pid, *_ in otp.supervisor.which_children(sup)]
        for i in range(KILLS):
            victim = children[i]
            os_pid = otp.os_pid(victim)
            t0 = time.perf_counter()
            os.kill(os_pid, signal.SIGKILL)
            while True:  # until the supervisor lists a live replacement that answers
                fresh = [pid for _, pid, *_ in otp.supervisor.which_children(sup) if isinstance(pid, otp.Pid)]
                if len(fresh) == CHILDREN and victim not in fresh:
                    new = fresh[-1]
                    otp.call(new, "ping")
                    break
            restarts.append(time.perf_counter() - t0)
            children = fresh
        start = time.perf_counter()
        otp.stop(sup, "shutdown")
        stop_seconds = time.perf_counter() - start
    emit({"bench": "scale", "children": CHILDREN, "start_all_s": start_seconds, "total_uss_mb": uss / 2**20,
          "one_restart_p50_ms": median(restarts) * 1e3, "one_restart_p99_ms": percentile(restarts, 0.99) * 1e3,
          "stop_all_s": stop_seconds, "target_start_s": 10.0, "target_uss_mb": 4096, "target_restart_p50_ms": 10.0})


if __name__ == "__main__":
    run()
