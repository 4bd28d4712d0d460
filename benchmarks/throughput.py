"""One-way throughput between two otp processes vs raw pyzmq+msgpack PUSH/PULL over ipc.

Targets: otp >= 0.5x raw.
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
from benchmarks.common import REPETITIONS, emit, median

COUNT = 100_000
_fork = multiprocessing.get_context("fork")


def otp_throughput(count: int) -> float:
    receiver = otp.spawn(procs.counter, otp.self(), count)
    otp.spawn(procs.flooder, receiver, count)
    _, elapsed = otp.receive(match=lambda m: m[0] == "elapsed", timeout=300)
    return count / elapsed


def _raw_pull(endpoint: str, count: int, out) -> None:
    sock = zmq.Context().socket(zmq.PULL)
    sock.bind(endpoint)
    out.send("bound")
    msgpack.unpackb(sock.recv())
    start = time.perf_counter()
    for _ in range(count - 1):
        msgpack.unpackb(sock.recv())
    out.send(time.perf_counter() - start)


def _raw_push(endpoint: str, count: int, done) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(endpoint)
    for _ in range(count):
        sock.send(msgpack.packb(["data", 1]))
    # Exiting now could lose the tail: ZeroMQ drops what a full receiving pipe had not taken in
    # when its peer disconnects. Wait until the puller has everything.
    done.wait(300)
    sock.close(linger=0)
    ctx.term()


def raw_throughput(count: int) -> float:
    rundir = tempfile.mkdtemp(prefix="bench-")
    endpoint = f"ipc://{rundir}/pull"
    try:
        receiver, sender = _fork.Pipe(duplex=False)
        puller = _fork.Process(target=_raw_pull, args=(endpoint, count, sender))
        puller.start()
        receiver.recv()
        done = _fork.Event()
        pusher = _fork.Process(target=_raw_push, args=(endpoint, count, done))
        pusher.start()
        elapsed = receiver.recv()
        done.set()
        pusher.join()
        puller.join()
        return count / elapsed
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def run() -> None:
    ours, raw = [], []
    with otp.Node("bench"):
        for _ in range(REPETITIONS):
            ours.append(otp_throughput(COUNT))
            raw.append(raw_throughput(COUNT))
    emit({"bench": "throughput", "message": "small tuple", "repetitions": REPETITIONS, "count": COUNT,
          "otp_msgs_per_s": median(ours), "raw_zmq_msgs_per_s": median(raw),
          "ratio_vs_raw_zmq": median(ours) / median(raw), "target_ratio": 0.5})


if __name__ == "__main__":
    run()
