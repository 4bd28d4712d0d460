"""GenServer against real processes: call, cast, info, deferred replies, stops, init forms."""
from __future__ import annotations

import os
import signal

import pytest

import otp
from otp.pytest_plugin import wait_for
from tests import procs as tests_procs
from tests.servers import BadTerminate, Echo, InitStops
from workers import kv_store

pytestmark = pytest.mark.usefixtures("node")


def tagged(tag, timeout=10):
    return otp.receive(match=lambda m: isinstance(m, tuple) and m and m[0] == tag, timeout=timeout)


def down_of(ref, timeout=10):
    return otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=timeout)


@pytest.mark.parametrize("value", [None, True, 0, -2**63, 2**64 - 1, 1.5, "text", b"\x00bytes",
                                   (1, (2,)), [1, [2]], {"k": (1, 2), (3, 4): [b"v"]}, ()])
def test_call_returns_the_reply_with_its_type(value):
    server = Echo.start_link()
    assert otp.call(server, ("echo", value)) == value
    assert type(otp.call(server, ("echo", value))) is type(value)


def test_casts_sent_before_a_call_are_handled_before_it():
    server = Echo.start_link()
    for i in range(100):
        otp.cast(server, i)
    assert otp.call(server, "casts") == list(range(100))


def test_a_deferred_reply_comes_from_a_later_message():
    server = Echo.start_link(otp.self())
    otp.spawn(_call_and_report, otp.self(), server, "later")
    tagged("pending")                      # the server holds the call
    otp.cast(server, ("answer", "now"))
    assert tagged("result") == ("result", "now")


def _call_and_report(parent, server, request):
    otp.send(parent, ("result", otp.call(server, request)))


def test_a_server_can_call_another_server_inside_handle_call():
    a, b = Echo.start_link(), Echo.start_link()
    assert otp.call(a, ("ask", b, 42)) == ("via", 42)


def test_a_call_times_out_and_its_late_reply_is_dropped():
    server = Echo.start_link()
    with pytest.raises(otp.CallTimeout):
        otp.call(server, "later", timeout=0.2)  # the server holds it until the cast below
    otp.cast(server, ("answer", "too late"))
    assert otp.call(server, ("echo", "next")) == "next"   # the late reply came before this one
    with pytest.raises(otp.Timeout):
        otp.receive(timeout=0.2)


def test_a_call_to_a_name_never_started_raises_noproc():
    with pytest.raises(otp.NoProc):
        otp.call("nobody", "hello")


def test_a_call_to_a_dead_pid_raises_noproc_at_once():
    server = Echo.start()
    ref = otp.monitor(server)
    otp.stop(server)
    down_of(ref)
    with pytest.raises(otp.NoProc):
        otp.call(server, ("echo", 1), timeout=30)


def test_a_server_killed_during_a_call_raises_exit_error_killed_at_once():
    killer = otp.spawn(_kill_when_pending)
    server = Echo.start(killer)
    otp.send(killer, server)
    with pytest.raises(otp.ExitError) as info:
        otp.call(server, "never", timeout=30)   # far longer than it takes: raised at the death
    assert info.value.reason == "killed"


def _kill_when_pending():
    server = otp.receive()
    otp.receive(match=lambda m: m[0] == "pending")
    os.kill(otp.os_pid(server), signal.SIGKILL)


def test_a_crash_in_handle_call_fails_the_call_with_the_exception():
    otp.trap_exit(True)
    try:
        server = Echo.start_link()
        with pytest.raises(otp.ExitError) as info:
            otp.call(server, ("crash", "bad request"))
        assert info.value.reason[:3] == ("exception", "ValueError", "bad request")
        assert otp.receive(match=otp.Exit, timeout=10).reason[:2] == ("exception", "ValueError")
    finally:
        otp.trap_exit(False)


def test_stop_with_a_reply_answers_after_terminate():
    server = Echo.start(otp.self())
    ref = otp.monitor(server)
    assert otp.call(server, ("stop", "normal", "bye")) == "bye"
    assert tagged("terminate") == ("terminate", "normal")
    assert down_of(ref).reason == "normal"


def test_stop_raised_in_a_callback_runs_terminate():
    server = Echo.start(otp.self())
    ref = otp.monitor(server)
    with pytest.raises(otp.ExitError):
        otp.call(server, ("raise_stop", "enough"))
    assert tagged("terminate") == ("terminate", "enough")
    assert down_of(ref).reason == "enough"


def test_otp_stop_runs_terminate_and_returns_once_the_server_is_gone():
    server = Echo.start(otp.self())
    otp.stop(server, "shutdown", timeout=10)
    assert tagged("terminate") == ("terminate", "shutdown")
    assert not otp.is_alive(server)
    with pytest.raises(otp.NoProc):
        otp.stop(server)


def test_terminate_runs_on_a_shutdown_from_the_parent_when_trapping_exits():
    parent = otp.spawn(_start_and_wait, otp.self(), True)
    _, server = tagged("started")
    ref = otp.monitor(server)
    otp.exit(parent, "shutdown")
    assert tagged("terminate") == ("terminate", "shutdown")
    assert down_of(ref).reason == "shutdown"


