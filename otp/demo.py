"""``python -m otp demo``: the article's supervision tree, crashes injected, restarts shown.

app_sup (one_for_one, intensity 5 in 10 s) supervises kv_store and kv_logger, each an OS
process. The demo SIGKILLs kv_logger, then kv_store, and shows each restart with the other
child untouched; then it kills kv_store until the restart intensity is exceeded, and shows
app_sup giving up with "shutdown". Nothing is left running afterwards.
"""
from __future__ import annotations

import os
import signal
import time

import otp
from workers import kv_store
from workers.app_sup import AppSup


def main() -> int:
    with otp.Node("demo", preload=["workers.app_sup"]) as node:
        otp.trap_exit(True)  # this program watches app_sup's exit instead of dying with it
        sup = AppSup.start_link(0.5, name="app_sup")
        say(f"node {node.name}: app_sup {sup!r} started (OS pid {otp.os_pid(sup)})")
        show_tree(sup)
        kv_store.put("answer", 42)
        say(f"kv_store holds answer={kv_store.get('answer')!r}")

        for victim in ("kv_logger", "kv_store"):
            before = children(sup)
            say(f"kill -9 {otp.os_pid(before[victim])}  ({victim})")
            new_pid = kill_and_wait_restart(sup, victim, before[victim])
            after = children(sup)
            other = "kv_store" if victim == "kv_logger" else "kv_logger"
            say(f"  {victim} restarted as {new_pid!r} (OS pid {otp.os_pid(new_pid)}); "
                f"{other} untouched: {after[other] == before[other]} (OS pid {otp.os_pid(after[other])})")
        say(f"kv_store restarted empty, as Erlang's would: answer={kv_store.get('answer')!r}")

        say("killing kv_store again and again: more than 5 restarts in 10 s is too many")
        ref = otp.monitor(sup)
        kills = 2
        while True:
            kills += 1
            try:
                kill_and_wait_restart(sup, "kv_store", children(sup)["kv_store"])
            except (otp.NoProc, otp.ExitError):  # app_sup is gone: calls to it fail
                break
        exit_msg = otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == sup, timeout=10)
        otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10)
        say(f"kill number {kills} within 10 s was one too many; app_sup stopped its children and gave up: {exit_msg}")
        rundir = node.rundir
    say(f"node stopped; run directory removed: {not os.path.exists(rundir)}")
    return 0


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def children(sup: otp.Pid) -> dict:
    return {cid: pid for cid, pid, *_ in otp.supervisor.which_children(sup)}


def show_tree(sup: otp.Pid) -> None:
    for cid, pid, kind, _ in otp.supervisor.which_children(sup):
        say(f"  └─ {cid:<10} {kind:<8} {pid!r}  OS pid {otp.os_pid(pid)}")


def kill_and_wait_restart(sup: otp.Pid, child_id: str, old: otp.Pid) -> otp.Pid:
    """SIGKILL a child by OS pid, wait for its death, then for the supervisor's replacement."""
    ref = otp.monitor(old)
    os.kill(otp.os_pid(old), signal.SIGKILL)
    otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the supervisor's view catches up within a few calls
        pid = children(sup).get(child_id)
        if isinstance(pid, otp.Pid) and pid != old:
            return pid
    raise otp.Timeout(f"{child_id} was not restarted")
