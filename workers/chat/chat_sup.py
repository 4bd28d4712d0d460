"""The chat's supervision tree, and its acceptor."""
from __future__ import annotations

import otp
from workers.chat.chat_session import ChatSession
from workers.chat.room_manager import NAME as ROOM_MANAGER, RoomManager

SESSIONS = "chat_sessions"


def acceptor(port: int, report: otp.Pid | None = None) -> None:
    """Accept connections for ever, each handed to a new session process."""
    listener = otp.tcp.listen(port)
    if report is not None:
        otp.send(report, ("listening", listener.getsockname()[1]))
    while True:
        conn, _ = listener.accept()
        otp.supervisor.start_child(SESSIONS, (otp.tcp.offer(conn),))


class ChatSessions(otp.Supervisor):
    """One temporary ChatSession per connection."""

    def init(self):
        return otp.SupFlags("simple_one_for_one", intensity=10, period=10), [
            otp.child_spec("session", ChatSession, restart="temporary", shutdown="brutal_kill")]


class ChatSup(otp.Supervisor):
    def init(self, port: int, report: otp.Pid | None = None):
        return otp.SupFlags("one_for_one", intensity=10, period=10), [
            otp.child_spec(SESSIONS, ChatSessions, type="supervisor", name=SESSIONS),
            otp.child_spec("room_manager", RoomManager, args=(SESSIONS,), name=ROOM_MANAGER),
            otp.child_spec("acceptor", acceptor, args=(port, report), shutdown="brutal_kill"),
        ]
