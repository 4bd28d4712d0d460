"""Exit-signal rules as pure functions (DESIGN section 3, OTP-SEMANTICS section 1).

Who dies, what is trapped, and how an OS-level death becomes an exit reason.
"""
from __future__ import annotations

import enum
import os
import signal
import traceback
from typing import Any

from otp.terms import KILL, KILLED, NORMAL


class Effect(enum.Enum):
    """What an exit signal does to the process that receives it."""

    IGNORE = "ignore"   # a "normal" exit signal to a process that does not trap exits
    TRAP = "trap"       # delivered as an otp.Exit message
    DIE = "die"         # the receiver exits with the signal's reason ("killed" for "kill")


def exit_signal_effect(reason: Any, trapping: bool, via_link: bool) -> tuple[Effect, Any]:
    """Decide what an exit signal with ``reason`` does, and the reason the receiver dies with.

    Only ``exit(pid, "kill")`` is untrappable; a process that *died* with reason ``"kill"``
    sends an ordinary, trappable signal to its links (as Erlang does).

    >>> exit_signal_effect("kill", True, via_link=False)
    (<Effect.DIE: 'die'>, 'killed')
    >>> exit_signal_effect("normal", False, via_link=True)
    (<Effect.IGNORE: 'ignore'>, 'normal')
    """
    if reason == KILL and not via_link:
        return Effect.DIE, KILLED
    if trapping:
        return Effect.TRAP, reason
    if reason == NORMAL:
        return Effect.IGNORE, reason
    return Effect.DIE, reason


def reason_from_wait_status(status: int) -> Any:
    """The exit reason of a process that died without reporting one, from its wait status.

    >>> reason_from_wait_status(9)           # killed by SIGKILL
    'killed'
    >>> reason_from_wait_status(3 << 8)      # os._exit(3)
    ('exit_code', 3)
    """
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGKILL:
            return KILLED
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"SIG{signum}"
        return ("signal", name)
    code = os.waitstatus_to_exitcode(status)
    return NORMAL if code == 0 else ("exit_code", code)


MAX_TRACEBACK_CHARS = 8_000


def exception_reason(exc: BaseException) -> tuple[str, str, str, str]:
    """The exit reason of an uncaught exception: ``("exception", type, message, traceback)``."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "...\n" + text[-MAX_TRACEBACK_CHARS:]
    return ("exception", type(exc).__qualname__, str(exc)[:2_000], text)


def is_abnormal(reason: Any) -> bool:
    """True for reasons that Erlang logs as crashes: anything but normal and shutdown forms."""
    return not (reason in (NORMAL, "shutdown") or (type(reason) is tuple and len(reason) == 2
                                                   and reason[0] == "shutdown"))
