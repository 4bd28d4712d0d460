"""Supervisor rules against real OS processes (OTP-SEMANTICS section 3)."""
from __future__ import annotations

import os
import signal
import time

import pytest

import otp
from otp import supervisor as sup_api
from otp.pytest_plugin import wait_for
from tests.servers import FailingInit, Nested, Reporting, Worker, ignores_exits

pytestmark = pytest.mark.usefixtures("node")


def started(name, timeout=10):
    msg = otp.receive(match=lambda m: type(m) is tuple and m[:2] == ("started", name), timeout=timeout)
    return msg[2]


def any_start(timeout=10):
    return otp.receive(match=lambda m: type(m) is tuple and m[0] == "started", timeout=timeout)


def in_start_order(starts):
    """The names of ``starts`` in the order the children started: their messages, from
    different processes, may arrive in another."""
    return [m[1] for m in sorted(starts, key=lambda m: m[3])]


def down_of(ref, timeout=10):
    return otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=timeout)


def workers(*names, restart="permanent", **extra):
    return [otp.child_spec(n, Worker, args=(otp.self(), n), restart=restart, **extra) for n in names]


def start_sup(children, strategy="one_for_one", intensity=10, period=10, **flags):
    sup = otp.Supervisor.start_link(children, strategy=strategy, intensity=intensity, period=period, **flags)
    return sup, {spec.id: started(spec.id) for spec in children}


def kill(pid):
    os.kill(otp.os_pid(pid), signal.SIGKILL)


def assert_quiet(timeout=0.3):
    with pytest.raises(otp.Timeout):
        any_start(timeout)


def test_children_start_in_order_and_which_children_lists_them_so():
    sup, pids = start_sup(workers("a", "b", "c"))
    assert [(cid, pid) for cid, pid, *_ in sup_api.which_children(sup)] == [("a", pids["a"]), ("b", pids["b"]),
                                                                           ("c", pids["c"])]
    assert sup_api.count_children(sup) == {"specs": 3, "active": 3, "supervisors": 0, "workers": 3}


def test_one_for_one_restarts_only_the_failed_child():
    sup, pids = start_sup(workers("a", "b", "c"))
    os_pids = {k: otp.os_pid(p) for k, p in pids.items()}
    kill(pids["b"])
    new_b = started("b")
    assert new_b != pids["b"] and otp.call(new_b, "ping") == ("pong", "b")
    assert_quiet()
    assert {k: otp.os_pid(p) for k, p in pids.items() if k != "b"} == {k: v for k, v in os_pids.items() if k != "b"}


def test_one_for_all_restarts_every_child_in_start_order():
    sup, pids = start_sup(workers("a", "b", "c"), strategy="one_for_all")
    kill(pids["b"])
    assert in_start_order([any_start() for _ in range(3)]) == ["a", "b", "c"]
    assert not any(otp.is_alive(p) for p in pids.values())


def test_rest_for_one_restarts_the_failed_child_and_those_after_it():
    sup, pids = start_sup(workers("a", "b", "c", "d"), strategy="rest_for_one")
    kill(pids["b"])
    assert in_start_order([any_start() for _ in range(3)]) == ["b", "c", "d"]
    assert otp.is_alive(pids["a"])
    assert_quiet()


@pytest.mark.parametrize("restart, reason, restarted", [
    ("transient", "normal", False), ("transient", "shutdown", False), ("transient", ("shutdown", 1), False),
    ("transient", "crash", True), ("temporary", "crash", False), ("temporary", "normal", False),
    ("permanent", "normal", True),
])
def test_the_restart_type_decides_which_exits_restart(restart, reason, restarted):
    sup, pids = start_sup(workers("w", restart=restart))
    otp.cast(pids["w"], reason)
    if restarted:
        assert started("w") != pids["w"]
    else:
        assert_quiet()
        remaining = [cid for cid, *_ in sup_api.which_children(sup)]
        assert remaining == ([] if restart == "temporary" else ["w"])


def test_the_restart_after_intensity_takes_the_supervisor_down_with_shutdown():
    otp.trap_exit(True)
    try:
        sup, pids = start_sup(workers("w"), intensity=3, period=10)
        pid = pids["w"]
        for _ in range(3):
            kill(pid)
            pid = started("w")
        kill(pid)
        assert otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == sup, timeout=10).reason == "shutdown"
    finally:
        otp.trap_exit(False)


