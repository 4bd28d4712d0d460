"""GenServer: Erlang's gen_server, each server its own OS process.

State lives on the instance; the callbacks run in the server's process, one message at a time::

    class KVStore(otp.GenServer):
        def init(self):
            self.data = {}

        def handle_call(self, request, caller):
            match request:
                case ("get", key):
                    return self.data.get(key)        # the reply

        def handle_cast(self, msg):
            match msg:
                case ("put", key, value):
                    self.data[key] = value

    pid = KVStore.start_link(name="kv")
    otp.cast("kv", ("put", "a", 1))
    assert otp.call("kv", ("get", "a")) == 1

``handle_call`` returns the reply, or ``otp.NOREPLY`` to answer later with ``otp.reply(caller,
value)`` (from any process), or ``otp.Stop(reason, reply=...)``. Any callback may return or raise
``otp.Stop(reason)`` to stop the server; ``terminate(reason)`` then runs, as it does after an
exception in a callback and, when the server traps exits, on an exit signal from its parent.
"""
from __future__ import annotations

import logging
from typing import Any

from otp.errors import AlreadyStarted, CallTimeout, ExitError, NoProc, StartError, Stop, Timeout
from otp.funcref import function_reference, load_function
from otp.runtime import CallDown, current
from otp.signals import exception_reason, is_abnormal
from otp.terms import NOCONNECTION, NOPROC, NORMAL, Exit, Pid, Ref

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT = 5.0
"""Seconds ``call`` waits for a reply by default (Erlang's 5000 ms)."""


