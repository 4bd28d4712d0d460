"""The values that cross the wire besides plain data: pids, refs and the signal messages.

All are frozen dataclasses: hashable, comparable, and usable in ``receive(match=...)``::

    msg = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Erlang's exit reasons that otp itself produces (DESIGN section 3).
NORMAL = "normal"
KILL = "kill"          # only as the argument of exit(pid, "kill")
KILLED = "killed"
SHUTDOWN = "shutdown"
NOPROC = "noproc"
NOCONNECTION = "noconnection"


@dataclass(frozen=True, slots=True)
class Pid:
    """A process identifier: the node it lives on, its number there, and the node's creation.

    ``creation`` tells apart two runs of a node with the same name, so a pid of a stopped node
    never reaches a process of a new one.
    """

    node: str
    id: int
    creation: int

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}>"


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference unique within a node run: the key of a monitor or of a call."""

    node: str
    creation: int
    owner: int
    serial: int

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{self.owner}.{self.serial}>"


@dataclass(frozen=True, slots=True)
class Exit:
    """A trapped exit signal: Erlang's ``{'EXIT', Pid, Reason}``."""

    pid: Pid
    reason: Any


@dataclass(frozen=True, slots=True)
class Down:
    """A monitor fired: Erlang's ``{'DOWN', Ref, process, Pid, Reason}``.

    ``pid`` is the monitored pid, or the name when the monitor was taken on a name.
    """

    ref: Ref
    pid: Any
    reason: Any


@dataclass(frozen=True, slots=True)
class NodeUp:
    """A node joined the cluster (``otp.monitor_nodes(True)``)."""

    node: str


@dataclass(frozen=True, slots=True)
class NodeDown:
    """A node left the cluster, with the reason (``otp.monitor_nodes(True)``)."""

    node: str
    reason: Any


@dataclass(frozen=True)
class Tcp:
    """Data arrived on a socket the process owns (``otp.tcp``, Erlang's ``{tcp, Socket, Data}``);
    ``sock`` is the socket's ``id``."""

    sock: int
    data: bytes


@dataclass(frozen=True)
class TcpClosed:
    """The peer closed a socket the process owns (Erlang's ``{tcp_closed, Socket}``)."""

    sock: int