def reports(count, timeout=10):
    """The next ``count`` records a ``Reporting`` supervisor logged, as (level, message)."""
    return [otp.receive(match=lambda m: type(m) is tuple and m[0] == "log", timeout=timeout)[1:]
            for _ in range(count)]


def test_a_crashed_child_is_reported_with_its_supervisor_id_pid_and_reason():
    sup = Reporting.start_link(otp.self(), 10, ["a", "b"])
    started("a")
    b = started("b")
    kill(b)
    started("b")
    [(level, text)] = reports(1)
    assert level == "ERROR" and text.startswith("SUPERVISOR REPORT")
    for part in (f"supervisor={sup!r}", "context=child_terminated", "reason='killed'", "id='b'", f"pid={b!r}",
                 "restart=permanent", "type=worker"):
        assert part in text


def test_reaching_the_restart_intensity_is_reported_after_the_crash_that_reached_it():
    sup = Reporting.start(otp.self(), 0, ["w"])
    ref = otp.monitor(sup)
    kill(started("w"))
    (_, crash), (level, shutdown) = reports(2)
    assert "context=child_terminated" in crash and "reason='killed'" in crash
    assert level == "ERROR" and "context=shutdown" in shutdown and "reason='reached_max_restart_intensity'" in shutdown
    assert down_of(ref).reason == "shutdown"


def test_a_child_that_ignores_shutdown_is_killed_after_its_timeout():
    spec = otp.child_spec("stubborn", ignores_exits, args=(otp.self(), "stubborn"), shutdown=0.3)
    sup, pids = start_sup([spec])
    ref = otp.monitor(pids["stubborn"])
    sup_api.terminate_child(sup, "stubborn")
    assert down_of(ref).reason == "killed"
    assert sup_api.which_children(sup)[0][1] is None


def test_brutal_kill_kills_at_once():
    sup, pids = start_sup(workers("w", shutdown="brutal_kill"))
    ref = otp.monitor(pids["w"])
    sup_api.terminate_child(sup, "w")
    assert down_of(ref).reason == "killed"


def test_a_graceful_child_exits_with_shutdown_and_stops_in_reverse_order():
    sup, pids = start_sup(workers("a", "b", "c"))
    refs = {otp.monitor(p): k for k, p in pids.items()}
    otp.unlink(sup)                       # or its "shutdown" would take this process down too
    otp.stop(sup, "shutdown")
    downs = [otp.receive(match=otp.Down, timeout=10) for _ in range(3)]
    assert [refs[d.ref] for d in downs] == ["c", "b", "a"]
    assert {d.reason for d in downs} == {"shutdown"}


def test_escalation_through_a_nested_supervisor():
    top = Nested.start_link(otp.self(), 1)
    worker = started("inner_worker")
    inner = sup_api.which_children(top)[0][1]
    inner_ref = otp.monitor(inner)
    kill(worker)
    worker = started("inner_worker")
    kill(worker)                          # the second restart within the period: inner gives up
    assert down_of(inner_ref).reason == "shutdown"
    started("inner_worker")               # the top supervisor restarted inner, and inner its worker
    assert sup_api.which_children(top)[0][1] != inner


def test_a_child_failing_at_start_makes_the_supervisor_start_fail_and_stops_the_others():
    specs = workers("a") + [otp.child_spec("bad", FailingInit, args=(otp.self(), "bad"))]
    with pytest.raises(otp.StartError) as info:
        otp.Supervisor.start_link(specs)
    assert info.value.reason == ("shutdown", ("failed_to_start_child", "bad", "cannot start"))


def test_the_api_on_a_running_supervisor():
    sup, pids = start_sup(workers("a"))
    new = sup_api.start_child(sup, workers("b")[0])
    assert started("b") == new
    with pytest.raises(otp.SupervisorError) as info:
        sup_api.start_child(sup, workers("b")[0])
    assert info.value.reason == ("already_started", new)
    with pytest.raises(otp.SupervisorError, match="running"):
        sup_api.restart_child(sup, "b")
    sup_api.terminate_child(sup, "b")
    with pytest.raises(otp.SupervisorError, match="already_present"):
        sup_api.start_child(sup, workers("b")[0])
    restarted = sup_api.restart_child(sup, "b")
    assert started("b") == restarted
    sup_api.terminate_child(sup, "b")
    sup_api.delete_child(sup, "b")
    assert sup_api.get_childspec(sup, "a")["id"] == "a"
    for call in (sup_api.terminate_child, sup_api.restart_child, sup_api.delete_child, sup_api.get_childspec):
        with pytest.raises(otp.SupervisorError, match="not_found"):
            call(sup, "nobody")


