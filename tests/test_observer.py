"""The observer: a node's supervision trees with their figures, in a snapshot and as JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import otp
from otp.observer import Observer, render
from tests import cluster_procs


def test_a_snapshot_shows_the_tree_in_start_order(node):
    from workers.app_sup import AppSup
    sup = AppSup.start_link(60.0, name="app_sup")
    observer = Observer()
    first = observer.snapshot()
    roots = [e for e in first if e["pid"] == sup]
    assert len(roots) == 1
    tree = roots[0]
    assert tree["behaviour"] == "supervisor" and tree["registered_name"] == "app_sup"
    assert [c["id"] for c in tree["children"]] == ["kv_store", "kv_logger"]
    store = tree["children"][0]
    assert store["os_pid"] == otp.os_pid(otp.whereis("kv_store")) and store["restarts"] == 0
    assert store["mailbox"] == 0 and store["memory_uss"] > 0 and store["cpu_percent"] is None
    second = observer.snapshot()
    assert [e for e in second if e["pid"] == sup][0]["children"][0]["cpu_percent"] is not None
    table = render(otp.node(), second)
    assert "kv_store" in table and "kv_logger" in table


def test_the_command_line_prints_a_remote_node_as_json(cluster):
    a = cluster.start("a")
    sup = a.run(cluster_procs.start_app_sup)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "otp", "observer", "--node", a.name, "--broker", cluster.broker.address,
                           "--cookie", "otp-pytest-cookie", "--once", "--json"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trees = json.loads(done.stdout)
    app = [t for t in trees if t["pid"] == repr(sup)][0]
    assert [c["id"] for c in app["children"]] == ["kv_store", "kv_logger"]
    assert all(c["os_pid"] > 0 and c["status"] in ("waiting", "running") for c in app["children"])


def test_the_chaos_command_line_prints_its_record(cluster):
    a = cluster.start("a")
    a.run(cluster_procs.start_app_sup)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "otp", "chaos", "--node", a.name, "--broker", cluster.broker.address,
                           "--cookie", "otp-pytest-cookie", "--rate", "4", "--duration", "1", "--seed", "1",
                           "--kinds", "kill"], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    record = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(record) >= 3 and all(e["kind"] == "kill" for e in record)
    supervised = [e for e in record if e["child_id"] in ("kv_store", "kv_logger")]
    assert supervised and all(e["restart_ms"] is not None for e in supervised)
