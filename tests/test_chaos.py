"""The chaos monkey: reproducible choices, and a record of what restarted each victim."""
from __future__ import annotations

import pytest

import otp
from otp.chaos import ChaosMonkey
from tests.servers import Worker

pytestmark = pytest.mark.usefixtures("node")


def _tree():
    specs = [otp.child_spec(n, Worker, args=(otp.self(), n)) for n in ("a", "b", "c", "d")]
    return otp.Supervisor.start(specs, intensity=1000, period=1)


def test_the_same_seed_makes_the_same_choices_and_each_kill_is_restarted():
    runs = []
    for _ in range(2):
        sup = _tree()
        record = ChaosMonkey(sup, rate=20, kinds=("kill", "segv"), seed=42, duration=0.6).run()
        runs.append([(e["position"], e["kind"]) for e in record])
        assert len(record) >= 5
        for entry in record:
            assert entry["supervisor"] == sup and entry["child_id"] in ("a", "b", "c", "d")
            assert entry["restart_ms"] is not None and entry["restart_ms"] > 0
            assert isinstance(entry["new_pid"], otp.Pid) and entry["new_pid"] != entry["pid"]
        assert len(otp.supervisor.which_children(sup)) == 4
        otp.stop(sup, "shutdown")
    common = min(map(len, runs))
    assert runs[0][:common] == runs[1][:common]
    other = ChaosMonkey(_tree(), rate=20, kinds=("kill", "segv"), seed=7, duration=0.6)
    assert [(e["position"], e["kind"]) for e in other.run()][:common] != runs[0][:common]


def test_a_stopped_victim_is_frozen_then_resumed():
    sup = _tree()
    record = ChaosMonkey(sup, rate=50, kinds=("stop",), seed=1, stop_seconds=0.1, duration=0.2).run()
    assert record and all(e["kind"] == "stop" for e in record)
    for _, pid, _, _ in otp.supervisor.which_children(sup):   # every child answers again
        assert otp.call(pid, "ping", timeout=10)[0] == "pong"
    assert all(e["new_pid"] is None for e in record)          # frozen, not restarted


def test_a_monkey_started_on_a_thread_stops_on_demand_with_its_record():
    sup = _tree()
    for _ in range(4):
        otp.receive(match=lambda m: type(m) is tuple and m[0] == "started", timeout=10)
    monkey = ChaosMonkey(sup, rate=20, kinds=("kill",), seed=3).start()
    restarted = otp.receive(match=lambda m: type(m) is tuple and m[0] == "started", timeout=10)
    record = monkey.stop()
    assert record and record[0]["kind"] == "kill"
    assert restarted[1] in {e["child_id"] for e in record}
