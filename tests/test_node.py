"""Nodes: run directory, stale cleanup, hostile frames, and no orphans when anything is killed."""
from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile

import psutil
import pytest
import zmq

import otp
from otp import codec, protocol, runtime
from otp.local_node import RUNDIR_PREFIX, remove_stale_rundirs, rundir_base
from otp.pytest_plugin import wait_for
from tests import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_directory_is_private_and_removed_on_stop():
    with otp.Node() as node:
        assert stat.S_IMODE(os.stat(node.rundir).st_mode) == 0o700
        rundir = node.rundir
        pid, ref = otp.spawn_monitor(procs.send_back, otp.self(), "hi")
        assert otp.receive(timeout=10) == "hi"
    assert not os.path.exists(rundir)


def test_a_named_node_carries_its_name_in_pids():
    with otp.Node("alpha") as node:
        assert otp.node() == node.name and node.name.startswith("alpha@")
        assert otp.self().node == node.name


def test_only_one_node_runs_per_program():
    with otp.Node():
        with pytest.raises(otp.NodeError, match="already running"):
            otp.Node().start()


JUNK = [b"", b"\xc1", b"\xc1s\x92", b"\xc1c\x90", b"\xc1c\x01", b"\xc1c\x92\xa5reply\x01", b"\xc1z",
        b"\x92", b"\xff" * 64, b"\xc7\x01\x63\x00"]


def test_malformed_frames_are_dropped_and_a_process_keeps_serving(node):
    pid = otp.spawn(procs.echo)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.connect(protocol.endpoint(node.rundir, pid.id))
    for junk in JUNK:
        sock.send(junk)
    sock.send(codec.encode((otp.self(), "still serving")))  # after the junk, on the same connection
    sock.close(linger=1000)
    assert otp.receive(timeout=10) == "still serving"
    otp.send(pid, "stop")


def test_random_frames_never_crash_a_process(node):
    rng = random.Random(7)
    prefixes = [b"", b"\xc1s", b"\xc1c", b"\x93", b"\xc7"]
    pid, ref = otp.spawn_monitor(procs.tagged_echo)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.connect(protocol.endpoint(node.rundir, pid.id))
    for _ in range(2000):
        sock.send(rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 40)))
    sock.send(codec.encode(("echo", otp.self(), "survived")))
    sock.close(linger=1000)
    assert otp.receive(match=lambda m: m == "survived" or isinstance(m, otp.Down), timeout=20) == "survived"
    otp.exit(pid, "kill")


def test_malformed_requests_are_dropped_and_the_agent_keeps_serving(node):
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.connect(protocol.endpoint(node.rundir, protocol.AGENT_ENDPOINT))
    for junk in JUNK + [codec.encode(["no_such_op", 1]), codec.encode([protocol.LINK]), codec.encode(7)]:
        sock.send(junk)
    ref = runtime.current().make_ref()
    sock.send(codec.encode([protocol.MONITOR, otp.self().id, ref, "nobody"]))  # same connection
    sock.close(linger=1000)
    assert otp.receive(timeout=10) == otp.Down(ref, ("nobody", otp.node()), "noproc")


def _start_embedding_program(depth=3):
    """Start tests/embedding_program.py under a reaping parent; return (harness, its pids)."""
    harness = subprocess.Popen(
        [sys.executable, "-m", "otp.pytest_plugin", "subreaper", sys.executable, "-m", "tests.embedding_program", str(depth)],
        cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    info = json.loads(harness.stdout.readline())
    return harness, info


def _gone_within(pids, timeout):
    """The pids still running (not dead, not zombies) after waiting up to timeout seconds."""
    procs_ = []
    for pid in pids:
        try:
            procs_.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs_, timeout=timeout)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_a_process_is_forked_without_the_node_agents_own_modules(node):
    # Each process pays, at its fork and at its death, for every page the zygote maps.
    names = ["otp.agent", "otp.broker_link", "argparse", "otp.runtime"]
    otp.spawn(procs.report_modules, otp.self(), names)
    _, loaded = otp.receive(match=lambda m: m[0] == "modules", timeout=10)
    assert loaded == {"otp.agent": False, "otp.broker_link": False, "argparse": False, "otp.runtime": True}


def test_a_preloaded_module_is_loaded_in_every_process_and_its_at_fork_hook_runs_there():
    from tests import fork_hooks
    with otp.Node(preload=["tests.fork_hooks"]):
        for _ in range(3):
            otp.spawn(fork_hooks.report, otp.self())
            assert otp.receive(match=lambda m: m[0] == "fork_hooks", timeout=10) == ("fork_hooks", True, True)


def _zygote_children(node):
    """The OS pids of the zygote's children (asking the agent for the node's processes first
    paces a wait on them)."""
    otp.processes()
    return [child.pid for child in psutil.Process(node.zygote_pid).children()]


