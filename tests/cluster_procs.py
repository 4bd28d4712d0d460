"""Functions the cluster tests run on remote nodes (through the plugin's RemoteNode.run)."""
from __future__ import annotations

import otp
from tests.servers import Echo
from workers import counter


def start_global_echo(name: str) -> otp.Pid:
    return Echo.start(name=("global", name))


def start_counter() -> otp.Pid:
    return counter.start()


def counter_inc(times: int) -> None:
    for _ in range(times):
        counter.inc()


def counter_value() -> int:
    return counter.value()


def whereis_name(name: str) -> otp.Pid | None:
    return otp.cluster.whereis_name(name)


def call(dest, request):
    return otp.call(dest, request)


def nodes() -> list:
    return otp.nodes()


def spawn_idle() -> otp.Pid:
    return otp.spawn(idle)


def idle() -> None:
    otp.receive()


def locked_increments(store: str, times: int) -> int:
    """Read-modify-write a global KV store's key ``n`` ``times`` under a cluster lock."""
    for _ in range(times):
        otp.cluster.trans("n-lock", lambda: _increment(store))
    return times


def _increment(store: str) -> None:
    value = otp.call(("global", store), ("get", "n")) or 0
    otp.call(("global", store), ("put_sync", "n", value + 1))


def hold_lock_and_report(lock_id: str, watcher: otp.Pid) -> None:
    otp.cluster.set_lock(lock_id)
    otp.send(watcher, ("holding", otp.self()))
    otp.receive()


class Store(otp.GenServer):
    """A key-value store whose writes are calls, for read-modify-write under a lock."""

    def init(self):
        self.data = {}

    def handle_call(self, request, caller):
        match request:
            case ("get", key):
                return self.data.get(key)
            case ("put_sync", key, value):
                self.data[key] = value
                return "ok"


def spawn_holder(lock_id: str, watcher: otp.Pid) -> otp.Pid:
    return otp.spawn(hold_lock_and_report, lock_id, watcher)


def call_later_reporting(parent: otp.Pid, server) -> None:
    """Call ``server`` with a request it never answers; report how the call ended."""
    otp.send(parent, "calling")
    try:
        otp.call(server, "later", timeout=30)
        otp.send(parent, ("outcome", "replied"))
    except otp.OtpError as exc:
        otp.send(parent, ("outcome", (type(exc).__name__, exc.reason)))


def start_app_sup() -> otp.Pid:
    from workers.app_sup import AppSup
    return AppSup.start(60.0, name="app_sup")
