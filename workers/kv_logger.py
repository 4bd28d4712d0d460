"""The article's kv_logger: logs the kv_store's size every interval (seconds, configurable).

    pid = KVLogger.start_link(1.0)          # logs "kv_store size: N" through logging each second
"""
from __future__ import annotations

import logging

import otp
from workers import kv_store

log = logging.getLogger(__name__)


def ticker(target: otp.Pid, interval: float) -> None:
    """Send "tick" to target every interval seconds (linked to it: they die together)."""
    while True:
        try:
            otp.receive(match=lambda m: False, timeout=interval)
        except otp.Timeout:
            otp.send(target, "tick")


class KVLogger(otp.GenServer):
    def init(self, interval: float = 5.0, store: str = kv_store.NAME) -> None:
        self.store = store
        otp.spawn_link(ticker, otp.self(), interval)

    def handle_info(self, msg) -> None:
        if msg == "tick":
            try:
                log.info("%s size: %d", self.store, kv_store.size(self.store))
            except (otp.NoProc, otp.ExitError) as exc:
                log.info("%s is not there: %s", self.store, exc)

    def handle_call(self, request, caller):
        return "ok"