class _Constant:
    """A named marker a callback returns (``otp.NOREPLY``, ``otp.IGNORE``)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"otp.{self._name}"


NOREPLY = _Constant("NOREPLY")
"""Returned by ``handle_call``: the reply comes later, through ``otp.reply(caller, value)``."""
IGNORE = _Constant("IGNORE")
"""Returned by ``init``: the server does not start; ``start`` returns None."""

_CALL, _CAST, _STOP = "$gen_call", "$gen_cast", "$gen_stop"


class GenServer:
    """Base class of a gen_server; override the callbacks you need (see the module doc)."""

    # ----------------------------------------------------------------- starting

    @classmethod
    def start_link(cls, *args: Any, name: Any = None, timeout: float | None = None) -> Pid | None:
        """Start the server in a new OS process linked to the caller; return its pid once
        ``init`` has returned (None if ``init`` returned ``otp.IGNORE``).

        Raises ``otp.StartError(reason)`` if ``init`` raised or returned ``otp.Stop(reason)``,
        failed (reason ``("exception", ...)``) or took longer than ``timeout`` seconds (reason
        ``"timeout"``; the process is killed), and ``otp.AlreadyStarted(pid)`` if ``name`` is
        taken. The caller is not linked to a server that failed to start.
        """
        return _start(cls, args, name, timeout, link=True)

    @classmethod
    def start(cls, *args: Any, name: Any = None, timeout: float | None = None) -> Pid | None:
        """Like ``start_link``, without the link."""
        return _start(cls, args, name, timeout, link=False)

    # ----------------------------------------------------------------- callbacks

    def init(self, *args: Any) -> Any:
        """Set the initial state on ``self``; return ``otp.IGNORE`` or raise ``otp.Stop`` to
        not start."""

    def handle_call(self, request: Any, caller: tuple[Pid, Ref]) -> Any:
        """Answer a ``call``: return the reply, ``otp.NOREPLY`` or ``otp.Stop``."""
        raise NotImplementedError(f"{type(self).__qualname__} does not handle calls: {request!r:.80}")

    def handle_cast(self, msg: Any) -> Any:
        """Handle a ``cast``; return None or ``otp.Stop``."""
        raise NotImplementedError(f"{type(self).__qualname__} does not handle casts: {msg!r:.80}")

    def handle_info(self, msg: Any) -> Any:
        """Handle any other message (``Exit``, ``Down``, plain sends); return None or ``otp.Stop``."""
        log.warning("%s %r got an unexpected message, dropped: %.200r", type(self).__qualname__, _self_pid(), msg)

    def terminate(self, reason: Any) -> None:
        """Clean up before the server exits with ``reason`` (not called when it is killed)."""

    def code_change(self, old_vsn: Any, extra: Any) -> None:
        """Upgrade the state on ``self`` from ``old_vsn`` (kept for Erlang's callback set)."""

    # Internal (a supervisor's): once no message has come for ``_idle_after`` seconds, the loop
    # runs ``_on_idle`` once.
    _idle_after: float | None = None

    def _on_idle(self) -> None:
        pass


# --------------------------------------------------------------------- client API

def call(server: Any, request: Any, timeout: float | str | None = DEFAULT_CALL_TIMEOUT) -> Any:
    """Send ``request`` to a server and wait for its reply (Erlang's ``gen_server:call``).

    ``server`` is a Pid or a registered name. The caller monitors the server for the call: a
    server that is not there raises ``otp.NoProc`` at once, one that dies before replying
    raises ``otp.ExitError(reason)`` at once, and no reply within ``timeout`` seconds raises
    ``otp.CallTimeout``. A reply that comes after the timeout is dropped, never delivered.
    """
    rt = current()
    pid = _resolve(rt, server)
    if pid == rt.pid:
        raise ExitError("calling_self")
    if timeout == "infinity":
        timeout = None
    key = rt.make_ref()
    try:
        answer = rt.call(pid, (_CALL, (rt.pid, key), request), key, timeout)
    except Timeout:
        raise CallTimeout(f"no reply from {server!r} within {timeout} s") from None
    if type(answer) is CallDown:
        if answer.reason == NOPROC:
            raise NoProc(server)
        if answer.reason == NOCONNECTION:  # as Erlang: the call exits {nodedown, Node}
            raise ExitError(("nodedown", pid.node if type(pid) is Pid else pid[1]))
        raise ExitError(answer.reason)
    return answer


def cast(server: Any, msg: Any) -> None:
    """Send ``msg`` to a server's ``handle_cast``; never raises for a server that is not there."""
    rt = current()
    try:
        pid = _resolve(rt, server)
    except NoProc:
        return
    rt.send(pid, (_CAST, msg))


def reply(caller: tuple[Pid, Ref], value: Any) -> None:
    """Answer a call whose ``handle_call`` returned ``otp.NOREPLY``; from any process."""
    if not (type(caller) is tuple and len(caller) == 2 and type(caller[0]) is Pid):
        raise TypeError(f"reply needs the caller handle_call was given; got {caller!r}")
    current().reply(caller, value)


def stop(server: Any, reason: Any = NORMAL, timeout: float | str | None = None) -> None:
    """Stop a server with ``reason``, its ``terminate`` run; return once it has exited.

    Raises ``otp.NoProc`` if it is not there, ``otp.CallTimeout`` if it takes longer than
    ``timeout`` seconds, and ``otp.ExitError`` if it exits with another reason (its
    ``terminate`` failed).
    """
    rt = current()
    pid = _resolve(rt, server)
    if timeout == "infinity":
        timeout = None
    ref = rt.monitor(pid)
    rt.send(pid, (_STOP, reason))
    try:
        answer = rt.await_answer(ref, timeout)
    except Timeout:
        rt.demonitor(ref, flush=False)
        raise CallTimeout(f"{server!r} did not stop within {timeout} s") from None
    if answer.reason == NOPROC:
        raise NoProc(server)
    if answer.reason != reason:
        raise ExitError(answer.reason)


def _resolve(rt: Any, server: Any) -> Pid | tuple[str, str]:
    """The pid of ``server``, or the ``(name, node)`` pair of a name on another node (that
    node resolves it)."""
    pid = rt.resolve(server)
    return server if pid is None else pid


def _is_global(name: Any) -> bool:
    return type(name) is tuple and len(name) == 2 and name[0] == "global" and type(name[1]) is str and bool(name[1])


def _whereis(rt: Any, name: Any) -> Pid | None:
    return rt.global_whereis(name[1]) if _is_global(name) else rt.whereis(name)


def _register(rt: Any, name: Any) -> bool:
    if _is_global(name):
        return rt.register_global(name[1], rt.pid)
    try:
        rt.register(name, rt.pid)
        return True
    except ValueError:
        return False


def _unregister(rt: Any, name: Any) -> None:
    if _is_global(name):
        rt.unregister_global(name[1])
    else:
        rt.unregister(name)


def _self_pid() -> Pid:
    return current().pid


# --------------------------------------------------------------------- the server process

def _start(cls: type, args: tuple, name: Any, timeout: float | None, link: bool) -> Pid | None:
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise TypeError(f"start needs a GenServer subclass; got {cls!r}")
    if name is not None and not _is_global(name) and (type(name) is not str or not name):
        raise TypeError(f"a server name is a non-empty str or ('global', name); got {name!r}")
    rt = current()
    if name is not None:
        existing = _whereis(rt, name)
        if existing is not None:
            raise AlreadyStarted(existing)
    # The new process answers at the ref of the monitor on it: if it dies first, the monitor's
    # Down is the answer.
    ref = rt.make_ref()
    info = {"behaviour": "gen_server", "module": f"{cls.__module__}.{cls.__qualname__}"}
    pid, _ = rt.spawn(_serve, (function_reference(cls), args, name, rt.pid, ref, link), link=link, monitor=ref,
                      info=info)
    try:
        answer = rt.await_answer(ref, timeout)
    except Timeout:
        if link:
            rt.unlink(pid)
        rt.exit(pid, "kill")
        rt.await_answer(ref, None)
        raise StartError("timeout") from None
    rt.demonitor(ref, flush=False)
    if type(answer) is CallDown:
        raise StartError(answer.reason)
    status, detail = answer
    if status == "ok":
        return pid
    if status == "ignore":
        return None
    if status == "already_started":
        raise AlreadyStarted(detail)
    raise StartError(detail)


def _serve(class_ref: list, args: tuple, name: str | None, starter: Pid, start_ref: Ref, linked: bool) -> None:
    """The body of a server process: start, then loop over messages until a stop."""
    rt = current()
    parent = starter if linked else rt.pid

    def refuse(status: str, detail: Any, reason: Any) -> None:
        # Erlang (OTP 26): a failed init unregisters and unlinks before it answers, so the
        # starter sees neither the name nor an exit signal.
        if name is not None and status != "already_started":
            _unregister(rt, name)
        if linked:
            rt.unlink(starter)
        rt.reply((starter, start_ref), (status, detail))
        if reason != NORMAL:
            raise ExitError(reason)

    if name is not None and not _register(rt, name):
        return refuse("already_started", _whereis(rt, name), NORMAL)
    server = load_function(class_ref)()
    try:
        result = server.init(*args)
    except Stop as stop_:
        return refuse("error", stop_.reason, stop_.reason)
    except Exception as exc:
        reason = exception_reason(exc)
        return refuse("error", reason, reason)
    if result is IGNORE:
        return refuse("ignore", None, NORMAL)
    if isinstance(result, Stop):
        return refuse("error", result.reason, result.reason)
    rt.reply((starter, start_ref), ("ok", None))
    _loop(rt, server, parent)


def _loop(rt: Any, server: GenServer, parent: Pid) -> None:
    msg: Any = None
    try:
        while True:
            if server._idle_after is None:
                msg = rt.receive()
            else:
                try:
                    msg = rt.receive(timeout=server._idle_after)
                except Timeout:
                    server._idle_after = None
                    server._on_idle()
                    continue
            kind = msg[0] if type(msg) is tuple and msg else None
            if kind == _CALL and len(msg) == 3:
                caller, request = msg[1], msg[2]
                result = server.handle_call(request, caller)
                if isinstance(result, Stop):
                    _terminate(server, result.reason, msg)
                    if result.has_reply:
                        rt.reply(caller, result.reply)
                    _exit(result.reason)
                elif result is not NOREPLY:
                    rt.reply(caller, result)
            elif kind == _CAST and len(msg) == 2:
                result = server.handle_cast(msg[1])
                if isinstance(result, Stop):
                    raise result
            elif kind == _STOP and len(msg) == 2:
                _terminate(server, msg[1], msg)
                _exit(msg[1])
            elif type(msg) is Exit and msg.pid == parent and parent != rt.pid:
                _terminate(server, msg.reason, msg)   # only seen when trapping exits
                _exit(msg.reason)
            else:
                result = server.handle_info(msg)
                if isinstance(result, Stop):
                    raise result
    except Stop as stop_:
        _terminate(server, stop_.reason, msg)
        if stop_.has_reply and type(msg) is tuple and msg and msg[0] == _CALL:
            rt.reply(msg[1], stop_.reply)
        _exit(stop_.reason)
    except ExitError:
        raise
    except Exception as exc:
        reason = exception_reason(exc)
        _crash_report(server, msg, reason)
        _terminate(server, reason, msg, reported=True)
        _exit(reason)


def _terminate(server: GenServer, reason: Any, msg: Any, reported: bool = False) -> None:
    try:
        server.terminate(reason)
    except Exception as exc:  # a failing terminate becomes the exit reason (Erlang does this too)
        reason = exception_reason(exc)
        _crash_report(server, msg, reason)
        _exit(reason)
    if is_abnormal(reason) and not reported:
        _crash_report(server, msg, reason)


def _crash_report(server: GenServer, msg: Any, reason: Any) -> None:
    detail = reason[3] if type(reason) is tuple and len(reason) == 4 and reason[0] == "exception" else repr(reason)
    log.error("GenServer %s %r terminating\n** Last message in was %.500r\n** Reason for termination ==\n%s",
              type(server).__qualname__, _self_pid(), msg, detail)


def _exit(reason: Any) -> None:
    if reason == NORMAL:
        raise _NormalExit()
    raise ExitError(reason)


class _NormalExit(ExitError):
    def __init__(self) -> None:
        super().__init__(NORMAL)

