"""Nodes joined through a broker, each node a process tree of its own (DESIGN sections 1-4)."""
from __future__ import annotations

import pytest

import otp
from tests import cluster_procs
from tests.servers import Echo


def test_a_global_counter_is_shared_by_the_nodes(cluster):
    a = cluster.start("a")
    b = cluster.start("b")
    counter_pid = a.run(cluster_procs.start_counter)
    assert counter_pid.node == a.name
    assert b.run(cluster_procs.whereis_name, "counter") == counter_pid
    b.run(cluster_procs.counter_inc, 50)
    assert b.run(cluster_procs.counter_value) == 50
    cluster_procs.counter_inc(50)
    assert cluster_procs.counter_value() == 100
    assert sorted(otp.nodes()) == sorted([a.name, b.name])


def test_call_send_and_cast_reach_a_server_on_another_node_by_global_name_pid_and_name_node(cluster):
    a = cluster.start("a")
    pid = a.run(cluster_procs.start_global_echo, "echo")
    assert otp.cluster.whereis_name("echo") == pid
    assert otp.call(("global", "echo"), ("echo", [1, "two", (3,)])) == [1, "two", (3,)]
    assert otp.call(pid, ("echo", {"k": b"v"})) == {"k": b"v"}
    otp.cast(("global", "echo"), "first")
    otp.cast(pid, "second")
    assert otp.call(pid, "casts") == ["first", "second"]
    # (name, node): the remote node resolves its local name.
    Echo.start(name="here")
    assert a.run(cluster_procs.call, ("here", cluster.node.name), ("echo", "by name")) == "by name"
    otp.send(("ctl", a.name), ("run", otp.self(), "tag", "tests.cluster_procs:nodes", ()))
    assert otp.receive(match=lambda m: m[0] == "tag", timeout=10) == ("tag", "ok", [cluster.node.name])
    assert otp.cluster.send("echo", "info") == pid
    assert sorted(otp.cluster.registered_names()) == ["echo"]


def test_a_server_started_here_under_a_global_name_is_one_per_cluster(cluster):
    a = cluster.start("a")
    pid = Echo.start(name=("global", "solo"))
    assert a.run(cluster_procs.whereis_name, "solo") == pid
    with pytest.raises(RuntimeError, match="AlreadyStarted"):
        a.run(cluster_procs.start_global_echo, "solo")
    assert a.run(cluster_procs.call, ("global", "solo"), ("echo", 7)) == 7
    assert otp.cluster.register_name("solo", otp.self()) is False
    assert otp.cluster.register_name("other", pid) is False      # one name per pid, as Erlang
    otp.stop(pid)
    assert otp.cluster.whereis_name("solo") is None


def test_monitors_links_and_exit_signals_work_across_nodes(cluster):
    a = cluster.start("a")
    otp.trap_exit(True)
    try:
        target = a.run(cluster_procs.spawn_idle)
        ref = otp.monitor(target)
        otp.link(target)
        otp.exit(target, "bye")
        assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10).reason == "bye"
        assert otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == target, timeout=10).reason == "bye"
        # To a dead pid of another node: noproc, from that node.
        ref = otp.monitor(target)
        assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10).reason == "noproc"
        otp.link(target)
        assert otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == target, timeout=10).reason == "noproc"
        # A remote name, monitored as (name, node).
        ref = otp.monitor(("ctl", a.name))
        otp.demonitor(ref)
        # A process there linked to one here dies with it.
        other = a.run(cluster_procs.spawn_idle)
        watch = otp.monitor(other)
        helper = otp.spawn(cluster_procs.idle)
        otp.link(helper)
        otp.unlink(helper)
        otp.exit(other, "kill")
        assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == watch, timeout=10).reason == "killed"
        otp.exit(helper, "kill")
    finally:
        otp.trap_exit(False)


