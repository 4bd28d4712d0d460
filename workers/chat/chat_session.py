"""One chat session per TCP connection, each its own OS process."""
from __future__ import annotations

from typing import Any

import otp
from workers.chat.room_manager import NAME as ROOM_MANAGER


class ChatSession(otp.GenServer):
    def init(self, ticket: str) -> None:
        self.sock = otp.tcp.claim(ticket)
        self.rooms: set[str] = set()
        self.buffer = b""
        self.sock.active_once()

    def handle_info(self, msg: Any) -> Any:
        if isinstance(msg, otp.Tcp):
            self.buffer += msg.data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                self._command(line.decode(errors="replace").strip())
            self.sock.active_once()
        elif isinstance(msg, otp.TcpClosed):
            return otp.Stop("normal")
        elif type(msg) is tuple and msg[0] == "chat":
            _, room, text = msg
            self._write(f"{room} {text}")
        return None

    def handle_cast(self, msg: Any) -> None:
        if msg == "rejoin":  # a new room manager knows nobody yet
            for room in self.rooms:
                otp.call(ROOM_MANAGER, ("join", room, otp.self()))

    def terminate(self, reason: Any) -> None:
        self.sock.close()

    def _command(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if not line:
            return
        if word == "JOIN" and rest:
            otp.call(ROOM_MANAGER, ("join", rest, otp.self()))
            self.rooms.add(rest)
            self._write(f"OK JOIN {rest}")
        elif word == "LEAVE" and rest:
            otp.call(ROOM_MANAGER, ("leave", rest, otp.self()))
            self.rooms.discard(rest)
            self._write(f"OK LEAVE {rest}")
        elif word in self.rooms and rest:
            otp.cast(ROOM_MANAGER, ("say", word, otp.self(), rest))
        else:
            self._write(f"ERROR not in room {word}: JOIN it first")

    def _write(self, line: str) -> None:
        try:
            self.sock.send((line + "\n").encode())
        except OSError:
            pass  # the client is gone: its TcpClosed is on the way
