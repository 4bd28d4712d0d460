"""Helpers shared by the benchmarks: statistics, JSON lines, peer processes."""
from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import statistics
import sys
import time
from typing import Any, Iterable

REPETITIONS = int(os.environ.get("BENCH_REPETITIONS", "5"))
REST_SECONDS = 0.03
"""The pause before each kill when restarts are timed at rest: the next restart comes once the
last one's background work is done, as restarts come when they are rare enough for a
supervisor's intensity to allow them."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def busy_cpu_seconds() -> float | None:
    """CPU seconds this machine has spent busy (user, system and interrupts, over all cores)
    since boot; None where ``/proc/stat`` is missing. The difference over a loop is the CPU
    the loop cost, whichever processes and kernel threads spent it."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """The machine's busy CPU seconds and the wall seconds over a ``with`` block::

        with CpuMeter() as meter:
            loop()
        meter.cpu, meter.wall    # cpu is None where it cannot be read
    """

    def __enter__(self) -> "CpuMeter":
        self.cpu: float | None = None
        self.wall = 0.0
        self._cpu0 = busy_cpu_seconds()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._wall0
        cpu1 = busy_cpu_seconds()
        if self._cpu0 is not None and cpu1 is not None:
            self.cpu = cpu1 - self._cpu0


def machine() -> dict[str, Any]:
    """What the figures were measured on: the CPU model, its cores, the memory, the kernel and
    Python. Timings from two machines differ by more than any change they would be read for,
    so each result carries its machine::

        {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 23.4, "kernel": "6.1.0", "python": "3.11.7"}
    """
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory_gib: float | None = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib,
            "kernel": platform.release(), "python": platform.python_version()}


def emit(result: dict[str, Any]) -> None:
    """Print one result as a JSON line, numbers rounded for reading, with the machine it was
    measured on (``machine()``)."""
    rounded = {k: (round(v, 3) if isinstance(v, float) else v)
               for k, v in dict(result, machine=machine()).items()}
    print(json.dumps(rounded), flush=True)
    sys.stdout.flush()


def mp_answer(conn: Any) -> None:
    """A multiprocessing peer's child: answer every ping on its Pipe (here, with no otp
    import, so that a peer run in a fresh interpreter stays a plain multiprocessing program)."""
    while True:
        conn.send(conn.recv())


def start_mp_answerer() -> tuple[multiprocessing.Process, multiprocessing.connection.Connection]:
    """A forked multiprocessing child running ``mp_answer``, once it has answered a ping, and
    this end of its Pipe."""
    fork = multiprocessing.get_context("fork")
    mine, theirs = fork.Pipe()
    proc = fork.Process(target=mp_answer, args=(theirs,))
    proc.start()
    theirs.close()   # the child's end, which the child holds now
    mine.send("ping")
    mine.recv()
    return proc, mine


def restart_mp_answerer(proc: multiprocessing.Process, conn: multiprocessing.connection.Connection
                        ) -> tuple[float, multiprocessing.Process, multiprocessing.connection.Connection]:
    """One restart of a multiprocessing restart loop: SIGKILL ``proc``, wait on its sentinel,
    start a new answerer (until it has answered a ping). The seconds that took, and the new
    answerer with this end of its Pipe."""
    start = time.perf_counter()
    os.kill(proc.pid, signal.SIGKILL)
    multiprocessing.connection.wait([proc.sentinel])
    proc.join()
    conn.close()
    proc, conn = start_mp_answerer()
    return time.perf_counter() - start, proc, conn
