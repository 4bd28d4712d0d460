"""A chaos monkey: kills, segfaults or freezes processes of a supervision tree or a node, at a
steady rate, and records each injection with what restarted the victim and how fast.

    monkey = otp.chaos.ChaosMonkey(app_sup, rate=5, kinds=("kill", "segv"), seed=1).start()
    ...                                    # run the load under test
    for injection in monkey.stop():
        print(injection)                   # {"time": 0.2, "kind": "kill", "pid": ..., "restart_ms": 9.1, ...}

``target`` is a supervisor's pid (every process below it, supervisors included) or a node name
(every process of that node but the threads of its program). Choices come from ``seed``: the
same seed on the same tree gives the same sequence of (victim position, kind). ``"stop"``
freezes the victim with SIGSTOP for ``stop_seconds``, then lets it go on. Signals are sent only
after checking that the OS process is the one the node knows (its start time), so a monkey
never hits a reused pid or a process of another host; there it falls back to
``otp.exit(pid, "kill")``.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

import otp
from otp import supervisor
from otp.runtime import current

KINDS = {"kill": signal.SIGKILL, "segv": signal.SIGSEGV, "stop": signal.SIGSTOP}


class ChaosMonkey:
    """See the module doc; ``run()`` blocks, ``start()`` runs it from a thread."""

    def __init__(self, target: otp.Pid | str, rate: float = 1.0, kinds: tuple[str, ...] = ("kill", "segv", "stop"),
                 seed: int | None = None, duration: float | None = None, stop_seconds: float = 0.5,
                 restart_timeout: float = 5.0) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds are some of {sorted(KINDS)}; got {kinds!r}")
        if not rate > 0:
            raise ValueError(f"rate is injections per second, > 0; got {rate!r}")
        self.target, self.rate, self.kinds = target, float(rate), tuple(kinds)
        self.seed, self.duration = seed, duration
        self.stop_seconds, self.restart_timeout = stop_seconds, restart_timeout
        self.record: list[dict[str, Any]] = []
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frozen: list[tuple[float, int]] = []     # (when to resume, os pid)
        # Each candidate's supervisor and child id, as the supervisors answered (the agent may
        # learn them from a supervisor a moment after that supervisor has answered us).
        self._parents: dict[otp.Pid, tuple[otp.Pid, Any]] = {}
        self._pending: list[tuple[dict, float, set]] = []  # injections whose restart is awaited

    # ----------------------------------------------------------------- running

    def start(self) -> "ChaosMonkey":
        self._thread = threading.Thread(target=self._run_in_thread, name="otp-chaos", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        """Stop injecting, resume frozen victims, and return the record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.record

    def _run_in_thread(self) -> None:
        try:
            self.run()
        finally:
            current().close()

    def run(self) -> list[dict[str, Any]]:
        """Inject until ``duration`` has passed or ``stop()``; return the record."""
        started = time.monotonic()
        interval = 1.0 / self.rate
        next_at = started
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self.duration is not None and now - started >= self.duration:
                    break
                self._resume_due(now)
                self._check_restarts(now)
                if now >= next_at:
                    self._inject(now - started)
                    next_at += interval
                self._stop.wait(max(0.0, min(next_at, self._next_resume()) - time.monotonic()))
        finally:
            self._resume_due(float("inf"))
            deadline = time.monotonic() + self.restart_timeout
            while self._pending and time.monotonic() < deadline:
                self._check_restarts(time.monotonic())
        return self.record

    # ----------------------------------------------------------------- choosing and injecting

    def candidates(self) -> list[otp.Pid]:
        """The processes the monkey may hit now, in a stable order."""
        self._parents = {}
        if isinstance(self.target, otp.Pid):
            return _subtree(self.target, self._parents)
        me = otp.self()
        pids = [p for p in otp.processes(self.target) if p != me]
        alive = []
        for pid in sorted(pids, key=lambda p: p.id):
            info = otp.process_info(pid, timeout=0)
            if info is not None and not info["embedded"]:
                alive.append(pid)
        return alive

    def _inject(self, at: float) -> None:
        victims = self.candidates()
        index = self._rng.randrange(1 << 30)
        kind = self._rng.choice(self.kinds)
        if not victims:
            return
        pid = victims[index % len(victims)]
        info = otp.process_info(pid, timeout=0)
        if info is None:
            return
        sup, child_id = self._parents.get(pid, (info["supervisor"], info["child_id"]))
        entry = {"time": round(at, 4), "kind": kind, "pid": pid, "os_pid": info["os_pid"],
                 "position": index % len(victims), "child_id": child_id,
                 "supervisor": sup, "new_pid": None, "restart_ms": None}
        before = set(_child_pids(sup)) if isinstance(sup, otp.Pid) else set()
        watch = otp.monitor(pid)
        injected_at = time.monotonic()
        if _same_process(info):
            os.kill(info["os_pid"], KINDS[kind])
            if kind == "stop":
                self._frozen.append((injected_at + self.stop_seconds, info["os_pid"]))
        elif kind == "kill":
            otp.exit(pid, "kill")
        else:
            entry["kind"] = "skipped"  # a process of another host: no OS signal reaches it
        self.record.append(entry)
        if isinstance(sup, otp.Pid) and kind != "stop" and entry["kind"] != "skipped":
            # Its death first (the supervisor hears of it at the same moment), then the
            # supervisor's answer, which comes once it has handled the death, restart included.
            try:
                otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == watch, timeout=self.restart_timeout)
            except otp.Timeout:
                pass
            self._pending.append((entry, injected_at, before))
            self._check_restarts(time.monotonic())
        else:
            otp.demonitor(watch, flush=True)

    def _check_restarts(self, now: float) -> None:
        still = []
        for entry, injected_at, before in self._pending:
            fresh = [p for p in _child_pids(entry["supervisor"]) if p not in before]
            if fresh:
                entry["new_pid"] = fresh[0]
                entry["restart_ms"] = round((time.monotonic() - injected_at) * 1e3, 2)
            elif now - injected_at < self.restart_timeout:
                still.append((entry, injected_at, before))
        self._pending = still

    def _next_resume(self) -> float:
        return min((when for when, _ in self._frozen), default=float("inf"))

    def _resume_due(self, now: float) -> None:
        due = [(w, p) for w, p in self._frozen if w <= now]
        for item in due:
            self._frozen.remove(item)
            try:
                os.kill(item[1], signal.SIGCONT)
            except ProcessLookupError:
                pass


