"""Supervisor: Erlang's supervisor, with every child an OS process linked to it.

Class form::

    class AppSup(otp.Supervisor):
        def init(self):
            return otp.SupFlags(strategy="one_for_one", intensity=5, period=10), [
                otp.child_spec("kv_store", KVStore), otp.child_spec("logger", KVLogger)]

    sup = AppSup.start_link(name="app_sup")

Direct form: ``otp.Supervisor.start_link(children, strategy=, intensity=, period=, name=)``.

The supervisor is a process that traps exits. Children start in order and stop in reverse
order; a child's exit is restarted according to its restart type and the strategy; more than
``intensity`` restarts within ``period`` seconds and the supervisor stops every child and exits
with ``"shutdown"``, which its own supervisor sees. The rules are Erlang's (see
OTP-SEMANTICS section 3); ``which_children`` lists children in start order.
"""
from __future__ import annotations

import functools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from otp import process
from otp.runtime import current
from otp.child_spec import ChildSpec, SupFlags, check_childspecs, normalize
from otp.errors import ChildSpecError, StartError, Stop, SupervisorError, Timeout
from otp.funcref import function_reference, load_function
from otp.gen_server import IGNORE, GenServer, call
from otp.signals import is_abnormal
from otp.terms import KILLED, Down, Exit, Pid

log = logging.getLogger(__name__)

RESTARTING = "restarting"
SPARE_AFTER_IDLE = 0.01
"""Seconds without a message after a start before a supervisor makes its next spare process: the
spare's making (a fork and a process start) then does not compete for the CPU with the child
just started, nor with its first callers."""
_TRY_AGAIN = "$sup_try_again"


class Supervisor:
    """Base class of a supervisor: ``init(*args)`` returns ``(otp.SupFlags(...), [child specs])``
    (or ``otp.IGNORE``)."""

    def init(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__}.init must return (SupFlags, children)")

    @classmethod
    def start_link(cls, *args: Any, name: Any = None, timeout: float | None = None, **flags: Any) -> Pid | None:
        """Start the supervisor and its children, linked to the caller; return its pid once
        every child has started. A child that fails to start makes this raise
        ``otp.StartError(("shutdown", ("failed_to_start_child", id, reason)))``.

        On ``otp.Supervisor`` itself: ``start_link(children, strategy=, intensity=, period=, spare=)``.
        """
        return _SupervisorServer.start_link(*_init_args(cls, args, flags), name=name, timeout=timeout)

    @classmethod
    def start(cls, *args: Any, name: Any = None, timeout: float | None = None, **flags: Any) -> Pid | None:
        """Like ``start_link``, without the link."""
        return _SupervisorServer.start(*_init_args(cls, args, flags), name=name, timeout=timeout)


def _init_args(cls: type, args: tuple, flags: dict) -> tuple:
    if cls is Supervisor:
        if len(args) != 1:
            raise TypeError("Supervisor.start_link(children, strategy=..., intensity=..., period=...)")
        specs = check_childspecs(args[0])
        SupFlags(**flags)  # validated here, in the caller
        return None, ([spec.to_wire() for spec in specs], flags)
    if flags:
        raise TypeError(f"{cls.__qualname__}.start_link takes its flags from init(); got {sorted(flags)}")
    return function_reference(cls), args


# --------------------------------------------------------------------- client API

def start_child(sup: Any, spec_or_args: Any) -> Pid | None:
    """Start a child from a spec (or, under simple_one_for_one, with these extra args)."""
    if isinstance(spec_or_args, (ChildSpec, dict)):
        request = ("start_child", "spec", normalize(spec_or_args).to_wire())
    else:
        request = ("start_child", "args", tuple(spec_or_args))
    return _call(sup, request)


def terminate_child(sup: Any, id_or_pid: Any) -> None:
    """Stop a child (by id; by pid under simple_one_for_one); its spec stays unless temporary."""
    _call(sup, ("terminate_child", id_or_pid))


def restart_child(sup: Any, id: Any) -> Pid | None:
    """Start again a child that ``terminate_child`` stopped."""
    return _call(sup, ("restart_child", id))


def delete_child(sup: Any, id: Any) -> None:
    """Forget the spec of a stopped child."""
    _call(sup, ("delete_child", id))


def which_children(sup: Any) -> list[tuple]:
    """``[(id, pid | None | "restarting", type, modules)]`` in start order."""
    return _call(sup, ("which_children",))


def count_children(sup: Any) -> dict:
    """``{"specs": n, "active": n, "supervisors": n, "workers": n}``."""
    return _call(sup, ("count_children",))