def test_a_warm_process_that_dies_unused_is_replaced_at_the_next_spawn_not_at_once(node):
    # Where warm processes cannot start, replacing each at once would fork in a loop.
    keeper = otp.spawn(procs.wait_forever)   # the node's one spawn so far: one warm process after it
    keeper_os_pid = otp.os_pid(keeper)
    [warm] = wait_for(lambda: [p for p in _zygote_children(node) if p != keeper_os_pid], what="a warm process")
    os.kill(warm, signal.SIGKILL)
    wait_for(lambda: warm not in _zygote_children(node), what="the killed warm process reaped")
    # The zygote reports the next death once it is done with that one: the Down of a process
    # that returns comes from the zygote's report (the kernel's word serves only killed ones).
    ref = otp.monitor(keeper)
    otp.send(keeper, "return")
    assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10).reason == "normal"
    assert _zygote_children(node) == []   # no replacement came
    pid, ref = otp.spawn_monitor(procs.send_back, otp.self(), "up")
    assert otp.receive(match=lambda m: m == "up", timeout=10) == "up"
    assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10).reason == "normal"
    wait_for(lambda: _zygote_children(node), what="a warm process kept ahead again after a spawn")


def test_the_zygote_holds_no_descriptor_per_process(node):
    # Every fork copies the zygote's descriptors and every new process closes them: one per
    # process would make each spawn cost more the more processes run.
    otp.spawn(procs.wait_forever)
    before = psutil.Process(node.zygote_pid).num_fds()
    pids = [otp.spawn(procs.wait_forever) for _ in range(40)]
    assert all(otp.is_alive(pid) for pid in pids)
    # (at a look, the zygote may be forking a warm process: its pipe's two ends are open then)
    assert psutil.Process(node.zygote_pid).num_fds() <= before + 2
    # and the exit reasons still come through, of every size up to the largest kept whole
    reasons = [("big", "x" * 50_000), ("small", 1), {"k": [1.5, None]}]
    for reason in reasons:
        pid, ref = otp.spawn_monitor(procs.exit_with, reason)
        assert otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10).reason == reason
    for pid in pids:
        otp.exit(pid, "kill")


def test_processes_that_exit_at_once_each_get_their_own_reason(node):
    # The reasons share one socket to the zygote, which holds few at a time: the others wait.
    watched = {}
    for i in range(60):
        reason = ("done", i, "r" * 40_000)
        pid, ref = otp.spawn_monitor(procs.exit_with_when_told, reason)
        watched[ref] = (pid, reason)
    for pid, _ in watched.values():
        otp.send(pid, "go")
    while watched:
        down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref in watched, timeout=30)
        assert down.reason == watched.pop(down.ref)[1]


def test_killing_the_embedding_program_ends_every_process_of_its_node():
    harness, info = _start_embedding_program()
    node_pids = [info["agent"], info["zygote"], *info["children"]]
    assert all(psutil.pid_exists(p) for p in node_pids)
    os.kill(info["program"], signal.SIGKILL)
    assert _gone_within(node_pids, timeout=1.0) == []
    harness.stdin.close()
    harness.wait(10)
    assert not os.path.exists(info["rundir"])  # the agent removed it on its way out


def test_killing_the_node_agent_ends_every_process_of_its_node():
    harness, info = _start_embedding_program()
    node_pids = [info["zygote"], *info["children"]]
    os.kill(info["agent"], signal.SIGKILL)
    assert _gone_within(node_pids, timeout=1.0) == []
    os.kill(info["program"], signal.SIGKILL)
    harness.stdin.close()
    harness.wait(10)
    # The killed agent could not remove its run directory: the next node start does.
    assert os.path.exists(info["rundir"])
    assert info["rundir"] in remove_stale_rundirs()


def test_a_stale_run_directory_without_its_agent_is_removed_at_the_next_start():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tempfile.mkdtemp(prefix=RUNDIR_PREFIX + "stale-", dir=rundir_base())
    with open(os.path.join(stale, "owner"), "w") as f:
        f.write(f"{dead.pid} 12345.0\n")
    open(os.path.join(stale, "7"), "w").close()
    with otp.Node():
        assert not os.path.exists(stale)


def test_a_malformed_signal_frame_among_good_ones_is_dropped(node):
    trapper = otp.spawn(procs.trap_and_forward, otp.self())
    otp.receive(timeout=10)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.connect(protocol.endpoint(node.rundir, trapper.id))
    sock.send(b"\xc1s\xc1")
    sock.send(b"")
    sock.send(b"\xc1s\x92")
    sock.close(linger=1000)
    otp.exit(trapper, "are you there")
    assert otp.receive(timeout=10) == ("got", otp.Exit(otp.self(), "are you there"))
    otp.exit(trapper, "kill")


def test_stopping_the_node_wakes_a_thread_blocked_in_receive():
    import threading
    outcome = []
    ready = threading.Event()

    def blocked():
        otp.self()
        ready.set()
        try:
            otp.receive()
        except otp.ExitError as exc:
            outcome.append(exc.reason)

    with otp.Node():
        thread = threading.Thread(target=blocked)
        thread.start()
        assert ready.wait(10)
    thread.join(10)
    assert outcome == ["shutdown"]