def test_simple_one_for_one_starts_children_from_a_template():
    template = otp.child_spec("w", Worker, args=(otp.self(),), restart="transient")
    sup = otp.Supervisor.start_link([template], strategy="simple_one_for_one")
    one, two = sup_api.start_child(sup, ("one",)), sup_api.start_child(sup, ("two",))
    assert started("one") == one and started("two") == two
    assert [pid for _, pid, *_ in sup_api.which_children(sup)] == [one, two]
    kill(one)
    assert started("one") != one
    sup_api.terminate_child(sup, two)
    assert len(sup_api.which_children(sup)) == 1
    with pytest.raises(otp.SupervisorError, match="simple_one_for_one"):
        sup_api.delete_child(sup, "w")


def test_simple_one_for_one_finds_each_child_by_its_current_pid():
    template = otp.child_spec("w", Worker, args=(otp.self(),))
    sup = otp.Supervisor.start_link([template], strategy="simple_one_for_one")
    pids = [sup_api.start_child(sup, (str(i),)) for i in range(30)]
    for i, pid in enumerate(pids):
        assert started(str(i)) == pid
    kill(pids[-1])
    fresh = started("29")
    assert fresh != pids[-1]
    sup_api.terminate_child(sup, pids[-1])   # its pid before the restart: dead, so ok, as Erlang
    assert otp.is_alive(fresh)
    sup_api.terminate_child(sup, fresh)
    assert not otp.is_alive(fresh)
    sup_api.terminate_child(sup, pids[0])
    assert [pid for _, pid, *_ in sup_api.which_children(sup)] == pids[1:-1]


@pytest.mark.parametrize("spec, field", [
    ({"id": "x", "start": Worker, "colour": "red"}, "colour"),
    ({"id": "x", "start": Worker, "restart": "sometimes"}, "restart"),
    ({"id": "x", "start": Worker, "shutdown": -1}, "shutdown"),
    ({"id": "x", "start": lambda: None}, "start"),
    ({"start": Worker}, "id"),
    ({"id": "x", "start": Worker, "type": "boss"}, "type"),
])
def test_an_invalid_spec_is_rejected_with_its_field_before_anything_starts(spec, field):
    with pytest.raises(otp.ChildSpecError) as info:
        otp.Supervisor.start_link([spec])
    assert info.value.field == field


def test_duplicate_ids_and_bad_flags_are_rejected():
    with pytest.raises(otp.ChildSpecError, match="duplicate"):
        otp.Supervisor.start_link(workers("a", "a"))
    with pytest.raises(otp.ChildSpecError) as info:
        otp.Supervisor.start_link(workers("a"), strategy="one_for_most")
    assert info.value.field == "strategy"


def test_app_sup_from_the_article_restarts_one_child_and_leaves_the_other():
    from workers import kv_store
    from workers.app_sup import AppSup
    sup = AppSup.start_link(0.05, name="app_sup")
    kids = {cid: pid for cid, pid, *_ in sup_api.which_children(sup)}
    assert list(kids) == ["kv_store", "kv_logger"] and otp.whereis("kv_store") == kids["kv_store"]
    kv_store.put("k", "v")
    ref = otp.monitor(kids["kv_logger"])
    kill(kids["kv_logger"])
    down_of(ref)
    assert kv_store.get("k") == "v"                       # the store lived through it
    assert otp.whereis("kv_store") == kids["kv_store"]


def test_crashes_spaced_wider_than_the_period_never_escalate():
    sup, pids = start_sup(workers("w"), intensity=1, period=1)
    pid = pids["w"]
    for _ in range(3):
        kill(pid)
        pid = started("w")
        with pytest.raises(otp.Timeout):   # let the one-second window pass (Erlang counts whole seconds)
            otp.receive(match=lambda m: False, timeout=2.1)
    assert otp.is_alive(sup) and otp.call(pid, "ping") == ("pong", "w")