def get_childspec(sup: Any, id_or_pid: Any) -> dict:
    """The child's spec as a dict (its start by reference)."""
    return _call(sup, ("get_childspec", id_or_pid))


def _call(sup: Any, request: tuple) -> Any:
    status, value = call(sup, request, timeout=None)
    if status == "error":
        raise SupervisorError(value)
    return value


# --------------------------------------------------------------------- the supervisor process

@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    pid: Any = None               # Pid, None, or RESTARTING
    args: tuple = ()
    restarts: int = 0             # times this supervisor restarted it (for process_info)


class _SupervisorServer(GenServer):
    def init(self, sup_ref: list | None, args: tuple) -> Any:
        process.trap_exit(True)
        self.name = process.self()
        module = None if sup_ref is None else f"{sup_ref[0]}.{sup_ref[2]}"   # a funcref: [module, path, qualname]
        current().set_info(self.name, {"behaviour": "supervisor", "module": module})
        if sup_ref is None:
            wire_specs, flags = args
            self.flags, specs = SupFlags(**flags), [ChildSpec.from_wire(w) for w in wire_specs]
        else:
            result = load_function(sup_ref)().init(*args)
            if result is IGNORE:
                return IGNORE
            try:
                flags, specs = result
            except (TypeError, ValueError):
                raise Stop(("bad_return", result)) from None
            self.flags, specs = flags, check_childspecs(specs)
        self.simple = self.flags.strategy == "simple_one_for_one"
        self.restarts: deque[int] = deque()
        self.children: list[_Child] = []
        self._pids: dict[Pid, _Child] = {}   # the children that have a pid, by it
        if self.simple:
            if len(specs) != 1:
                raise Stop(("bad_start_spec", [s.id for s in specs]))
            self.template = specs[0]
            return None
        for spec in specs:
            child = _Child(spec, args=spec.args)
            try:
                self._set_pid(child, self._start(child))
            except StartError as exc:
                _report("start_error", self.name, child, exc.reason)
                self._shutdown_all()
                raise Stop(("shutdown", ("failed_to_start_child", spec.id, exc.reason))) from None
            if child.pid is not None or spec.restart != "temporary":
                self.children.append(child)
        return None

    # ----------------------------------------------------------------- exits and restarts

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is Exit:
            child = self._by_pid(msg.pid)
            if child is not None:
                return self._child_exited(child, msg.reason)
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == _TRY_AGAIN:
            child = self._by_key(msg[1])
            if child is not None and child.pid == RESTARTING:
                return self._restart(child)
        return None

    def _child_exited(self, child: _Child, reason: Any) -> Any:
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and not is_abnormal(reason)):
            if is_abnormal(reason):
                _report("child_terminated", self.name, child, reason)
            self._set_pid(child, None)
            if restart == "temporary" or self.simple:
                self.children.remove(child)
            return None
        level = logging.ERROR if is_abnormal(reason) else logging.INFO
        report = functools.partial(_report, "child_terminated", self.name, child, reason, level=level, pid=child.pid)
        return self._restart(child, report)

    def _restart(self, child: _Child, report: Callable[[], None] | None = None) -> Any:
        """Restart ``child`` (and its group), or give up past the intensity. ``report``, the
        report of the child's exit, is written once the child is restarted (the restart waits
        for no log handler), or before any other report."""
        if not self._add_restart():
            if report is not None:
                report()
            _report("shutdown", self.name, child, "reached_max_restart_intensity")
            self._set_pid(child, None)
            return Stop("shutdown")
        strategy = self.flags.strategy
        if strategy in ("one_for_one", "simple_one_for_one"):
            group = [child]
        else:
            if report is not None:  # before the reports of the siblings' shutdowns
                report()
                report = None
            index = self.children.index(child)
            group = self.children if strategy == "one_for_all" else self.children[index:]
            for other in reversed(group):
                if other is not child and isinstance(other.pid, Pid):
                    _shutdown(other)
                    self._set_pid(other, None)
            bystanders = [c for c in group if c is not child and c.spec.restart == "temporary"]
            for other in bystanders:  # temporary siblings are stopped, not restarted
                self.children.remove(other)
            group = [c for c in group if c not in bystanders]
        for member in group:
            member.restarts += 1
            try:
                self._set_pid(member, self._start(member))
            except StartError as exc:
                if report is not None:
                    report()
                    report = None
                _report("start_error", self.name, member, exc.reason)
                self._set_pid(member, RESTARTING)
                process.send(process.self(), (_TRY_AGAIN, self._key(member)))
                return None
            if member.pid is None and self.simple:
                self.children.remove(member)
        if report is not None:
            report()
        return None

    def _start(self, child: _Child) -> Pid | None:
        if self.flags.spare:
            self._idle_after = SPARE_AFTER_IDLE  # then the next spare is made (see _on_idle)
        pid = _start(child.spec, child.args)
        if isinstance(pid, Pid):
            current().set_info(pid, {"supervisor": self.name, "child_id": child.spec.id, "restarts": child.restarts})
        return pid

    def _on_idle(self) -> None:
        # The next start (a restart, most often) takes over a process already running.
        current().keep_spare()

    def _add_restart(self) -> bool:
        """Erlang's add_restart: whole seconds, inclusive window, intensity restarts allowed."""
        now = int(time.monotonic())
        restarts = self.restarts
        while restarts and restarts[-1] < now - self.flags.period:
            restarts.pop()
        restarts.appendleft(now)
        return len(restarts) <= self.flags.intensity

    # ----------------------------------------------------------------- API

    def handle_call(self, request: Any, caller: Any) -> Any:
        op, *args = request
        try:
            return ("ok", getattr(self, f"_api_{op}")(*args))
        except SupervisorError as exc:
            return ("error", exc.reason)
        except ChildSpecError as exc:
            return ("error", (exc.field, exc.reason))

    def _api_start_child(self, kind: str, payload: Any) -> Pid | None:
        if self.simple:
            if kind != "args":
                raise SupervisorError("simple_one_for_one takes the extra args of its template")
            child = _Child(self.template, args=self.template.args + tuple(payload))
        else:
            if kind != "spec":
                raise SupervisorError("start_child needs a child spec")
            spec = ChildSpec.from_wire(payload)
            existing = self._by_key(spec.id)
            if existing is not None:
                raise SupervisorError(("already_started", existing.pid) if isinstance(existing.pid, Pid)
                                      else "already_present")
            child = _Child(spec, args=spec.args)
        try:
            self._set_pid(child, self._start(child))
        except StartError as exc:
            raise SupervisorError(exc.reason) from None
        if child.pid is not None or (child.spec.restart != "temporary" and not self.simple):
            self.children.append(child)
        return child.pid

    def _api_terminate_child(self, key: Any) -> None:
        if self.simple and type(key) is not Pid:
            raise SupervisorError("simple_one_for_one")
        child = self._by_pid(key) if self.simple else self._by_key(key)
        if child is None:
            if self.simple and not process.is_alive(key):
                return None
            raise SupervisorError("not_found")
        if isinstance(child.pid, Pid):
            _shutdown(child)
        self._set_pid(child, None)
        if self.simple or child.spec.restart == "temporary":
            self.children.remove(child)
        return None

    def _api_restart_child(self, key: Any) -> Pid | None:
        child = self._stopped_child(key)
        try:
            self._set_pid(child, self._start(child))
        except StartError as exc:
            raise SupervisorError(exc.reason) from None
        return child.pid

    def _api_delete_child(self, key: Any) -> None:
        self.children.remove(self._stopped_child(key))

    def _api_which_children(self) -> list[tuple]:
        return [(None if self.simple else c.spec.id, c.pid, c.spec.type, list(c.spec.modules)) for c in self.children]

    def _api_count_children(self) -> dict:
        specs = [self.template] if self.simple else [c.spec for c in self.children]
        return {"specs": len(specs), "active": sum(isinstance(c.pid, Pid) for c in self.children),
                "supervisors": sum(c.spec.type == "supervisor" for c in self.children),
                "workers": sum(c.spec.type == "worker" for c in self.children)}

    def _api_get_childspec(self, key: Any) -> dict:
        child = self._by_pid(key) if type(key) is Pid else None if self.simple else self._by_key(key)
        if child is None:
            raise SupervisorError("not_found")
        return child.spec.to_wire()

    def _stopped_child(self, key: Any) -> _Child:
        if self.simple:
            raise SupervisorError("simple_one_for_one")
        child = self._by_key(key)
        if child is None:
            raise SupervisorError("not_found")
        if child.pid == RESTARTING:
            raise SupervisorError("restarting")
        if child.pid is not None:
            raise SupervisorError("running")
        return child

    # ----------------------------------------------------------------- shutdown

    def terminate(self, reason: Any) -> None:
        self._shutdown_all()

    def _shutdown_all(self) -> None:
        if self.simple:
            _shutdown_at_once([c for c in self.children if isinstance(c.pid, Pid)], self.template.shutdown)
        else:
            for child in reversed(self.children):
                if isinstance(child.pid, Pid):
                    _shutdown(child)
        for child in self.children:
            self._set_pid(child, None)

    def _set_pid(self, child: _Child, pid: Any) -> None:
        """Give ``child`` its pid (or None, or RESTARTING), kept in the index of children by
        pid: an exit signal finds its child at once among thousands (Erlang keeps a map)."""
        if type(child.pid) is Pid:
            self._pids.pop(child.pid, None)
        child.pid = pid
        if type(pid) is Pid:
            self._pids[pid] = child

    def _by_pid(self, pid: Any) -> _Child | None:
        return self._pids.get(pid) if type(pid) is Pid else None

    def _by_key(self, key: Any) -> _Child | None:
        if self.simple and type(key) is Pid:
            return self._pids.get(key)
        for child in self.children:
            if (child.pid == key) if self.simple else (child.spec.id == key):
                return child
        return None

    def _key(self, child: _Child) -> Any:
        return child.pid if self.simple else child.spec.id


