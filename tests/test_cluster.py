"""Nodes joined through a broker, each node a process tree of its own (DESIGN sections 1-4)."""
from __future__ import annotations

import pytest

import otp
from tests import cluster_procs
from tests.cluster import wait_for
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
        # A remote name, monitored as (name, node): not registered there, so noproc from there.
        ref = otp.monitor(("nobody", a.name))
        down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10)
        assert (down.pid, down.reason) == (("nobody", a.name), "noproc")
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
    otp.spawn(cluster_procs.call_later_reporting, otp.self(), ("global", "slow"))
    otp.receive(match=lambda m: m == "calling", timeout=10)
    a.kill()
    outcome = otp.receive(match=lambda m: type(m) is tuple and m[0] == "outcome", timeout=10)
    assert outcome[1] == ("ExitError", ("nodedown", a.name))


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


def _answers(remote, timeout=1.0):
    try:
        return remote.run(cluster_procs.nodes, timeout=timeout) is not None
    except otp.Timeout:
        return False


def test_a_broker_killed_and_restarted_loses_no_name_and_traffic_resumes():
    from tests.cluster import COOKIE, BrokerProcess, RemoteNode, free_tcp_address, wait_for
    address = free_tcp_address()
    broker = BrokerProcess(address)
    try:
        with otp.Node("test", cookie=COOKIE, broker=address):
            a = RemoteNode("a", address)
            try:
                theirs = a.run(cluster_procs.start_global_echo, "theirs")
                mine = Echo.start(name=("global", "mine"))
                broker.kill()
                broker = BrokerProcess(address)
                wait_for(lambda: _answers(a), what="a call through the restarted broker")
                wait_for(lambda: a.run(cluster_procs.whereis_name, "mine") == mine, what="'mine' back on a")
                assert otp.cluster.whereis_name("theirs") == theirs
                assert otp.call(("global", "theirs"), ("echo", "again")) == "again"
                assert a.run(cluster_procs.call, ("global", "mine"), ("echo", "too")) == "too"
                assert sorted(otp.cluster.registered_names()) == ["mine", "theirs"]
            finally:
                a.stop()
    finally:
        broker.stop()


def test_a_partition_healing_with_a_name_on_both_sides_keeps_exactly_one(cluster):
    import os
    import signal
    otp.monitor_nodes(True)
    a = cluster.start("a")   # "a@..." sorts before "test@...": its pid keeps the name
    otp.receive(match=lambda m: m == otp.NodeUp(a.name), timeout=10)
    theirs = a.run(cluster_procs.start_global_echo, "dup")
    os.kill(a.agent_os_pid, signal.SIGSTOP)      # a falls silent: a partition, as the broker sees it
    try:
        down = otp.receive(match=lambda m: isinstance(m, otp.NodeDown) and m.node == a.name, timeout=10)
        assert down.reason == "net_tick_timeout"
        assert otp.cluster.whereis_name("dup") is None
        mine = Echo.start(name=("global", "dup"))  # the same name, registered on this side
        ref = otp.monitor(mine)
    finally:
        os.kill(a.agent_os_pid, signal.SIGCONT)
    otp.receive(match=lambda m: m == otp.NodeUp(a.name), timeout=10)
    down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10)
    assert down.reason == ("global_name_conflict", "dup")
    assert otp.cluster.whereis_name("dup") == theirs
    assert otp.call(("global", "dup"), ("echo", "survivor")) == "survivor"
    otp.monitor_nodes(False)


