"""The cluster's global names and locks (Erlang's ``global``), for a node that joined a broker.

    otp.cluster.register_name("counter", pid)     # True, or False if the name is taken
    otp.cluster.whereis_name("counter")           # the pid, from this node's replica
    otp.cluster.send("counter", ("inc", 1))
    otp.cluster.trans("stock", lambda: update())  # runs under a cluster-wide lock

One pid per name across the cluster. A name goes when its process dies or its node goes down.
When a partition heals with a name on both sides, the pid on the node whose name sorts first
keeps it and the other is killed with ``("global_name_conflict", name)``.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable

from otp import codec
from otp.errors import NoProc
from otp.runtime import current
from otp.terms import Pid

ABORTED = "aborted"
"""What ``trans`` returns when it could not take the lock within its retries (Erlang's atom)."""


def register_name(name: str, pid: Pid) -> bool:
    """Register ``pid`` as ``name`` across the cluster; False if the name is taken, the pid
    already has a global name, or this node is not in a cluster."""
    return current().register_global(name, pid)


def unregister_name(name: str) -> None:
    """Remove ``name`` from the cluster (nothing happens if it is not registered)."""
    current().unregister_global(name)


def whereis_name(name: str) -> Pid | None:
    """The pid registered as ``name`` in the cluster, or None."""
    return current().global_whereis(name)


def registered_names() -> list[str]:
    """Every global name."""
    return current().global_names()


def send(name: str, msg: Any) -> Pid:
    """Send ``msg`` to the process registered as ``name``; return its pid. Raises
    ``otp.NoProc`` if the name is not registered."""
    rt = current()
    pid = rt.global_whereis(name)
    if pid is None:
        raise NoProc(("global", name))
    rt.send(pid, msg)
    return pid


def set_lock(lock_id: Any, retries: int | None = None) -> bool:
    """Take the cluster-wide lock ``lock_id`` (any encodable term) for the calling process.

    ``retries=None`` waits for it as long as it takes, served in order of asking; ``retries=n``
    makes ``n + 1`` attempts, sleeping a random while between them as Erlang does, and returns
    False if all fail. The lock is released by ``del_lock``, or when its holder dies or the
    holder's node goes down. Taking a lock one already holds succeeds.
    """
    if retries is not None and (type(retries) is not int or retries < 0):
        raise ValueError(f"retries is None or an int >= 0; got {retries!r}")
    rt = current()
    resource = codec.encode(lock_id)
    if retries is None:
        while not rt.set_lock(resource, wait=True):
            # Not in a cluster yet, or the broker restarted while we waited: ask again.
            time.sleep(random.uniform(0.05, 0.25))
        return True
    for attempt in range(retries + 1):
        if rt.set_lock(resource, wait=False):
            return True
        if attempt < retries:
            time.sleep(random.uniform(0, _RETRY_SLEEPS[min(attempt, len(_RETRY_SLEEPS) - 1)]))
    return False


_RETRY_SLEEPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)   # Erlang's random_sleep bounds, seconds


def del_lock(lock_id: Any) -> None:
    """Release the lock ``lock_id`` if the calling process holds it."""
    current().del_lock(codec.encode(lock_id))


def trans(lock_id: Any, func: Callable[[], Any], retries: int | None = None) -> Any:
    """Run ``func()`` holding the cluster lock ``lock_id``; return its result, or
    ``otp.cluster.ABORTED`` if the lock could not be taken within ``retries`` (see
    ``set_lock``). The lock is released however ``func`` ends."""
    if not set_lock(lock_id, retries):
        return ABORTED
    try:
        return func()
    finally:
        del_lock(lock_id)