def test_terminate_does_not_run_on_a_shutdown_when_not_trapping_exits():
    parent = otp.spawn(_start_and_wait, otp.self(), False)
    _, server = tagged("started")
    ref = otp.monitor(server)
    otp.exit(parent, "shutdown")
    assert down_of(ref).reason == "shutdown"
    with pytest.raises(otp.Timeout):
        tagged("terminate", timeout=0.3)


def _start_and_wait(parent, trap):
    server = Echo.start_link(parent, trap)
    otp.send(parent, ("started", server))
    otp.receive()


def test_terminate_does_not_run_on_sigkill():
    server = Echo.start(otp.self())
    ref = otp.monitor(server)
    os.kill(otp.call(server, "os_pid"), signal.SIGKILL)
    assert down_of(ref).reason == "killed"
    with pytest.raises(otp.Timeout):
        tagged("terminate", timeout=0.3)


def test_a_failing_terminate_becomes_the_exit_reason():
    server = BadTerminate.start()
    ref = otp.monitor(server)
    otp.cast(server, "stop please")
    assert down_of(ref).reason[:2] == ("exception", "KeyError")


def test_handle_info_gets_every_other_message():
    server = Echo.start(otp.self())
    otp.send(server, "plain")
    assert tagged("info") == ("info", "plain")
    otp.spawn(tests_procs.send_back, server, "to the server")
    assert tagged("info") == ("info", "to the server")
    watched = otp.spawn(tests_procs.wait_forever)
    server_ref = otp.call(server, ("monitor", watched))
    otp.exit(watched, "bye")
    assert tagged("info") == ("info", otp.Down(server_ref, watched, "bye"))


@pytest.mark.parametrize("how, reason", [("stop", "no_thanks"), ("return_stop", "no_thanks")])
def test_init_stop_makes_start_raise_with_the_reason(how, reason):
    with pytest.raises(otp.StartError) as info:
        InitStops.start_link(how, name="initial")
    assert info.value.reason == reason
    assert otp.whereis("initial") is None       # unregistered before start returned
    otp.send(otp.self(), "still alive")         # the caller was not killed by the link
    assert otp.receive(timeout=1) == "still alive"


def test_init_exception_makes_start_raise_with_the_exception():
    with pytest.raises(otp.StartError) as info:
        InitStops.start_link("crash")
    assert info.value.reason[:3] == ("exception", "RuntimeError", "init failed")


def test_init_ignore_makes_start_return_none():
    assert InitStops.start_link("ignore", name="ignored") is None
    assert otp.whereis("ignored") is None


def test_init_timeout_kills_the_server_and_raises():
    with pytest.raises(otp.StartError) as info:
        InitStops.start_link("hang", timeout=0.3)
    assert info.value.reason == "timeout"


def test_a_taken_name_raises_already_started_with_the_holder():
    first = Echo.start_link(name="unique")
    with pytest.raises(otp.AlreadyStarted) as info:
        Echo.start_link(name="unique")
    assert info.value.pid == first
    assert otp.call("unique", ("echo", 1)) == 1


def test_a_global_name_needs_a_cluster():
    with pytest.raises(otp.NodeError, match="cluster"):
        Echo.start_link(name=("global", "g"))


def test_an_unencodable_reply_crashes_the_server_and_fails_the_call_at_once():
    server = Echo.start()
    with pytest.raises(otp.ExitError) as info:
        otp.call(server, "unencodable", timeout=30)
    assert info.value.reason[:2] == ("exception", "TypeError") and "object" in info.value.reason[2]


def test_cast_never_raises_for_a_missing_server():
    otp.cast("nobody", "hello")
    server = Echo.start()
    otp.stop(server)
    otp.cast(server, "hello")


def test_a_call_from_a_spawned_process_works():
    server = Echo.start_link()
    otp.spawn(_call_and_report, otp.self(), server, ("echo", "from a process"))
    assert tagged("result") == ("result", "from a process")


def test_kv_store_from_the_article():
    kv_store.start_link()
    kv_store.put("a", 1)
    kv_store.put(("tuple", "key"), [1, 2])
    assert kv_store.get("a") == 1
    assert kv_store.get(("tuple", "key")) == [1, 2]
    assert kv_store.get("missing") is None
    assert kv_store.size() == 2


def test_a_caller_lets_go_of_its_sockets_to_servers_that_died():
    # A caller watches each server it calls; once that server is dead its socket to it goes
    # too, or a caller of many short-lived servers would keep one (and its reconnection
    # attempts) for each.
    def open_fds_after_a_wait():
        try:
            otp.receive(timeout=0)   # a wait: the sockets to the dead are closed then
        except otp.Timeout:
            pass
        otp.registered()             # a round trip to the agent while ZeroMQ closes them
        return len(os.listdir("/proc/self/fd"))

    before = open_fds_after_a_wait()
    servers = [Echo.start() for _ in range(20)]
    for server in servers:
        assert otp.call(server, ("echo", 1)) == 1
    assert open_fds_after_a_wait() >= before + 40   # a socket and its connection to each
    for server in servers:
        otp.exit(server, "kill")
    for server in servers:   # no monitor and no call: only the call's watch tells the caller
        wait_for(lambda: not otp.is_alive(server), what="the kill")
    wait_for(lambda: open_fds_after_a_wait() <= before + 5, what="the sockets to the dead servers closed")
