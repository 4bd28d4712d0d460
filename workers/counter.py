"""The article's counter: one globally registered server that every node of the cluster shares.

    counter.start_link()      # on any node
    counter.inc()             # from any node: a cast
    counter.value()           # from any node: a call
"""
from __future__ import annotations

from typing import Any

import otp

NAME = ("global", "counter")


class Counter(otp.GenServer):
    """inc as a cast, get as a call, as in the article."""

    def init(self, initial: int = 0) -> None:
        self.count = initial

    def handle_cast(self, msg: Any) -> None:
        if msg == "inc":
            self.count += 1

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "get":
            return self.count
        raise ValueError(f"unknown request {request!r}")


def start_link(initial: int = 0) -> otp.Pid:
    return Counter.start_link(initial, name=NAME)


def start(initial: int = 0) -> otp.Pid:
    return Counter.start(initial, name=NAME)


def inc() -> None:
    otp.cast(NAME, "inc")


def value() -> int:
    return otp.call(NAME, "get")