def _start(spec: ChildSpec, args: tuple) -> Pid | None:
    """Start a child linked to the calling supervisor; ``StartError`` if it does not start."""
    start = spec.start
    if isinstance(start, type) and issubclass(start, (GenServer, Supervisor)):
        return start.start_link(*args, name=spec.name)
    try:
        pid = process.spawn_link(start, *args)
    except TypeError as exc:
        raise StartError(("bad_start", str(exc))) from None
    if spec.name is not None:
        if type(spec.name) is tuple:  # ("global", name)
            registered = current().register_global(spec.name[1], pid)
        else:
            try:
                process.register(spec.name, pid)
                registered = True
            except ValueError:
                registered = False
        if not registered:
            process.unlink(pid)
            process.exit(pid, "kill")
            holder = current().resolve(spec.name) if type(spec.name) is tuple else process.whereis(spec.name)
            raise StartError(("already_started", holder))
    return pid


def _shutdown(child: _Child) -> None:
    """Erlang's shutdown/1: monitor, exit signal, wait (then kill), read the true reason."""
    pid, shutdown = child.pid, child.spec.shutdown
    ref = process.monitor(pid)
    if shutdown == "brutal_kill":
        process.exit(pid, "kill")
        reason = _wait_down(ref, None)
    else:
        process.exit(pid, "shutdown")
        reason = _wait_down(ref, None if shutdown == "infinity" else shutdown)
        if reason is None:
            process.exit(pid, "kill")
            reason = _wait_down(ref, None)
    _unlink_flush(pid)
    _check_shutdown_reason(child, reason)


