"""process_info and processes against known processes (issue: tooling)."""
from __future__ import annotations

import os
import signal

import pytest

import otp
from tests import procs, servers
from tests.cluster import wait_for
from tests.servers import Echo, Worker

pytestmark = pytest.mark.usefixtures("node")


def test_process_info_of_a_gen_server_and_of_the_caller():
    pid = Echo.start(name="known")
    ref = otp.monitor(pid)
    otp.link(pid)
    try:
        info = otp.process_info(pid)
        assert info["pid"] == pid and info["node"] == otp.node()
        assert info["os_pid"] == otp.os_pid(pid) == otp.call(pid, "os_pid")
        assert info["registered_name"] == "known"
        assert info["behaviour"] == "gen_server" and info["module"] == "tests.servers.Echo"
        assert info["status"] in ("waiting", "running")
        assert info["mailbox"] == 0
        assert info["links"] == [otp.self()]
        assert info["monitored_by"] == [otp.self()]
        assert info["memory_rss"] > info["memory_uss"] > 0
        assert info["started"] > 0 and info["cpu_user"] >= 0
        mine = otp.process_info(otp.self())
        assert pid in mine["monitors"] and mine["links"] == [pid]
        assert mine["os_pid"] == os.getpid()
    finally:
        otp.unlink(pid)
        otp.demonitor(ref)


def test_a_gen_server_shows_its_behaviour_from_its_birth():
    starter = otp.spawn(servers.start_waits_in_init, otp.self())
    _, pid = otp.receive(match=lambda m: m[0] == "in_init", timeout=10)
    info = otp.process_info(pid)  # while its init still runs
    assert (info["behaviour"], info["module"]) == ("gen_server", "tests.servers.WaitsInInit")
    otp.exit(starter, "kill")
    otp.exit(pid, "kill")


def test_mailbox_length_and_suspended_status_are_seen():
    pid = otp.spawn(procs.wait_for_go_then_drain, otp.self())
    otp.receive(match=lambda m: m == "waiting", timeout=10)
    for i in range(5):
        otp.send(pid, ("noise", i))
    assert otp.process_info(pid)["mailbox"] == 5

    def once_suspended():  # a SIGSTOP takes effect when its process next runs: under load, later
        info = otp.process_info(pid, timeout=0.2)
        return info if info["status"] == "suspended" else None

    os.kill(otp.os_pid(pid), signal.SIGSTOP)
    try:
        info = wait_for(once_suspended, what="the process's stop")
        assert info["mailbox"] is None   # too busy (stopped) to say
    finally:
        os.kill(otp.os_pid(pid), signal.SIGCONT)
    otp.send(pid, "go")
    otp.receive(match=lambda m: m == "drained", timeout=10)


def test_a_supervised_child_shows_its_supervisor_and_restarts():
    spec = otp.child_spec("w", Worker, args=(otp.self(), "w"))
    sup = otp.Supervisor.start_link([spec], intensity=10, period=10)
    first = otp.receive(match=lambda m: m[:2] == ("started", "w"), timeout=10)[2]
    wait_for(lambda: otp.process_info(sup)["behaviour"] == "supervisor", what="the supervisor's facts")
    wait_for(lambda: otp.process_info(first)["child_id"] == "w", what="the child's facts")
    info = otp.process_info(first)
    assert (info["supervisor"], info["child_id"], info["restarts"]) == (sup, "w", 0)
    os.kill(otp.os_pid(first), signal.SIGKILL)
    second = otp.receive(match=lambda m: m[:2] == ("started", "w"), timeout=10)[2]
    # The supervisor records the restart once start_link has returned to it.
    wait_for(lambda: otp.process_info(second)["restarts"] == 1, what="the restart count")
    assert otp.process_info(first) is None
    assert second in otp.processes() and first not in otp.processes()
    assert {sup, otp.self()} <= set(otp.processes())