def test_a_killed_node_is_seen_down_its_names_go_and_links_and_monitors_get_noconnection(cluster):
    a = cluster.start("a")
    otp.monitor_nodes(True)
    pid = a.run(cluster_procs.start_global_echo, "doomed")
    idle = a.run(cluster_procs.spawn_idle)
    ref = otp.monitor(pid)
    otp.trap_exit(True)
    try:
        otp.link(idle)
        a.kill()
        down = otp.receive(match=lambda m: isinstance(m, otp.NodeDown) and m.node == a.name, timeout=10)
        assert down.reason in ("connection_closed", "net_tick_timeout")
        assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=1).reason == "noconnection"
        assert otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == idle, timeout=1).reason == "noconnection"
        assert otp.cluster.whereis_name("doomed") is None
        assert otp.nodes() == []
        with pytest.raises(otp.NoProc):
            otp.call(("global", "doomed"), ("echo", 1))
    finally:
        otp.trap_exit(False)
        otp.monitor_nodes(False)


def test_a_call_to_a_server_whose_node_dies_exits_nodedown(cluster):
    a = cluster.start("a")
    a.run(cluster_procs.start_global_echo, "slow")
    caller = otp.spawn(cluster_procs.call_later_reporting, otp.self(), ("global", "slow"))
    otp.receive(match=lambda m: m == "calling", timeout=10)
    a.kill()
    outcome = otp.receive(match=lambda m: type(m) is tuple and m[0] == "outcome", timeout=10)
    assert outcome[1] == ("ExitError", ("nodedown", a.name))
    del caller


def test_nodes_joining_and_leaving_are_announced(cluster):
    otp.monitor_nodes(True)
    try:
        a = cluster.start("a")
        assert otp.receive(match=lambda m: isinstance(m, otp.NodeUp), timeout=10) == otp.NodeUp(a.name)
        a.stop()
        down = otp.receive(match=lambda m: isinstance(m, otp.NodeDown), timeout=10)
        assert down == otp.NodeDown(a.name, "connection_closed")
    finally:
        otp.monitor_nodes(False)


def test_a_node_with_the_wrong_cookie_is_refused_and_the_broker_logs_it(cluster, caplog):
    from tests.cluster import RemoteNode
    with pytest.raises(RuntimeError, match="did not start"):
        RemoteNode("intruder", cluster.broker.address, cookie="not-the-cookie")
    assert any("handshake failed" in r.getMessage() for r in caplog.records if r.name == "otp.broker")
    assert otp.nodes() == []


def test_trans_excludes_across_three_nodes(cluster):
    a = cluster.start("a")
    b = cluster.start("b")
    cluster_procs.Store.start(name=("global", "store"))
    tags = []
    for remote in (a, b):
        tags.append(("t", remote.name))
        otp.send(("ctl", remote.name), ("run", otp.self(), ("t", remote.name),
                                        "tests.cluster_procs:locked_increments", ("store", 100)))
    cluster_procs.locked_increments("store", 100)
    for tag in tags:
        assert otp.receive(match=lambda m, tag=tag: m[0] == tag, timeout=60) == (tag, "ok", 100)
    assert otp.call(("global", "store"), ("get", "n")) == 300


def test_a_lock_is_released_when_its_holder_dies_or_its_node_goes_down(cluster):
    a = cluster.start("a")
    holder = otp.spawn(cluster_procs.hold_lock_and_report, "L", otp.self())
    assert otp.receive(timeout=10) == ("holding", holder)
    assert otp.cluster.set_lock("L", retries=0) is False
    otp.exit(holder, "kill")
    assert otp.cluster.set_lock("L") is True
    otp.cluster.del_lock("L")
    a.run(cluster_procs.spawn_holder, "M", otp.self())
    otp.receive(match=lambda m: m[0] == "holding", timeout=10)
    assert otp.cluster.trans("M", lambda: "ran", retries=0) == otp.cluster.ABORTED
    a.kill()
    assert otp.cluster.trans("M", lambda: "ran") == "ran"
