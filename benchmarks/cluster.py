"""The cluster through the broker: a call to a global name on another node vs a local call,
routing throughput between two nodes, and the time to see a SIGKILLed node go down.

Targets: global call p50 <= 3x the local call; routing >= 50k msgs/s.

The broker and the other nodes run as ``python -m otp broker`` and ``python -m otp run``,
each in its own process tree; this program is node ``bench_a``. Side by side, in the same
repetitions: the raw pyzmq floor (a direct round trip vs round trips through a CURVE broker
with 3 and 4 hops each way, ``benchmarks.broker_floor``) and Erlang's own ratio of a
``gen_server:call`` to another node to one within the node, when ``erl`` is installed.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import otp
from benchmarks import broker_floor, procs, roundtrip
from benchmarks.common import REPETITIONS, emit, median, percentile
from benchmarks.erlang_call import erlang_remote_and_local_call_times
from otp.broker import DEFAULT_TICK

COOKIE = "bench-cookie"
CALLS = 2000
MESSAGES = 100_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RemoteNode:
    """``python -m otp run benchmarks.cluster:serve_remote`` as node ``name``."""

    def __init__(self, name: str, broker: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otp", "run", "benchmarks.cluster:serve_remote", "--name", name,
             "--cookie", COOKIE, "--broker", broker, "--preload", "benchmarks.procs"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.name, program, agent = self.proc.stdout.readline().split()
        self.os_pids = (int(program), int(agent))

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()

    def kill(self) -> None:
        for os_pid in self.os_pids:
            os.kill(os_pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc.stdout.close()
        self.proc.stdin.close()


class Spawner(otp.GenServer):
    """On the remote node: starts counters there for the throughput run."""

    def handle_call(self, request, caller):
        _, parent, count = request
        return otp.spawn(procs.counter, parent, count)


def serve_remote() -> None:
    """The root of a remote node: a global echo server and a spawner, until stdin closes."""
    from otp import local_node
    procs.Idle.start(name=("global", f"echo@{otp.node()}"))
    Spawner.start(name=("global", f"spawner@{otp.node()}"))
    node = local_node._running
    print(otp.node(), os.getpid(), node.agent_os_pid, flush=True)
    sys.stdin.read()


def throughput(sink_node: str | None) -> float:
    """Messages per second from a flooder here to a counter on ``sink_node`` (None: here)."""
    me = otp.self()
    if sink_node is None:
        counter = otp.spawn(procs.counter, me, MESSAGES)
    else:
        counter = otp.call(("global", f"spawner@{sink_node}"), ("counter", me, MESSAGES))
    otp.spawn(procs.flooder, counter, MESSAGES)
    _, elapsed = otp.receive(match=lambda m: type(m) is tuple and m[0] == "elapsed", timeout=300)
    return (MESSAGES - 1) / elapsed


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def run() -> None:
    address = free_address()
    broker = subprocess.Popen([sys.executable, "-m", "otp", "broker", "--bind", address, "--cookie", COOKIE],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    broker.stdout.readline()
    try:
        with otp.Node("bench_a", cookie=COOKIE, broker=address, preload=["benchmarks.procs"]):
            b = RemoteNode("bench_b", address)
            try:
                local = procs.Idle.start()
                remote = ("global", f"echo@{b.name}")
                p50 = {key: [] for key in ("local", "remote", "raw_direct", "raw_3_hops", "raw_4_hops",
                                           "erlang_remote", "erlang_local")}
                local_rate, remote_rate = [], []
                for _ in range(REPETITIONS):
                    p50["local"].append(percentile(procs.call_times(local, CALLS), 0.5))
                    p50["remote"].append(percentile(procs.call_times(remote, CALLS), 0.5))
                    p50["raw_direct"].append(percentile(roundtrip.raw_zmq_roundtrip(CALLS), 0.5))
                    p50["raw_3_hops"].append(percentile(broker_floor.brokered_roundtrip(CALLS, 3), 0.5))
                    p50["raw_4_hops"].append(percentile(broker_floor.brokered_roundtrip(CALLS, 4), 0.5))
                    erlang = erlang_remote_and_local_call_times(CALLS)
                    if erlang is not None:
                        p50["erlang_remote"].append(percentile(erlang[0], 0.5))
                        p50["erlang_local"].append(percentile(erlang[1], 0.5))
                    local_rate.append(throughput(None))
                    remote_rate.append(throughput(b.name))
            finally:
                b.stop()
            us = {key: median(values) * 1e6 for key, values in p50.items() if values}
            result = {"bench": "global_call", "calls": CALLS, "repetitions": REPETITIONS,
                      "local_call_p50_us": us["local"], "global_call_p50_us": us["remote"],
                      "ratio": us["remote"] / us["local"], "target_ratio_max": 3.0,
                      "raw_direct_p50_us": us["raw_direct"], "raw_3_hops_p50_us": us["raw_3_hops"],
                      "raw_4_hops_p50_us": us["raw_4_hops"],
                      "raw_3_hops_ratio": us["raw_3_hops"] / us["raw_direct"],
                      "raw_4_hops_ratio": us["raw_4_hops"] / us["raw_direct"],
                      "local_call_vs_raw_direct": us["local"] / us["raw_direct"]}
            if "erlang_remote" in us:
                result.update(erlang_remote_call_p50_us=us["erlang_remote"], erlang_local_call_p50_us=us["erlang_local"],
                              erlang_ratio=us["erlang_remote"] / us["erlang_local"])
            else:
                result.update(erlang="skipped: erl is not installed")
            emit(result)
            emit({"bench": "broker_throughput", "messages": MESSAGES, "repetitions": REPETITIONS,
                  "through_broker_msgs_per_s": median(remote_rate), "local_msgs_per_s": median(local_rate),
                  "target_min_msgs_per_s": 50_000})
            otp.monitor_nodes(True)
            detect = []
            for _ in range(3):
                victim = RemoteNode("bench_victim", address)
                otp.receive(match=lambda m: m == otp.NodeUp(victim.name), timeout=30)
                start = time.perf_counter()
                victim.kill()
                otp.receive(match=lambda m: isinstance(m, otp.NodeDown) and m.node == victim.name, timeout=60)
                detect.append(time.perf_counter() - start)
            emit({"bench": "nodedown", "kills": len(detect), "tick_s": DEFAULT_TICK,
                  "detect_p50_s": median(detect), "detect_max_s": max(detect), "erlang_default_s": "45-75"})
    finally:
        broker.terminate()
        broker.wait(10)
        broker.stdout.close()


if __name__ == "__main__":
    run()