def _subtree(sup: otp.Pid, parents: dict[otp.Pid, tuple[otp.Pid, Any]]) -> list[otp.Pid]:
    """Every process below ``sup``, depth first in start order; ``parents`` gets each one's
    supervisor and child id."""
    pids = []
    for child_id, pid, kind, _ in _which_children(sup):
        if isinstance(pid, otp.Pid):
            pids.append(pid)
            parents[pid] = (sup, child_id)
            if kind == "supervisor":
                pids.extend(_subtree(pid, parents))
    return pids


def _which_children(sup: otp.Pid) -> list:
    try:
        return supervisor.which_children(sup)
    except (otp.ExitError, otp.NoProc, otp.CallTimeout):
        return []


def _child_pids(sup: otp.Pid) -> list[otp.Pid]:
    return [pid for _, pid, _, _ in _which_children(sup) if isinstance(pid, otp.Pid)]


def _same_process(info: dict) -> bool:
    """Whether the OS process with the pid's os_pid here is that process (not a reused pid, not
    a process of another host)."""
    import psutil
    try:
        return info["os_pid"] is not None and abs(psutil.Process(info["os_pid"]).create_time() - info["started"]) < 0.01
    except (psutil.Error, TypeError):
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m otp chaos --node NAME --rate 5 --duration 30 --seed 1``: join the cluster as a
    node of its own, hit the processes of NAME, print each injection as a JSON line."""
    import argparse
    import json
    import socket

    parser = argparse.ArgumentParser(prog="python -m otp chaos", description=main.__doc__)
    parser.add_argument("--node", required=True, help="the node to hit (name@host)")
    parser.add_argument("--broker", required=True, help="the cluster's broker, e.g. tcp://127.0.0.1:4370")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--rate", type=float, default=1.0, help="injections per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kinds", default="kill,segv,stop", help="comma-separated: kill, segv, stop")
    args = parser.parse_args(argv)
    name = f"chaos-{os.getpid()}@{socket.gethostname()}"
    with otp.Node(name, cookie=args.cookie, broker=args.broker):
        if args.node not in otp.nodes():
            parser.error(f"node {args.node} is not in the cluster (up: {', '.join(otp.nodes()) or 'none'})")
        monkey = ChaosMonkey(args.node, rate=args.rate, kinds=tuple(args.kinds.split(",")), seed=args.seed,
                             duration=args.duration)
        for entry in monkey.run():
            print(json.dumps(entry, default=repr), flush=True)
    return 0
