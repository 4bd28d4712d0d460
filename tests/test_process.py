"""Processes, messages, links, monitors and exit signals (DESIGN section 3) on real OS processes."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import otp
from otp import runtime
from tests import procs

pytestmark = pytest.mark.usefixtures("node")


def down_of(ref, timeout=10):
    return otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=timeout)


def exit_of(pid, timeout=10):
    return otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == pid, timeout=timeout)


def tagged(tag, timeout=10):
    return otp.receive(match=lambda m: isinstance(m, tuple) and m[0] == tag, timeout=timeout)


# ------------------------------------------------------------------ spawn and messages

def test_spawned_function_runs_in_its_own_os_process():
    pid = otp.spawn(procs.report_os_pid_and_wait, otp.self())
    _, child_os_pid = tagged("os_pid")
    assert child_os_pid != os.getpid()
    assert otp.os_pid(pid) == child_os_pid
    otp.exit(pid, "kill")


def test_spawn_returns_a_pid_that_receives_at_once():
    pid = otp.spawn(procs.echo)
    otp.send(pid, (otp.self(), "hello"))
    assert otp.receive(timeout=10) == "hello"
    otp.send(pid, "stop")


def test_spawn_arguments_larger_than_a_pipe_holds_arrive_whole():
    # The agent hands a spawn to its warm process through a pipe (64 KiB): the rest of a large
    # one follows as the process reads, and the agent serves others meanwhile.
    blob = os.urandom(3 * 1024 * 1024)
    first = otp.spawn(procs.send_back, otp.self(), ("first", blob))
    second = otp.spawn(procs.send_back, otp.self(), ("second", 1))
    got = {otp.receive(timeout=20)[0] for _ in range(2)}
    assert got == {"first", "second"} and first != second
    otp.spawn(procs.send_back, otp.self(), blob)
    assert otp.receive(timeout=20) == blob


def test_spawns_that_outrun_the_warm_processes_all_start():
    # 12 processes spawning 6 each at once: more spawns than warm processes kept ahead, so
    # most wait in the agent for the zygote's next fork, and are served in turn.
    for tag in range(12):
        otp.spawn(procs.spawn_many, otp.self(), tag, 6)
    got = {otp.receive(timeout=30) for _ in range(72)}
    assert got == {(tag, i) for tag in range(12) for i in range(6)}


def test_messages_from_one_process_arrive_in_the_order_sent():
    otp.spawn(procs.send_numbers, otp.self(), 2000)
    got = []
    try:
        while len(got) < 2000:
            got.append(otp.receive(timeout=3))
    except otp.Timeout:
        pass
    assert got == list(range(2000)), (len(got), got[:3], got[-3:])


def test_selective_receive_leaves_other_messages_in_order():
    me = otp.self()
    for value in [1, "a", 2, "b", 3]:
        otp.send(me, value)
    assert otp.receive(match=str, timeout=1) == "a"
    assert otp.receive(match=lambda m: m == 3, timeout=1) == 3
    assert [otp.receive(timeout=1) for _ in range(3)] == [1, 2, "b"]


def test_receive_raises_timeout_when_nothing_matches():
    otp.send(otp.self(), "other")
    with pytest.raises(otp.Timeout):
        otp.receive(match=int, timeout=0.05)
    assert otp.receive(timeout=0) == "other"


def test_a_wait_whose_deadline_passed_while_the_process_ran_does_not_wait():
    # A deadline passed by 1 to 2 ms (a process preempted between its receive and its wait)
    # once rounded to ZeroMQ's -1, a wait for ever.
    for late in (0.0005, 0.0015, 0.0025):
        assert runtime.current()._next_frame(time.monotonic() - late) is None


def test_send_to_a_dead_pid_is_dropped_silently():
    pid, ref = otp.spawn_monitor(procs.send_back, otp.self(), "done")
    down_of(ref)
    otp.send(pid, "into the void")
    assert otp.receive(timeout=5) == "done"


def test_send_to_an_unregistered_name_raises_noproc():
    with pytest.raises(otp.NoProc):
        otp.send("nobody_here", "hello")


def test_unencodable_message_fails_in_the_sender_naming_the_type():
    pid = otp.spawn(procs.echo)
    with pytest.raises(TypeError, match="object"):
        otp.send(pid, ("x", object()))
    otp.send(pid, (otp.self(), "still fine"))
    assert otp.receive(timeout=10) == "still fine"
    otp.send(pid, "stop")


def test_each_process_draws_its_own_random_numbers_and_is_its_own_main_thread():
    for _ in range(3):
        otp.spawn(procs.report_process_state, otp.self())
    states = [tagged("state") for _ in range(3)]
    assert len({draw for _, draw, *_ in states}) == 3
    assert [facts for _, _, *facts in states] == [[True, True, 1]] * 3


def test_spawn_refuses_a_function_that_cannot_be_imported():
    with pytest.raises(TypeError, match="importable"):
        otp.spawn(lambda: None)


def test_each_thread_of_the_program_is_its_own_process():
    pids = []
    thread = threading.Thread(target=lambda: pids.append(otp.self()))
    thread.start()
    thread.join()
    assert pids[0] != otp.self()


# ------------------------------------------------------------------ names

def test_register_whereis_send_by_name_and_unregister():
    pid = otp.spawn(procs.echo)
    otp.register("echo", pid)
    assert otp.whereis("echo") == pid
    assert "echo" in otp.registered()
    otp.send("echo", (otp.self(), "by name"))
    assert otp.receive(timeout=10) == "by name"
    otp.unregister("echo")
    assert otp.whereis("echo") is None
    otp.send(pid, "stop")


def test_a_name_is_taken_once_and_freed_when_its_process_dies():
    otp.spawn(procs.register_self_and_wait, otp.self(), "single")
    _, pid = tagged("registered")
    with pytest.raises(ValueError, match="already registered"):
        otp.register("single", otp.self())
    ref = otp.monitor(pid)
    otp.exit(pid, "kill")
    down_of(ref)
    assert otp.whereis("single") is None


# ------------------------------------------------------------------ monitors and exit reasons

@pytest.mark.parametrize("func, args, reason", [
    (procs.send_back, (None, 1), "normal"),
    (procs.exit_with, ("custom",), "custom"),
    (procs.exit_with, (("shutdown", "bye"),), ("shutdown", "bye")),
    (procs.os_exit, (3,), ("exit_code", 3)),
    (procs.segfault, (), ("signal", "SIGSEGV")),
    (procs.sigterm_self, (), ("signal", "SIGTERM")),
])
def test_down_carries_the_exit_reason(func, args, reason):
    if args and args[0] is None:
        args = (otp.self(),) + args[1:]
    pid, ref = otp.spawn_monitor(func, *args)
    assert down_of(ref) == otp.Down(ref, pid, reason)


def test_an_uncaught_exception_exits_with_type_message_and_traceback():
    pid, ref = otp.spawn_monitor(procs.raise_value_error, "boom")
    kind, type_name, message, tb = down_of(ref).reason
    assert (kind, type_name, message) == ("exception", "ValueError", "boom")
    assert "raise ValueError(message)" in tb


def test_sigkill_from_the_os_exits_with_killed():
    pid, ref = otp.spawn_monitor(procs.wait_forever)
    os.kill(otp.os_pid(pid), signal.SIGKILL)
    assert down_of(ref).reason == "killed"


def test_monitor_of_a_dead_pid_gives_noproc_at_once():
    pid, ref = otp.spawn_monitor(procs.send_back, otp.self(), 1)
    down_of(ref)
    ref2 = otp.monitor(pid)
    assert down_of(ref2, timeout=2) == otp.Down(ref2, pid, "noproc")


def test_two_monitors_give_two_downs():
    pid = otp.spawn(procs.wait_forever)
    refs = [otp.monitor(pid), otp.monitor(pid)]
    otp.exit(pid, "kill")
    assert {down_of(r).ref for r in refs} == set(refs)


def test_monitor_by_name_reports_the_name():
    otp.spawn(procs.register_self_and_wait, otp.self(), "named")
    _, pid = tagged("registered")
    ref = otp.monitor("named")
    otp.exit(pid, "bye")
    down = down_of(ref)
    assert down.pid == ("named", otp.node()) and down.reason == "bye"


def test_demonitor_flush_removes_a_down_already_delivered():
    pid, ref = otp.spawn_monitor(procs.send_back, otp.self(), "done")
    down_of(ref)
    ref2 = otp.monitor(pid)       # fires at once: noproc
    otp.whereis("anyone")         # the agent answers after it sent the Down: it is in the mailbox
    otp.demonitor(ref2, flush=True)
    with pytest.raises(otp.Timeout):
        down_of(ref2, timeout=0.2)


def test_no_down_arrives_after_demonitor():
    pid, ref = otp.spawn_monitor(procs.wait_forever)
    otp.demonitor(ref)
    ref2 = otp.monitor(pid)
    otp.exit(pid, "kill")
    down_of(ref2)
    with pytest.raises(otp.Timeout):
        down_of(ref, timeout=0.2)


# ------------------------------------------------------------------ links and exit signals

def test_a_linked_process_dies_with_the_same_abnormal_reason():
    middle, ref = otp.spawn_monitor(procs.spawn_linked_child, otp.self(), "wait_forever")
    _, child = tagged("child")
    otp.exit(child, "crashed")
    assert down_of(ref).reason == "crashed"


def test_a_linked_process_survives_a_normal_exit():
    middle, ref = otp.spawn_monitor(procs.spawn_linked_child, otp.self(), "send_back", otp.self(), "bye")
    _, child = tagged("child")
    assert otp.receive(match=lambda m: m == "bye", timeout=10)
    otp.send(middle, "still there?")
    assert tagged("middle got") == ("middle got", "still there?")
    otp.exit(middle, "kill")
    down_of(ref)


def test_trap_exit_turns_a_linked_crash_into_an_exit_message():
    otp.trap_exit(True)
    try:
        pid = otp.spawn_link(procs.raise_value_error, "linked boom")
        msg = exit_of(pid)
        assert msg.reason[:3] == ("exception", "ValueError", "linked boom")
    finally:
        otp.trap_exit(False)


def test_exit_kill_cannot_be_trapped_and_arrives_as_killed():
    trapper = otp.spawn(procs.trap_and_forward, otp.self())
    tagged("ready")
    ref = otp.monitor(trapper)
    otp.exit(trapper, "kill")
    assert down_of(ref).reason == "killed"


def test_a_trapping_process_receives_exit_signals_as_messages():
    trapper = otp.spawn(procs.trap_and_forward, otp.self())
    tagged("ready")
    otp.exit(trapper, "please stop")
    assert tagged("got") == ("got", otp.Exit(otp.self(), "please stop"))
    otp.exit(trapper, "normal")
    assert tagged("got") == ("got", otp.Exit(otp.self(), "normal"))
    otp.exit(trapper, "kill")


def test_exit_signal_kills_a_process_that_does_not_trap():
    pid, ref = otp.spawn_monitor(procs.wait_forever)
    otp.exit(pid, "normal")      # ignored by a process that does not trap exits
    otp.exit(pid, "custom")
    assert down_of(ref).reason == "custom"


def test_killed_is_trappable_when_it_comes_through_a_link():
    otp.trap_exit(True)
    try:
        pid = otp.spawn_link(procs.wait_forever)
        otp.exit(pid, "kill")
        assert exit_of(pid).reason == "killed"
    finally:
        otp.trap_exit(False)


def test_link_to_a_dead_pid_raises_noproc_or_traps_it():
    pid, ref = otp.spawn_monitor(procs.send_back, otp.self(), 1)
    down_of(ref)
    with pytest.raises(otp.NoProc):
        otp.link(pid)
    otp.trap_exit(True)
    try:
        otp.link(pid)
        assert exit_of(pid).reason == "noproc"
    finally:
        otp.trap_exit(False)


def test_unlink_removes_the_link():
    pid = otp.spawn(procs.wait_forever)
    otp.link(pid)
    otp.unlink(pid)
    ref = otp.monitor(pid)
    otp.exit(pid, "crash")
    assert down_of(ref).reason == "crash"
    otp.send(otp.self(), "alive")
    assert otp.receive(timeout=1) == "alive"


def test_messages_sent_before_a_crash_arrive_before_the_exit_signal():
    otp.trap_exit(True)
    try:
        pid = otp.spawn_link(procs.send_numbers, otp.self(), 200)
        got = [otp.receive(timeout=10) for _ in range(201)]
        assert got[:200] == list(range(200)) and got[200] == otp.Exit(pid, "normal")
    finally:
        otp.trap_exit(False)


def test_a_program_thread_killed_by_a_link_raises_exit_error_and_gets_a_new_pid():
    me = otp.self()
    pid = otp.spawn_link(procs.wait_forever)
    otp.exit(pid, "crash")
    with pytest.raises(otp.ExitError) as info:
        otp.receive(timeout=10)
    assert info.value.reason == "crash"
    assert otp.self() != me


def test_exit_self_with_a_reason_raises_exit_error():
    with pytest.raises(otp.ExitError):
        otp.exit(otp.self(), "bye")


def test_is_alive_follows_the_process():
    pid, ref = otp.spawn_monitor(procs.wait_forever)
    assert otp.is_alive(pid)
    otp.exit(pid, "kill")
    down_of(ref)
    assert not otp.is_alive(pid)


def test_whereis_sees_every_change_made_by_other_processes():
    first, second = otp.spawn(procs.wait_forever), otp.spawn(procs.wait_forever)
    assert otp.whereis("moving") is None
    otp.spawn(procs.register_then_report, otp.self(), "moving", first)
    otp.receive(match=lambda m: m == "done", timeout=10)
    assert otp.whereis("moving") == first
    assert otp.whereis("moving") == first          # answered again without asking the agent
    otp.spawn(procs.reregister_then_report, otp.self(), "moving", second)
    otp.receive(match=lambda m: m == "done", timeout=10)
    assert otp.whereis("moving") == second
    ref = otp.monitor(second)
    otp.exit(second, "kill")
    down_of(ref)
    assert otp.whereis("moving") is None
    otp.exit(first, "kill")


def test_hundreds_of_processes_killed_at_once_all_report_their_death():
    # Their deaths reach the node agent together while it may be asking the zygote for more
    # processes: neither of the two ever waits on the other.
    pids = [otp.spawn(procs.wait_forever) for _ in range(300)]
    refs = {otp.monitor(pid): pid for pid in pids}
    for pid in pids:
        otp.exit(pid, "kill")
    for _ in pids:
        down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref in refs, timeout=30)
        assert down.reason == "killed"
        del refs[down.ref]
    assert not any(otp.is_alive(pid) for pid in pids)


def test_an_exit_signal_from_a_live_process_loses_none_of_what_was_sent_to_it():
    # A trapped exit signal need not mean its sender died (otp.exit from a live process): the
    # receiver must not drop what it queued for that sender, nor let later frames overtake it.
    streamer = otp.spawn(procs.trap_then_stream, otp.self(), 3000, 20_000)
    assert tagged("chunk")[1] == 0
    otp.exit(streamer, "hello")
    got = [tagged("chunk", timeout=30)[1] for _ in range(2999)]
    assert got == list(range(1, 3000))
    assert tagged("done") == ("done", otp.Exit(otp.self(), "hello"))
