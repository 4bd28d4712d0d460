"""The article's chat with real TCP clients: rooms, a killed session, a killed room manager."""
from __future__ import annotations

import os
import signal
import socket

import pytest

import otp
from otp.pytest_plugin import wait_for
from workers.chat.chat_sup import ChatSup
from workers.chat.room_manager import NAME as ROOM_MANAGER


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("r")

    def say(self, line: str) -> None:
        self.sock.sendall((line + "\n").encode())

    def line(self) -> str:
        return self.file.readline().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _members(room):
    return otp.call(ROOM_MANAGER, ("members", room))


@pytest.fixture
def chat(cluster):
    """A chat tree on a free port; ``join(room)`` connects a client that joined ``room`` and
    returns it with its session's pid. Clients and tree are stopped at the end."""
    sup = ChatSup.start(0, otp.self())
    _, port = otp.receive(match=lambda m: type(m) is tuple and m[0] == "listening", timeout=10)
    clients = []

    def join(room):
        before = set(_members(room))
        client = Client(port)
        clients.append(client)
        client.say(f"JOIN {room}")
        assert client.line() == f"OK JOIN {room}"
        (session,) = set(_members(room)) - before
        return client, session
    yield join
    for client in clients:
        client.close()
    otp.stop(sup, "shutdown")


def test_two_clients_in_a_room_exchange_messages(chat):
    alice, _ = chat("lobby")
    bob, _ = chat("lobby")
    alice.say("lobby hello bob")
    assert bob.line() == "lobby hello bob"
    bob.say("lobby hi alice")
    assert alice.line() == "lobby hi alice"
    bob.say("elsewhere hm")
    assert bob.line().startswith("ERROR not in room elsewhere")


def test_a_killed_session_disconnects_only_its_client_and_leaves_the_room(chat):
    alice, alice_session = chat("lobby")
    bob, _ = chat("lobby")
    carol, _ = chat("lobby")
    os.kill(otp.os_pid(alice_session), signal.SIGKILL)
    assert alice.line() == ""                          # her connection closed with her session
    wait_for(lambda: alice_session not in _members("lobby"), what="the dead session out of the room")
    bob.say("lobby still here")
    assert carol.line() == "lobby still here"


def test_a_killed_room_manager_comes_back_and_the_room_goes_on(chat):
    alice, _ = chat("lobby")
    bob, _ = chat("lobby")
    old = otp.cluster.whereis_name("room_manager")
    os.kill(otp.os_pid(old), signal.SIGKILL)
    wait_for(lambda: otp.cluster.whereis_name("room_manager") not in (None, old), what="a new room manager")
    wait_for(lambda: len(_members("lobby")) == 2, what="the sessions back in their room")
    alice.say("lobby after the crash")
    assert bob.line() == "lobby after the crash"       # without reconnecting