@pytest.mark.timeout(120)
def test_chaos_every_call_ends_and_all_children_come_back():
    import random
    from tests.servers import chaos_client
    names = [f"w{i}" for i in range(20)]
    specs = [otp.child_spec(n, Worker, args=(otp.self(), n), name=n) for n in names]
    sup = otp.Supervisor.start_link(specs, intensity=10_000, period=1)
    client = otp.spawn_link(chaos_client, otp.self(), names, 1)
    otp.receive(match=lambda m: m == "calling", timeout=10)  # the chaos starts once it calls
    rng = random.Random(2)
    kills = 0
    last_kill = time.monotonic()
    while kills < 200:
        pid = otp.whereis(rng.choice(names))
        os_pid = otp.os_pid(pid) if pid else None
        if os_pid:
            try:
                os.kill(os_pid, signal.SIGKILL)
                kills += 1
                last_kill = time.monotonic()
                continue
            except ProcessLookupError:
                pass
        if time.monotonic() - last_kill > 20:   # no child to kill for 20 s: say what is there
            try:   # the supervisor's API waits for ever: a call with a limit tells a stuck one
                children = otp.call(sup, ("which_children",), timeout=5)
            except otp.CallTimeout:
                children = "the supervisor does not answer"
            pytest.fail(f"after {kills} kills no child can be killed; children: {children}; "
                        f"processes: {otp.processes()}; last seen: {pid} at OS pid {os_pid}")
    otp.send(client, "stop")
    # Every call ended: the client, linked to us, would have taken us down with any other end.
    otp.receive(match=lambda m: type(m) is tuple and m[0] == "outcomes", timeout=60)
    for name in names:               # every child is back and answers
        while True:
            try:
                assert otp.call(name, "ping", timeout=10) == ("pong", name)
                break
            except (otp.NoProc, otp.ExitError):
                continue
    assert sup_api.count_children(sup)["active"] == 20


def test_a_restart_that_keeps_failing_is_retried_and_counts_until_escalation():
    from tests.servers import Blockable
    otp.trap_exit(True)
    try:
        spec = otp.child_spec("b", Blockable, args=(otp.self(), "b"))
        sup = otp.Supervisor.start_link([spec], intensity=3, period=10)
        pid = started("b")
        otp.register("block", otp.self())
        kill(pid)                           # every restart now fails: retried at once, each one counted
        assert otp.receive(match=lambda m: isinstance(m, otp.Exit) and m.pid == sup, timeout=10).reason == "shutdown"
    finally:
        otp.unregister("block")
        otp.trap_exit(False)


def test_check_childspecs_validates_without_starting_anything():
    assert [s.id for s in sup_api.check_childspecs(workers("a", "b"))] == ["a", "b"]
    with pytest.raises(otp.ChildSpecError):
        sup_api.check_childspecs([{"id": "a"}])


