"""The job runner against concurrent.futures.ProcessPoolExecutor, loky and pebble, 2 workers:
tiny tasks with submit and with map(chunksize=256), and recovery from a worker's SIGKILL.

Targets: submit >= 2x pebble; map >= 1x ProcessPoolExecutor (same chunksize); recovery (kill
to the next job done) <= pebble's. Peers missing from this machine are reported as skipped
(``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import otp
from benchmarks import procs
from benchmarks.common import REPETITIONS, emit, median

TASKS = 20_000
CHUNKSIZE = 256
WORKERS = 2


def _submit_rate(executor) -> float:
    start = time.perf_counter()
    futures = [executor.submit(procs.inc, i) for i in range(TASKS)]
    for future in futures:
        future.result()
    return TASKS / (time.perf_counter() - start)


def _map_rate(executor) -> float:
    start = time.perf_counter()
    for _ in executor.map(procs.inc, range(TASKS), chunksize=CHUNKSIZE):
        pass
    return TASKS / (time.perf_counter() - start)


def _pebble_submit_rate(pool) -> float:
    start = time.perf_counter()
    futures = [pool.schedule(procs.inc, args=(i,)) for i in range(TASKS)]
    for future in futures:
        future.result()
    return TASKS / (time.perf_counter() - start)


def _pebble_map_rate(pool) -> float:
    start = time.perf_counter()
    for _ in pool.map(procs.inc, range(TASKS), chunksize=CHUNKSIZE).result():
        pass
    return TASKS / (time.perf_counter() - start)


def _recovery(submit, worker_pids) -> float:
    """Seconds from SIGKILLing a worker (while it runs a job) to the next job's result."""
    submit(procs.inc, 0).result()
    blocker = submit(procs.sleep_seconds, 0.5)
    time.sleep(0.1)
    os.kill(worker_pids()[0], signal.SIGKILL)
    start = time.perf_counter()
    try:
        blocker.result()
    except Exception:
        pass
    for _ in range(10):   # the next job done, on whichever worker
        try:
            submit(procs.inc, 1).result()
            break
        except Exception:
            continue
    return time.perf_counter() - start


def _peers() -> dict:
    peers: dict = {"ProcessPoolExecutor": lambda: concurrent.futures.ProcessPoolExecutor(WORKERS)}
    try:
        import loky
        peers["loky"] = lambda: loky.get_reusable_executor(max_workers=WORKERS, reuse=False)
    except ImportError:
        pass
    return peers


def run() -> None:
    rates: dict[str, dict[str, list]] = {}
    recovery: dict[str, list] = {"otp": [], "pebble": []}

    def record(name: str, kind: str, value: float) -> None:
        rates.setdefault(name, {}).setdefault(kind, []).append(value)

    try:
        import pebble
    except ImportError:
        pebble = None
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for _ in range(REPETITIONS):
            with otp.jobs.JobRunner(workers=WORKERS) as runner:
                record("otp", "submit", _submit_rate(runner))
                record("otp", "map", _map_rate(runner))
                recovery["otp"].append(_recovery(runner.submit, runner.worker_os_pids))
            for name, make in _peers().items():
                executor = make()
                record(name, "submit", _submit_rate(executor))
                record(name, "map", _map_rate(executor))
                executor.shutdown()
            if pebble is not None:
                with pebble.ProcessPool(max_workers=WORKERS) as pool:
                    record("pebble", "submit", _pebble_submit_rate(pool))
                    record("pebble", "map", _pebble_map_rate(pool))
                    recovery["pebble"].append(_recovery(
                        lambda f, *a: pool.schedule(f, args=a),
                        lambda: [p.pid for p in pool._pool_manager.worker_manager.workers.values()]))
    result = {"bench": "jobs", "tasks": TASKS, "workers": WORKERS, "chunksize": CHUNKSIZE, "repetitions": REPETITIONS}
    for name, kinds in rates.items():
        for kind, values in kinds.items():
            result[f"{name}_{kind}_per_s"] = median(values)
    if "pebble" in rates:
        result["submit_vs_pebble"] = median(rates["otp"]["submit"]) / median(rates["pebble"]["submit"])
        result["recovery_otp_ms"] = median(recovery["otp"]) * 1e3
        result["recovery_pebble_ms"] = median(recovery["pebble"]) * 1e3
    else:
        result["pebble"] = "skipped: not installed"
    result["map_vs_process_pool"] = median(rates["otp"]["map"]) / median(rates["ProcessPoolExecutor"]["map"])
    result.update({"target_submit_vs_pebble_min": 2.0, "target_map_vs_process_pool_min": 1.0})
    emit(result)


if __name__ == "__main__":
    run()
