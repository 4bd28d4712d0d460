"""Resilience: calls per second to a supervised server while a chaos monkey SIGKILLs it N times
a second, the share of calls that failed (NoProc or ExitError: never a hang), and the share of
the time the server could not answer (failed calls are quick, so they outnumber the time they
cover), for N = 0, 1, 10.
"""
from __future__ import annotations

import time

import otp
from otp.chaos import ChaosMonkey
from benchmarks import procs
from benchmarks.common import REPETITIONS, emit, median

SECONDS = 3.0
RATES = (0, 1, 10)


def calls_under_chaos(rate: int) -> tuple[float, float, float]:
    spec = otp.child_spec("server", procs.Idle, name="server", shutdown="brutal_kill")
    sup = otp.Supervisor.start([spec], intensity=1000, period=1)
    monkey = ChaosMonkey(sup, rate=rate, kinds=("kill",), seed=rate).start() if rate else None
    ok = failed = 0
    down_since, down_total = None, 0.0
    start = time.monotonic()
    end = start + SECONDS
    while (now := time.monotonic()) < end:
        try:
            otp.call("server", ("ping", 1), timeout=5)
            ok += 1
            if down_since is not None:
                down_total += time.monotonic() - down_since
                down_since = None
        except (otp.NoProc, otp.ExitError):
            failed += 1
            if down_since is None:
                down_since = now
    if down_since is not None:
        down_total += time.monotonic() - down_since
    if monkey is not None:
        monkey.stop()
    otp.stop(sup, "shutdown")
    elapsed = time.monotonic() - start
    return (ok + failed) / elapsed, failed / max(1, ok + failed), down_total / elapsed


def run() -> None:
    result: dict = {"bench": "resilience", "seconds": SECONDS, "repetitions": REPETITIONS}
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for rate in RATES:
            runs = [calls_under_chaos(rate) for _ in range(REPETITIONS)]
            result[f"kills_{rate}_per_s_calls_per_s"] = median(r[0] for r in runs)
            result[f"kills_{rate}_per_s_failed_share"] = median(r[1] for r in runs)
            result[f"kills_{rate}_per_s_unavailable_share"] = median(r[2] for r in runs)
    emit(result)


if __name__ == "__main__":
    run()
