"""Child specs and supervisor flags: normalised, and validated with the field and the reason.

    otp.child_spec("kv_store", KVStore)                       # a GenServer, permanent, 5 s shutdown
    otp.child_spec("worker", run_worker, args=(1,), restart="transient", shutdown="brutal_kill")
    {"id": "kv_store", "start": KVStore}                      # the same as a plain dict

An unknown key is refused (Erlang ignores it; in Python a typo should fail loudly, as a keyword
argument does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from otp.errors import ChildSpecError
from otp.funcref import function_reference, load_function

RESTART_TYPES = ("permanent", "transient", "temporary")
CHILD_TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
DEFAULT_WORKER_SHUTDOWN = 5.0
"""Seconds a worker gets to exit after ``"shutdown"`` before it is killed (Erlang's 5000 ms)."""
_KEYS = ("id", "start", "args", "restart", "shutdown", "type", "modules", "name")


@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child."""

    id: Any
    start: Callable
    args: tuple = ()
    restart: str = "permanent"
    shutdown: float | str = DEFAULT_WORKER_SHUTDOWN
    type: str = "worker"
    modules: tuple = field(default=())
    name: str | tuple[str, str] | None = None

    def to_wire(self) -> dict:
        """The spec as encodable data (the start function by reference)."""
        return {"id": self.id, "start": function_reference(self.start), "args": self.args,
                "restart": self.restart, "shutdown": self.shutdown, "type": self.type,
                "modules": list(self.modules), "name": self.name}

    @classmethod
    def from_wire(cls, data: dict) -> "ChildSpec":
        return child_spec(**dict(data, start=load_function(data["start"]), modules=tuple(data["modules"])))


def child_spec(id: Any, start: Callable, args: tuple = (), restart: str = "permanent",
               shutdown: float | str | None = None, type: str = "worker", modules: tuple = (),
               name: str | tuple[str, str] | None = None) -> ChildSpec:
    """A validated child spec; ``ChildSpecError`` names the field and the reason.

    ``start`` is a GenServer or Supervisor subclass (started with ``start_link(*args)``) or an
    importable function (run with ``otp.spawn_link``). ``shutdown`` is ``"brutal_kill"``,
    seconds, or ``"infinity"`` (the default for supervisors; 5 s for workers). ``name``
    registers the child each time it starts: a str locally, ``("global", name)`` in the cluster.
    """
    try:
        hash(id)
    except TypeError:
        raise ChildSpecError("id", f"must be hashable; got {id!r}") from None
    if id is None:
        raise ChildSpecError("id", "is missing")
    if not callable(start):
        raise ChildSpecError("start", f"must be a GenServer/Supervisor class or a function; got {start!r}")
    try:
        function_reference(start)
    except TypeError as exc:
        raise ChildSpecError("start", str(exc)) from None
    if not isinstance(args, (tuple, list)):
        raise ChildSpecError("args", f"must be a tuple; got {args!r}")
    if restart not in RESTART_TYPES:
        raise ChildSpecError("restart", f"must be one of {', '.join(RESTART_TYPES)}; got {restart!r}")
    if type not in CHILD_TYPES:
        raise ChildSpecError("type", f"must be one of {', '.join(CHILD_TYPES)}; got {type!r}")
    if shutdown is None:
        shutdown = "infinity" if type == "supervisor" else DEFAULT_WORKER_SHUTDOWN
    if not (shutdown in ("brutal_kill", "infinity")
            or (isinstance(shutdown, (int, float)) and not isinstance(shutdown, bool) and shutdown >= 0)):
        raise ChildSpecError("shutdown", f"must be 'brutal_kill', 'infinity' or seconds >= 0; got {shutdown!r}")
    if name is not None and not (isinstance(name, str) and name) and not (
            isinstance(name, (tuple, list)) and len(name) == 2 and name[0] == "global"
            and isinstance(name[1], str) and name[1]):
        raise ChildSpecError("name", f"must be a non-empty str or ('global', name); got {name!r}")
    if isinstance(name, list):  # from the wire
        name = tuple(name)
    return ChildSpec(id, start, tuple(args), restart, shutdown, type, tuple(modules) or (_name_of(start),), name)


def normalize(spec: Any) -> ChildSpec:
    """A ``ChildSpec`` from a ``ChildSpec`` or a dict with the same keys."""
    if isinstance(spec, ChildSpec):
        return spec
    if not isinstance(spec, dict):
        raise ChildSpecError("spec", f"must be otp.child_spec(...) or a dict; got {spec!r}")
    unknown = sorted(map(str, set(spec) - set(_KEYS)))
    if unknown:
        raise ChildSpecError(unknown[0], f"is not a child spec key (known: {', '.join(_KEYS)})")
    for key in ("id", "start"):
        if key not in spec:
            raise ChildSpecError(key, "is missing")
    return child_spec(**spec)


def check_childspecs(specs: Any) -> list[ChildSpec]:
    """Validate a list of specs (ids unique); return them normalised or raise ``ChildSpecError``."""
    if not isinstance(specs, (list, tuple)):
        raise ChildSpecError("children", f"must be a list of child specs; got {specs!r}")
    result, seen = [], set()
    for spec in specs:
        spec = normalize(spec)
        if spec.id in seen:
            raise ChildSpecError("id", f"duplicate child id {spec.id!r}")
        seen.add(spec.id)
        result.append(spec)
    return result


@dataclass(frozen=True)
class SupFlags:
    """A supervisor's strategy and restart intensity: more than ``intensity`` restarts within
    ``period`` seconds and it gives up (Erlang's defaults: 1 in 5 s).

    ``spare`` (not Erlang's): the supervisor keeps one process spawned ahead, to which a restart
    hands the child (a restart then costs a message, not a spawn); ``False`` saves that idle
    process's memory, and restarts spawn.
    """

    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5
    spare: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ChildSpecError("strategy", f"must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if not isinstance(self.intensity, int) or isinstance(self.intensity, bool) or self.intensity < 0:
            raise ChildSpecError("intensity", f"must be an int >= 0; got {self.intensity!r}")
        if not isinstance(self.period, (int, float)) or isinstance(self.period, bool) or self.period <= 0:
            raise ChildSpecError("period", f"must be seconds > 0; got {self.period!r}")
        if type(self.spare) is not bool:
            raise ChildSpecError("spare", f"must be True or False; got {self.spare!r}")


def _name_of(start: Callable) -> str:
    return f"{start.__module__}.{start.__qualname__}"