def _shutdown_at_once(children: list[_Child], shutdown: Any) -> None:
    """simple_one_for_one: every child gets the signal at once, under one shared timer."""
    refs = {}
    for child in children:
        refs[process.monitor(child.pid)] = child
        process.exit(child.pid, "kill" if shutdown == "brutal_kill" else "shutdown")
    deadline = None if shutdown in ("infinity", "brutal_kill") else time.monotonic() + shutdown
    while refs:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            down = process.receive(match=lambda m: type(m) is Down and m.ref in refs, timeout=timeout)
        except Timeout:
            for child in refs.values():
                process.exit(child.pid, "kill")
            deadline = None
            continue
        child = refs.pop(down.ref)
        _unlink_flush(child.pid)
        _check_shutdown_reason(child, down.reason)


def _wait_down(ref: Any, timeout: float | None) -> Any:
    try:
        return process.receive(match=lambda m: type(m) is Down and m.ref == ref, timeout=timeout).reason
    except Timeout:
        return None


def _unlink_flush(pid: Pid) -> None:
    process.unlink(pid)
    try:
        process.receive(match=lambda m: type(m) is Exit and m.pid == pid, timeout=0)
    except Timeout:
        pass


def _check_shutdown_reason(child: _Child, reason: Any) -> None:
    expected = KILLED if child.spec.shutdown == "brutal_kill" else "shutdown"
    if reason == expected or (child.spec.restart != "permanent" and not is_abnormal(reason)):
        return
    _report("shutdown_error", process.self(), child, reason)


def _report(context: str, sup: Any, child: _Child, reason: Any, level: int = logging.ERROR,
            pid: Any = None) -> None:
    """A SUPERVISOR REPORT, in Erlang's shape; ``pid`` is the offender's if not ``child.pid``."""
    log.log(level, "SUPERVISOR REPORT supervisor=%r context=%s reason=%.500r offender=[id=%r, pid=%r, "
            "restart=%s, shutdown=%s, type=%s]", sup, context, reason, child.spec.id, pid or child.pid,
            child.spec.restart, child.spec.shutdown, child.spec.type)
