"""The floor under a call to another node: raw pyzmq+msgpack round trips through a CURVE broker.

Three relays of plain pyzmq, no otp code, show what a call through the broker costs before
any framework work: the client and the server on different "nodes", each node reaching the
other only through the broker (a ZeroMQ ROUTER over TCP with CURVE, as ``otp.Broker``).

- ``direct``: client DEALER -> server ROUTER over ipc (1 hop each way), the raw local call;
- ``3 hops``: client -> broker -> the server node's relay -> server, and back: the fewest hops
  a call through a broker can make when a process of another host is reachable only through
  its node (the client holding its own CURVE connection to the broker);
- ``4 hops``: client -> its node's relay -> broker -> the server node's relay -> server, and
  back: otp's route (a process's traffic to other nodes goes through its node's agent).

Each relay serves one client at a time (it remembers the last sender), which is all a
ping-pong needs.
"""
from __future__ import annotations

import multiprocessing
import shutil
import socket
import tempfile
import time

import msgpack
import zmq
import zmq.auth.thread

from benchmarks.roundtrip import WARMUP, _raw_server

_fork = multiprocessing.get_context("fork")


def _free_tcp() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _curve_client(ctx: zmq.Context, keys: dict, identity: bytes, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey = keys["client"]
    sock.curve_serverkey = keys["broker"][0]
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(address)
    return sock


def _broker(address: str, keys: dict) -> None:
    """A ROUTER with CURVE and a ZAP authenticator: [from, to, body] in, [to, from, body] out."""
    ctx = zmq.Context()
    auth = zmq.auth.thread.ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    sock = ctx.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_publickey, sock.curve_secretkey = keys["broker"]
    sock.bind(address)
    while True:
        sender, to, body = sock.recv_multipart()
        if to == b"stop":
            break
        sock.send_multipart([to, sender, body])
    sock.close(0)
    auth.stop()


def _server_relay(address: str, keys: dict, server: str) -> None:
    """The server's node: broker <-> ipc server."""
    ctx = zmq.Context()
    broker = _curve_client(ctx, keys, b"node_b", address)
    local = ctx.socket(zmq.DEALER)
    local.connect(server)
    poller = zmq.Poller()
    poller.register(broker, zmq.POLLIN)
    poller.register(local, zmq.POLLIN)
    sender = b""
    while True:
        for sock, _ in poller.poll():
            if sock is broker:
                sender, body = broker.recv_multipart()
                local.send(body)
                if msgpack.unpackb(body) == "stop":
                    return
            else:
                broker.send_multipart([sender, local.recv()])


def _client_relay(address: str, keys: dict, endpoint: str) -> None:
    """The client's node: ipc client <-> broker."""
    ctx = zmq.Context()
    broker = _curve_client(ctx, keys, b"node_a", address)
    local = ctx.socket(zmq.ROUTER)
    local.bind(endpoint)
    poller = zmq.Poller()
    poller.register(broker, zmq.POLLIN)
    poller.register(local, zmq.POLLIN)
    client = b""
    while True:
        for sock, _ in poller.poll():
            if sock is local:
                client, body = local.recv_multipart()
                broker.send_multipart([b"node_b", body])
                if msgpack.unpackb(body) == "stop":
                    return
            else:
                _, body = broker.recv_multipart()
                local.send_multipart([client, body])


def _client(count: int, out, connect) -> None:
    ctx = zmq.Context()
    sock, send, recv = connect(ctx)
    perf = time.perf_counter
    ping = msgpack.packb(["ping", 1])
    # A ROUTER drops what it cannot route yet: ping until the whole path answers, then
    # drain the extra answers.
    send(ping)
    while not sock.poll(200):
        send(ping)
    while sock.poll(200):
        recv()
    times = []
    for _ in range(WARMUP + count):
        start = perf()
        send(ping)
        msgpack.unpackb(recv())
        times.append(perf() - start)
    send(msgpack.packb("stop"))
    sock.close(linger=1000)  # the stop reaches the relays before the process goes
    ctx.term()
    out.send(times[WARMUP:])


def _via_broker(address: str, keys: dict):
    def connect(ctx):
        sock = _curve_client(ctx, keys, b"client", address)
        return sock, (lambda body: sock.send_multipart([b"node_b", body])), (lambda: sock.recv_multipart()[1])
    return connect


def _via_relay(endpoint: str):
    def connect(ctx):
        sock = ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        return sock, sock.send, sock.recv
    return connect


def brokered_roundtrip(count: int, hops: int) -> list[float]:
    """Round trip times through a broker with ``hops`` (3 or 4) hops each way."""
    rundir = tempfile.mkdtemp(prefix="bench-")
    address = _free_tcp()
    keys = {"broker": zmq.curve_keypair(), "client": zmq.curve_keypair()}
    server = f"ipc://{rundir}/server"
    procs = [_fork.Process(target=_raw_server, args=(server,)),
             _fork.Process(target=_broker, args=(address, keys)),
             _fork.Process(target=_server_relay, args=(address, keys, server))]
    if hops == 4:
        relay = f"ipc://{rundir}/relay"
        procs.append(_fork.Process(target=_client_relay, args=(address, keys, relay)))
        connect = _via_relay(relay)
    else:
        connect = _via_broker(address, keys)
    for proc in procs:
        proc.start()
    try:
        receiver, sender = _fork.Pipe(duplex=False)
        client = _fork.Process(target=_client, args=(count, sender, connect))
        client.start()
        if not receiver.poll(300):
            client.kill()
            raise RuntimeError("the brokered round trips did not finish within 300 s")
        times = receiver.recv()
        client.join()
        return times
    finally:
        stopper = zmq.Context()
        sock = _curve_client(stopper, keys, b"stopper", address)
        sock.send_multipart([b"stop", b""])
        sock.close(linger=1000)
        stopper.term()
        for proc in procs:
            proc.join(10)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        shutil.rmtree(rundir, ignore_errors=True)
