"""The process API of DESIGN section 2: spawn, send, receive, links, monitors, exits, names.

Each function acts for the calling process: the process the node spawned this code in, or, in
a program that embeds otp, the calling thread (which becomes a process of the node on first use,
the node itself starting if none runs).

    pid = otp.spawn(worker.main, 42)
    otp.send(pid, ("hello", otp.self()))
    reply = otp.receive(match=lambda m: m[0] == "hi", timeout=1.0)
"""
from __future__ import annotations

from typing import Any, Callable

from otp.runtime import current
from otp.terms import Pid, Ref


def spawn(func: Callable, *args: Any) -> Pid:
    """Run ``func(*args)`` in a new OS process of the node; return its pid at once.

    ``func`` must be importable (a module-level function); ``args`` must be encodable.
    """
    return current().spawn(func, args, link=False, monitor=False)[0]


def spawn_link(func: Callable, *args: Any) -> Pid:
    """Like ``spawn``, and link the new process to the caller atomically."""
    return current().spawn(func, args, link=True, monitor=False)[0]


def spawn_monitor(func: Callable, *args: Any) -> tuple[Pid, Ref]:
    """Like ``spawn``, and monitor the new process atomically; return ``(pid, ref)``."""
    pid, ref = current().spawn(func, args, link=False, monitor=True)
    return pid, ref


def self() -> Pid:
    """The pid of the calling process."""
    return current().pid


def node() -> str:
    """The name of the node of the calling process (``nonode@nohost`` for an unnamed node)."""
    return current().node.name


def nodes() -> list[str]:
    """The other nodes of the cluster that are up, as this node knows them."""
    return current().nodes()


def monitor_nodes(flag: bool) -> None:
    """Subscribe the caller (``True``) to ``NodeUp(node)`` and ``NodeDown(node, reason)``
    messages, or unsubscribe it (``False``), as Erlang's ``net_kernel:monitor_nodes``."""
    current().monitor_nodes(flag)


def send(dest: Any, msg: Any) -> None:
    """Send ``msg`` to a Pid, a registered name, ``(name, node)`` or ``("global", name)``.

    Messages from one process to another arrive in the order sent. A message to a dead pid is
    dropped silently; a name that is not registered raises ``otp.NoProc``; a message that
    cannot be encoded raises ``TypeError`` here, in the sender.
    """
    current().send(dest, msg)


def receive(match: Any = None, timeout: float | str | None = None) -> Any:
    """Take the first message that ``match`` accepts; the others stay in the mailbox, in order.

    ``match`` is a predicate, a type or a tuple of types (``isinstance``), or None for any
    message. Raises ``otp.Timeout`` when nothing matches within ``timeout`` seconds.

        down = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=5)
    """
    return current().receive(match, timeout)


def link(pid: Pid) -> None:
    """Link the caller and ``pid``: when one dies abnormally, the other dies too (or traps it).

    A pid that is not alive raises ``otp.NoProc``, or, if the caller traps exits, delivers
    ``Exit(pid, "noproc")``.
    """
    current().link(pid)


def unlink(pid: Pid) -> None:
    """Remove the link between the caller and ``pid``, if any."""
    current().unlink(pid)


def monitor(target: Any) -> Ref:
    """Monitor a pid, a registered name or ``(name, node)``; a ``Down(ref, pid, reason)``
    arrives when it dies.

    A target that is not alive delivers ``Down(ref, target, "noproc")`` at once; one on a node
    that is (or goes) down delivers ``Down(ref, target, "noconnection")``.
    """
    return current().monitor(target)


def demonitor(ref: Ref, flush: bool = False) -> None:
    """Turn a monitor off: no ``Down`` for ``ref`` arrives after this; ``flush`` drops one
    already in the mailbox."""
    current().demonitor(ref, flush)


def exit(pid: Pid, reason: Any) -> None:  # noqa: A001 - Erlang's name
    """Send an exit signal with ``reason`` to ``pid`` (Erlang's ``exit/2``).

    A process that traps exits receives ``Exit(sender, reason)``; one that does not dies with
    ``reason`` unless it is ``"normal"``. ``"kill"`` cannot be trapped: the target dies with
    ``"killed"``.
    """
    current().exit(pid, reason)


def trap_exit(flag: bool) -> bool:
    """Set whether exit signals arrive as ``otp.Exit`` messages; return the previous setting."""
    return current().trap_exit(flag)


def register(name: str, pid: Pid) -> None:
    """Register ``pid`` under ``name`` on this node; ``ValueError`` if either is taken or dead."""
    current().register(name, pid)


def unregister(name: str) -> None:
    """Remove a registered name; ``ValueError`` if it is not registered."""
    current().unregister(name)


def whereis(name: str) -> Pid | None:
    """The pid registered under ``name`` on this node, or None."""
    return current().whereis(name)


def registered() -> list[str]:
    """Every name registered on this node."""
    return current().registered()


def is_alive(pid: Pid) -> bool:
    """Whether a process of this node is alive."""
    return current().is_alive(pid)


def os_pid(pid: Pid) -> int | None:
    """The OS process behind a pid of this node (None if it is not alive)."""
    return current().os_pid(pid)
