"""The room manager: which sessions are in which room; globally registered as ``room_manager``."""
from __future__ import annotations

from typing import Any

import otp

NAME = ("global", "room_manager")


class RoomManager(otp.GenServer):
    def init(self, sessions_sup: Any) -> None:
        self.rooms: dict[str, set[otp.Pid]] = {}
        self.watches: dict[otp.Pid, otp.Ref] = {}
        # Restarted, it knows no member: every live session is asked to join its rooms again.
        for _, pid, _, _ in otp.supervisor.which_children(sessions_sup):
            if isinstance(pid, otp.Pid):
                otp.cast(pid, "rejoin")

    def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("join", room, pid):
                self.rooms.setdefault(room, set()).add(pid)
                if pid not in self.watches:
                    self.watches[pid] = otp.monitor(pid)
                return "ok"
            case ("leave", room, pid):
                self.rooms.get(room, set()).discard(pid)
                return "ok"
            case ("members", room):
                return sorted(self.rooms.get(room, ()), key=lambda p: p.id)
        raise ValueError(f"unknown request {request!r}")

    def handle_cast(self, msg: Any) -> None:
        match msg:
            case ("say", room, sender, text):
                for member in self.rooms.get(room, ()):
                    if member != sender:
                        otp.send(member, ("chat", room, text))

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, otp.Down) and self.watches.pop(msg.pid, None) is not None:
            for members in self.rooms.values():
                members.discard(msg.pid)
