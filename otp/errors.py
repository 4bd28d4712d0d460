"""Every public exception of otp, each saying when it is raised.

Exit reasons are plain values (strings and tuples, see DESIGN section 3); exceptions that carry one
keep it in their ``reason`` attribute so callers can match on it.
"""
from __future__ import annotations

from typing import Any


class OtpError(Exception):
    """Base class of every otp exception."""


class NoProc(OtpError):
    """Raised when a message or a call targets a process or a name that does not exist.

    ``target`` is the pid or name that was not found.
    """

    def __init__(self, target: Any) -> None:
        super().__init__(f"no process: {target!r}")
        self.target = target


class ExitError(OtpError):
    """Raised when a process exits, or must exit, with ``reason``.

    Raise it in a process to exit with that reason (Erlang's ``exit(Reason)``). otp raises it in
    the calling thread of an embedded program when an exit signal kills that thread's process,
    and from ``otp.call`` when the server dies during the call.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"process exited: {self.reason!r}"


class Timeout(OtpError, TimeoutError):
    """Raised by ``otp.receive`` when no matching message arrives within its timeout."""


class CallTimeout(Timeout):
    """Raised by ``otp.call`` (and ``otp.stop``) when no answer comes within the timeout.

    A reply that comes later is dropped: it never reaches the caller's mailbox.
    """


class StartError(OtpError):
    """Raised when a server does not start: ``reason`` as Erlang's ``{error, Reason}``.

    The reason is what ``init`` stopped with (``otp.Stop(reason)``), its exception as
    ``("exception", type, message, traceback)``, or ``"timeout"``.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"server did not start: {self.reason!r}"


class AlreadyStarted(StartError):
    """Raised when a server's name is taken; ``pid`` is the process that holds it."""

    def __init__(self, pid: Any) -> None:
        super().__init__(("already_started", pid))
        self.pid = pid


_NO_REPLY = object()


class Stop(OtpError):
    """Return or raise it from a GenServer callback to stop the server with ``reason``.

    From ``handle_call``, ``reply=`` answers the caller once ``terminate`` has run. Raised in
    ``init``, it makes the start fail with ``reason``.
    """

    def __init__(self, reason: Any = "normal", reply: Any = _NO_REPLY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = None if reply is _NO_REPLY else reply
        self.has_reply = reply is not _NO_REPLY


class NodeError(OtpError):
    """Raised when the node cannot start, is not running, or its agent is gone."""


class DecodeError(OtpError):
    """Raised when a frame cannot be decoded (malformed, truncated, too large, too deep)."""


class ChildSpecError(OtpError, ValueError):
    """Raised when a child spec or supervisor flags are invalid; names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"child spec field {field!r} {reason}")
        self.field = field
        self.reason = reason


class SupervisorError(OtpError):
    """Raised by the ``otp.supervisor`` functions when the supervisor refuses a request:
    ``reason`` as Erlang's ``{error, Reason}`` (``"not_found"``, ``"running"``,
    ``"already_present"``, ``("already_started", pid)``, a start failure's reason...)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason
