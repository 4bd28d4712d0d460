"""Scale: one supervisor with 1,000 children: time to start them all, their total USS, the
restart latency of one child while the other 999 run (kills back to back, and at rest as in
``benchmarks.restart``), and the time to stop them all.

Targets: start <= 10 s, USS <= 4 GB, one restart p50 <= 10 ms.
"""
from __future__ import annotations

import time

import psutil

import otp
from benchmarks import procs
from benchmarks.common import emit, median, percentile
from benchmarks.restart import REST_SECONDS, time_restart

CHILDREN = 1000
KILLS = 50


def run() -> None:
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
    emit({"bench": "scale", "children": CHILDREN, "start_all_s": start_seconds, "total_uss_mb": uss / 2**20,
          "one_restart_p50_ms": median(restarts) * 1e3, "one_restart_p99_ms": percentile(restarts, 0.99) * 1e3,
          "one_restart_at_rest_p50_ms": median(at_rest) * 1e3,
          "one_restart_at_rest_p99_ms": percentile(at_rest, 0.99) * 1e3,
          "stop_all_s": stop_seconds, "target_start_s": 10.0, "target_uss_mb": 4096, "target_restart_p50_ms": 10.0})


if __name__ == "__main__":
    run()
