"""otp.tcp: a process owns a connection and gets its data as messages, once per active_once."""
from __future__ import annotations

import socket

import pytest

import otp
from tests import procs

pytestmark = pytest.mark.usefixtures("node")


def test_data_and_close_arrive_as_messages_one_chunk_per_active_once():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    otp.spawn(procs.tcp_client, otp.self(), port)
    server_side, _ = listener.accept()
    try:
        server_side.sendall(b"first")
        assert otp.receive(match=lambda m: type(m) is tuple and m[0] == "got", timeout=10) == ("got", b"first")
        server_side.sendall(b"second")
        assert otp.receive(match=lambda m: type(m) is tuple and m[0] == "got", timeout=10) == ("got", b"second")
        server_side.close()
        assert otp.receive(match=lambda m: m == "closed", timeout=10) == "closed"
    finally:
        listener.close()
