"""GenServer: ``otp.call`` round trip vs raw pyzmq+msgpack DEALER/ROUTER (and Erlang's own
``gen_server:call`` between two nodes when ``erl`` is installed), cast throughput vs raw
PUSH/PULL, and calls per second from 4 clients to 1 and to 4 servers.

Targets: call p50 <= 1.5x raw; call p50 <= Erlang's; casts >= 0.5x raw.
"""
from __future__ import annotations

import otp
from benchmarks import procs, roundtrip, throughput
from benchmarks.common import REPETITIONS, emit, median, percentile
from benchmarks.erlang_call import erlang_call_times

COUNT = 2000
CASTS = 100_000
CLIENTS = 4
LOAD_SECONDS = 2.0


def otp_call_times(count: int) -> list[float]:
    server = procs.CallServer.start()
    otp.spawn(procs.caller, otp.self(), server, count)
    _, times = otp.receive(match=lambda m: m[0] == "times", timeout=120)
    otp.stop(server)
    return times


def otp_cast_rate(count: int) -> float:
    server = procs.CallServer.start()
    otp.call(server, ("expect", count, otp.self()))
    otp.spawn(procs.caster, server, count)
    _, elapsed = otp.receive(match=lambda m: m[0] == "casts_done", timeout=300)
    otp.stop(server)
    return count / elapsed


def otp_calls_per_second(servers: int) -> float:
    pids = [procs.CallServer.start() for _ in range(servers)]
    go = ("go", otp.self())
    clients = [otp.spawn(procs.call_loop, otp.self(), pids[i % servers], go, LOAD_SECONDS) for i in range(CLIENTS)]
    for client in clients:
        otp.send(client, go)
    done = sum(otp.receive(match=lambda m: m[0] == "calls", timeout=120)[1] for _ in clients)
    for pid in pids:
        otp.stop(pid)
    return done / LOAD_SECONDS


def run() -> None:
    calls, raw_calls, casts, raw_casts, erlang = [], [], [], [], []
    with otp.Node("bench", preload=["benchmarks.procs"]):
        for _ in range(REPETITIONS):
            calls.append(otp_call_times(COUNT))
            raw_calls.append(roundtrip.raw_zmq_roundtrip(COUNT))
            casts.append(otp_cast_rate(CASTS))
            raw_casts.append(throughput.raw_throughput(CASTS))
            erlang_times = erlang_call_times(COUNT)
            if erlang_times is not None:
                erlang.append(erlang_times)
        one_server = otp_calls_per_second(1)
        four_servers = otp_calls_per_second(CLIENTS)
    p50 = median(percentile(t, 0.5) for t in calls) * 1e6
    raw_p50 = median(percentile(t, 0.5) for t in raw_calls) * 1e6
    result = {"bench": "gen_call", "repetitions": REPETITIONS, "count": COUNT,
              "otp_call_p50_us": p50, "otp_call_p99_us": median(percentile(t, 0.99) for t in calls) * 1e6,
              "raw_zmq_p50_us": raw_p50, "p50_ratio_vs_raw_zmq": p50 / raw_p50, "target_ratio_vs_raw": 1.5}
    if erlang:
        erlang_p50 = median(percentile(t, 0.5) for t in erlang) * 1e6
        result.update(erlang_call_p50_us=erlang_p50, p50_ratio_vs_erlang=p50 / erlang_p50, target_ratio_vs_erlang=1.0)
    else:
        result.update(erlang_call_p50_us=None, erlang="skipped: erl is not installed")
    emit(result)
    emit({"bench": "gen_cast", "repetitions": REPETITIONS, "count": CASTS,
          "otp_casts_per_s": median(casts), "raw_zmq_msgs_per_s": median(raw_casts),
          "ratio_vs_raw_zmq": median(casts) / median(raw_casts), "target_ratio": 0.5})
    emit({"bench": "gen_call_load", "clients": CLIENTS, "seconds": LOAD_SECONDS,
          "calls_per_s_to_1_server": one_server, f"calls_per_s_to_{CLIENTS}_servers": four_servers})


if __name__ == "__main__":
    run()
