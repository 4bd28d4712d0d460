"""Round trip of a small tuple between two otp processes, vs raw pyzmq+msgpack and a Pipe.

Targets: otp p50 <= 1.3x raw pyzmq+msgpack DEALER/ROUTER over ipc.
"""
from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time

import msgpack
import zmq

import otp
from benchmarks import procs
from benchmarks.common import REPETITIONS, emit, median, percentile

COUNT = 2000
WARMUP = 50
_fork = multiprocessing.get_context("fork")


def otp_roundtrip(count: int) -> list[float]:
    echo = otp.spawn(procs.echo)
    otp.spawn(procs.pinger, otp.self(), echo, count)
    _, times = otp.receive(match=lambda m: m[0] == "times", timeout=120)
    otp.send(echo, "stop")
    return times


def _raw_server(endpoint: str) -> None:
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        ident, data = sock.recv_multipart()
        msg = msgpack.unpackb(data)
        if msg == "stop":
            return
        sock.send_multipart([ident, msgpack.packb(msg)])


def _raw_client(endpoint: str, count: int, out) -> None:
    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(endpoint)
    perf = time.perf_counter
    times = []
    for i in range(WARMUP + count):
        start = perf()
        sock.send(msgpack.packb(["ping", 1]))
        msgpack.unpackb(sock.recv())
        times.append(perf() - start)
    sock.send(msgpack.packb("stop"))
    out.send(times[WARMUP:])


def _server_and_client(server: tuple, client: tuple) -> list[float]:
    """Run a peer server and a timing client, each a forked process; return the client's times."""
    server_proc = _fork.Process(target=server[0], args=server[1:])
    server_proc.start()
    receiver, sender = _fork.Pipe(duplex=False)
    client_proc = _fork.Process(target=client[0], args=(*client[1:], sender))
    client_proc.start()
    times = receiver.recv()
    client_proc.join()
    server_proc.join()
    return times


def raw_zmq_roundtrip(count: int) -> list[float]:
    rundir = tempfile.mkdtemp(prefix="bench-")
    endpoint = f"ipc://{rundir}/server"
    try:
        return _server_and_client((_raw_server, endpoint), (_raw_client, endpoint, count))
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def _pipe_server(conn) -> None:
    while True:
        msg = conn.recv()
        if msg == "stop":
            return
        conn.send(msg)


def _pipe_client(conn, count: int, out) -> None:
    perf = time.perf_counter
    times = []
    for _ in range(WARMUP + count):
        start = perf()
        conn.send(("ping", 1))
        conn.recv()
        times.append(perf() - start)
    conn.send("stop")
    out.send(times[WARMUP:])


def pipe_roundtrip(count: int) -> list[float]:
    a, b = _fork.Pipe()
    return _server_and_client((_pipe_server, b), (_pipe_client, a, count))


def run() -> None:
    runs: dict[str, list[list[float]]] = {"otp": [], "raw_zmq": [], "mp_pipe": []}
    with otp.Node("bench"):
        for _ in range(REPETITIONS):  # interleaved, so that noise hits every contender alike
            runs["otp"].append(otp_roundtrip(COUNT))
            runs["raw_zmq"].append(raw_zmq_roundtrip(COUNT))
            runs["mp_pipe"].append(pipe_roundtrip(COUNT))
    us = {name: (median(percentile(t, 0.5) for t in reps) * 1e6, median(percentile(t, 0.99) for t in reps) * 1e6)
          for name, reps in runs.items()}
    emit({"bench": "roundtrip", "message": "small tuple", "repetitions": REPETITIONS, "count": COUNT,
          "otp_p50_us": us["otp"][0], "otp_p99_us": us["otp"][1],
          "raw_zmq_p50_us": us["raw_zmq"][0], "raw_zmq_p99_us": us["raw_zmq"][1],
          "mp_pipe_p50_us": us["mp_pipe"][0], "mp_pipe_p99_us": us["mp_pipe"][1],
          "p50_ratio_vs_raw_zmq": us["otp"][0] / us["raw_zmq"][0], "target_ratio": 1.3,
          "p50_ratio_vs_mp_pipe": us["otp"][0] / us["mp_pipe"][0]})


if __name__ == "__main__":
    run()
