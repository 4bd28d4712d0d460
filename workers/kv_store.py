"""The article's kv_store: a key-value store whose state lives in its own OS process.

    pid = KVStore.start_link(name="kv_store")
    put("a", 1)            # a cast: returns at once
    assert get("a") == 1   # a call: waits for the reply
    assert size() == 1
"""
from __future__ import annotations

from typing import Any

import otp

NAME = "kv_store"


class KVStore(otp.GenServer):
    """put as a cast, get and size as calls, as in the article."""

    def init(self) -> None:
        self.data: dict = {}

    def handle_cast(self, msg: Any) -> None:
        match msg:
            case ("put", key, value):
                self.data[key] = value

    def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("get", key):
                return self.data.get(key)
            case "size":
                return len(self.data)
        raise ValueError(f"unknown request {request!r}")


def start_link(name: str = NAME) -> otp.Pid:
    return KVStore.start_link(name=name)


def put(key: Any, value: Any, server: Any = NAME) -> None:
    otp.cast(server, ("put", key, value))


def get(key: Any, server: Any = NAME) -> Any:
    return otp.call(server, ("get", key))


def size(server: Any = NAME) -> int:
    return otp.call(server, "size")
