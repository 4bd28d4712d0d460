"""What a process is doing: Erlang's ``process_info`` and ``processes``, for local and remote pids.

    info = otp.process_info(pid)
    info["os_pid"], info["status"], info["mailbox"], info["memory_uss"], info["restarts"]

Fields: ``pid``, ``node``, ``os_pid``, ``registered_name``, ``behaviour`` (``"gen_server"``,
``"supervisor"``, ``"spare"`` for a supervisor's idle spare process, or None), ``module`` (the
behaviour's class), ``status`` (``"running"``, ``"waiting"``, ``"suspended"``: the OS process's
state), ``mailbox`` (messages waiting; None if the process is too busy to say within
``timeout``), ``links``, ``monitors``, ``monitored_by``,
``trap_exit``, ``memory_rss``, ``memory_uss`` (bytes), ``cpu_user``, ``cpu_system`` (seconds),
``started`` (epoch seconds), and for a supervised child ``supervisor``, ``child_id`` and
``restarts`` (how many times its supervisor has restarted it).
"""
from __future__ import annotations

from typing import Any

from otp.runtime import current
from otp.terms import Pid


def process_info(pid: Pid, timeout: float = 0.5) -> dict[str, Any] | None:
    """The fields above for ``pid`` (on this node or another), or None if it is not alive."""
    rt = current()
    info = rt.process_table_info(pid)
    if info is None:
        return None
    info["mailbox"] = rt.mailbox_length(pid, timeout)
    return info


def processes(node: str | None = None) -> list[Pid]:
    """The pids of every process of ``node`` (default: this node)."""
    return current().processes(node)