def _wait_for_status(sup, child_id, wanted, timeout=10.0):
    """which_children until child_id's pid entry satisfies wanted (each answer is an event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = {c[0]: c[1] for c in sup_api.which_children(sup)}[child_id]
        if wanted(entry):
            return entry
    raise AssertionError(f"{child_id} never reached the wanted state; last {entry!r}")


def test_which_children_shows_restarting_while_a_restart_keeps_failing_then_the_pid():
    from tests.servers import Blockable
    spec = otp.child_spec("b", Blockable, args=(otp.self(), "b"))
    sup = otp.Supervisor.start_link([spec], intensity=100_000, period=1)
    first = started("b")
    otp.register("block", otp.self())
    try:
        kill(first)
        assert _wait_for_status(sup, "b", lambda e: e == "restarting") == "restarting"
        assert sup_api.count_children(sup)["active"] == 0
    finally:
        otp.unregister("block")
    fresh = started("b")
    assert fresh != first
    assert _wait_for_status(sup, "b", lambda e: isinstance(e, otp.Pid)) == fresh
    assert otp.call(fresh, "ping") == ("pong", "blockable")


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_a_sibling_failing_to_restart_is_retried_with_its_group_until_it_starts(strategy):
    from tests.servers import Blockable
    specs = workers("a") + [otp.child_spec("b", Blockable, args=(otp.self(), "b"))] + workers("c")
    sup, pids = start_sup(specs, strategy=strategy, intensity=100_000, period=1)
    otp.register("block", otp.self())
    try:
        kill(pids["a"])
        assert _wait_for_status(sup, "b", lambda e: e == "restarting") == "restarting"
        assert {c[0]: c[1] for c in sup_api.which_children(sup)}["c"] in (None, "restarting")
    finally:
        otp.unregister("block")
    # Once b can start, the group comes back in start order: b, then c after it (b starts only
    # now, c only after b; a may have started more than once).
    starts = []
    while not {"b", "c"} <= {m[1] for m in starts}:
        starts.append(any_start())
    assert in_start_order(starts)[-2:] == ["b", "c"]
    final = {c[0]: c[1] for c in sup_api.which_children(sup)}
    assert all(isinstance(pid, otp.Pid) for pid in final.values())
    assert final["c"] != pids["c"] and final["b"] != pids["b"]
    for child_id in ("a", "b", "c"):
        otp.call(final[child_id], "ping")


def spare_of(sup, timeout=10):
    """The spare process ``sup`` keeps ahead for its next start (spawned without waiting)."""
    def find():
        for pid in otp.processes():
            info = otp.process_info(pid)
            if info and info["behaviour"] == "spare" and sup in info["links"]:
                return pid
        return None
    return wait_for(find, timeout, f"a spare process of {sup!r}")


def test_a_restart_hands_the_child_to_the_spare_process_the_supervisor_keeps_ahead():
    sup, pids = start_sup(workers("a"))
    spare = spare_of(sup)
    spare_os_pid = otp.os_pid(spare)
    assert otp.process_info(spare)["monitors"] == [sup]  # so that it exits with its supervisor
    kill(pids["a"])
    new_a = started("a")
    assert new_a == spare and otp.os_pid(new_a) == spare_os_pid
    assert otp.call(new_a, "ping") == ("pong", "a")
    # The supervisor tells the agent the child's facts once it has started: the agent may read
    # that after a request of ours sent later, from another process.
    info = wait_for(lambda: (i := otp.process_info(new_a))["child_id"] and i, what="the child's facts")
    assert (info["behaviour"], info["child_id"], info["restarts"], info["links"]) == ("gen_server", "a", 1, [sup])
    assert (info["monitors"], info["monitored_by"]) == ([], [otp.self()])  # the caller's watch only
    assert spare_of(sup) != spare  # and the next one waits


def test_a_spare_exits_with_its_supervisor_even_when_that_exits_normally():
    sup = otp.Supervisor.start(workers("a"))
    started("a")
    spare = spare_of(sup)
    ref = otp.monitor(spare)
    otp.stop(sup)  # "normal": an exit signal a linked process ignores
    assert down_of(ref).reason == "normal"


def test_a_spare_that_dies_idle_is_no_child_and_the_next_restart_spawns_as_usual():
    sup, pids = start_sup(workers("a"), intensity=1)
    spare = spare_of(sup)
    ref = otp.monitor(spare)
    kill(spare)
    assert down_of(ref).reason == "killed"
    kill(pids["a"])  # the one restart intensity 1 allows: the spare's death was not one
    new_a = started("a")
    assert new_a != spare and otp.call(new_a, "ping") == ("pong", "a")
    assert sup_api.count_children(sup) == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}


def test_a_supervisor_told_to_keep_no_spare_spawns_its_restarts():
    sup, pids = start_sup(workers("a"), spare=False)
    kill(pids["a"])
    new_a = started("a")
    assert otp.call(new_a, "ping") == ("pong", "a")
    sup_api.which_children(sup)  # whatever it asked of the node agent, it asked before answering
    assert otp.process_info(sup)["links"] == sorted([otp.self(), new_a], key=repr)
    with pytest.raises(otp.ChildSpecError, match="spare"):
        otp.Supervisor.start_link(workers("b"), spare="yes")


def test_a_named_child_restarted_in_the_spare_takes_its_name_again():
    sup, pids = start_sup([otp.child_spec("a", Worker, args=(otp.self(), "a"), name="named_a")])
    assert otp.whereis("named_a") == pids["a"]
    spare = spare_of(sup)
    kill(pids["a"])
    new_a = started("a")
    assert new_a == spare and otp.whereis("named_a") == new_a
    assert otp.call("named_a", "ping") == ("pong", "a")


def test_a_supervisor_child_restarted_in_the_spare_starts_its_own_children():
    top = Nested.start_link(otp.self(), 5)
    started("inner_worker")
    inner = sup_api.which_children(top)[0][1]
    spare = spare_of(top)
    inner_ref = otp.monitor(inner)
    kill(inner)
    assert down_of(inner_ref).reason == "killed"
    worker = started("inner_worker")      # the new inner supervisor started its worker
    assert sup_api.which_children(top)[0][1] == spare
    assert sup_api.which_children(spare)[0][1] == worker
    wait_for(lambda: otp.process_info(spare)["behaviour"] == "supervisor", what="the inner supervisor's facts")