def test_malformed_unknown_and_oversized_frames_do_not_crash_the_broker(cluster):
    import zmq
    from otp import codec
    from otp.cookie import BROKER_ROLE, curve_keypair, node_role
    from tests.cluster import COOKIE
    a = cluster.start("a")
    ctx = zmq.Context()
    try:
        broker_key = curve_keypair(COOKIE, BROKER_ROLE)[0]
        raw = ctx.socket(zmq.DEALER)
        raw.curve_serverkey = broker_key
        raw.curve_publickey, raw.curve_secretkey = curve_keypair(COOKIE, node_role("raw@x"))
        raw.connect(cluster.broker.address)
        for parts in ([b"B", b"\xc1"], [b"B", b""], [b"Z"], [b"R", b"a"], [b"A", b"x", b"\x93\x01"],
                      [b"B", codec.encode(["hello", 1, 2])],
                      [b"B", codec.encode(["hello", "raw@x", 1, [["n", 5]], []])],
                      [b"B", codec.encode(["no_such_op"])],
                      [b"B", codec.encode(["register_name", 1, 2, "n", "not a pid"])],
                      [b"R", b"nowhere", b"\xc1", b""], [b"B", b"\x91" * 100_000]):
            raw.send_multipart(parts)
        plain = ctx.socket(zmq.DEALER)                      # no CURVE at all: refused at the handshake
        plain.connect(cluster.broker.address)
        plain.send(b"hello?")
        huge = ctx.socket(zmq.DEALER)                       # bigger than the broker takes: cut off
        huge.curve_serverkey = broker_key
        huge.curve_publickey, huge.curve_secretkey = curve_keypair(COOKIE, node_role("huge@x"))
        huge.connect(cluster.broker.address)
        huge.send_multipart([b"B", b"\x00" * (otp.broker.P.MAX_NETWORK_FRAME + 1)])
        pid = a.run(cluster_procs.start_global_echo, "still")
        assert otp.call(("global", "still"), ("echo", "fine")) == "fine"
        assert otp.call(pid, ("echo", "fine")) == "fine"
        assert cluster.broker.malformed >= 8
    finally:
        ctx.destroy(linger=0)


def _netns_unavailable():
    from tests.cluster import NetworkNamespace
    import shutil
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2) on this machine"
    return NetworkNamespace.unavailable()


_NETNS_UNAVAILABLE = _netns_unavailable()


@pytest.mark.skipif(_NETNS_UNAVAILABLE is not None, reason=f"no real partition: {_NETNS_UNAVAILABLE}")
def test_a_real_partition_in_a_network_namespace_heals_with_one_name_kept():
    from tests.cluster import COOKIE, NetworkNamespace, RemoteNode
    netns = NetworkNamespace()
    try:
        with otp.Broker(f"tcp://{netns.host_ip}:0", cookie=COOKIE, tick=1.0) as broker:
            with otp.Node("test", cookie=COOKIE, broker=broker.address):
                otp.monitor_nodes(True)
                a = RemoteNode("a", broker.address, prefix=netns.exec_prefix)
                try:
                    otp.receive(match=lambda m: m == otp.NodeUp(a.name), timeout=10)
                    theirs = a.run(cluster_procs.start_global_echo, "dup")
                    netns.cut()
                    down = otp.receive(match=lambda m: isinstance(m, otp.NodeDown) and m.node == a.name, timeout=10)
                    assert down.reason in ("net_tick_timeout", "connection_closed")
                    mine = Echo.start(name=("global", "dup"))
                    ref = otp.monitor(mine)
                    netns.heal()
                    otp.receive(match=lambda m: m == otp.NodeUp(a.name), timeout=30)
                    down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10)
                    assert down.reason == ("global_name_conflict", "dup")
                    assert otp.cluster.whereis_name("dup") == theirs
                    assert otp.call(("global", "dup"), ("echo", "across")) == "across"
                finally:
                    otp.monitor_nodes(False)
                    a.stop()
    finally:
        netns.delete()


def test_the_cluster_watcher_reports_joins_and_leaves_with_their_reason(cluster):
    from workers import cluster_watcher
    cluster_watcher.start_link(otp.self())
    a = cluster.start("a")
    assert otp.receive(match=lambda m: isinstance(m, otp.NodeUp), timeout=10) == otp.NodeUp(a.name)
    a.stop()
    assert otp.receive(match=lambda m: isinstance(m, otp.NodeDown), timeout=10) == otp.NodeDown(a.name, "connection_closed")


def test_the_cluster_watcher_prints_as_the_article_does(capsys):
    from workers.cluster_watcher import ClusterWatcher
    watcher = ClusterWatcher()
    watcher.report = None
    watcher.handle_info(otp.NodeUp("b@h"))
    watcher.handle_info(otp.NodeDown("b@h", "net_tick_timeout"))
    assert capsys.readouterr().out == "Node b@h joined the cluster\nNode b@h left: net_tick_timeout\n"


def test_a_node_drops_malformed_frames_from_the_network_and_keeps_serving(tmp_path):
    """A broker that knows the cookie but sends garbage: the node logs and drops each frame."""
    import threading
    import zmq
    from otp import codec
    from otp.cookie import BROKER_ROLE, curve_keypair
    from tests.cluster import COOKIE, free_tcp_address
    address = free_tcp_address()
    ctx = zmq.Context()
    zap = ctx.socket(zmq.REP)
    zap.bind("inproc://zeromq.zap.01")
    router = ctx.socket(zmq.ROUTER)
    router.curve_server = True
    router.curve_publickey, router.curve_secretkey = curve_keypair(COOKIE, BROKER_ROLE)
    router.bind(address)
    outcome = {}

    def rogue_broker():
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(router, zmq.POLLIN)
        while "pong" not in outcome:
            events = dict(poller.poll(20_000))
            if not events:
                return
            if zap in events:
                request = zap.recv_multipart()
                zap.send_multipart([request[0], request[1], b"200", b"OK", b"user", b""])
            if router in events:
                identity, kind, body = router.recv_multipart()
                op = codec.decode(body)
                if op[0] == "hello":
                    router.send_multipart([identity, b"B", codec.encode(["welcome", 1, 3.0, [], []])])
                    for garbage in ([b"B", b"\\xc1"], [b"B", codec.encode(["no_such_op"])], [b"Q"],
                                    [b"R", b"x", b"\\x00\\x00\\x00\\x09\\x00"], [b"A", b"n", b"\\x93"],
                                    [b"B", codec.encode(["reply", "x", "y", "z"])]):
                        router.send_multipart([identity, *garbage])
                    router.send_multipart([identity, b"B", codec.encode(["ping"])])
                elif op[0] == "pong":
                    outcome["pong"] = True

    thread = threading.Thread(target=rogue_broker)
    thread.start()
    try:
        with otp.Node("victim", cookie=COOKIE, broker=address):
            thread.join(30)
            assert outcome.get("pong"), "the node stopped answering after the garbage"
            assert otp.call(Echo.start(), ("echo", "alive")) == "alive"
    finally:
        outcome["pong"] = True
        thread.join(30)
        ctx.destroy(linger=0)


def test_process_info_and_processes_reach_another_node(cluster):
    a = cluster.start("a")
    pid = a.run(cluster_procs.start_global_echo, "seen")
    info = otp.process_info(pid)
    assert info["node"] == a.name and info["behaviour"] == "gen_server" and info["mailbox"] == 0
    assert info["os_pid"] > 0 and info["status"] in ("waiting", "running")
    assert pid in otp.processes(a.name)
    otp.exit(pid, "kill")
    wait_for(lambda: otp.process_info(pid) is None, what="the dead server gone from process_info")


def test_a_second_node_with_a_name_in_use_is_refused_and_a_taken_address_is_an_error(cluster):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", (
        "import otp\n"
        f"otp.Node('test', cookie='otp-pytest-cookie', broker='{cluster.broker.address}').start()\n")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "a node named test@" in done.stderr and "already connected" in done.stderr
    with pytest.raises(otp.NodeError, match="cannot bind"):
        otp.Broker(cluster.broker.address, cookie="x").start()
