"""Functions the job runner tests run in workers."""
from __future__ import annotations

import ctypes
import os
import signal
import time


def inc(x):
    return x + 1


def add(x, y=0):
    return x + y


def boom(message):
    raise ValueError(message)


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def worker_os_pid():
    return os.getpid()


def die(how):
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segv":
        ctypes.string_at(0)
    if how == "exit":
        os._exit(3)


def hog(megabytes):
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(30)
    return len(block)


def unencodable_result():
    return object()


def slow_inc(x):
    time.sleep(0.001)
    return x + 1


def die_once(marker):
    """SIGKILL the worker the first time (the marker file does not exist yet), then succeed."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


_initialized = None


def initialize(value):
    global _initialized
    _initialized = value


def initialized():
    return _initialized


class Box:
    """Not encodable with msgpack: only the pickle serializer carries it."""

    def __init__(self, value):
        self.value = value


def unbox(box):
    return Box(box.value * 2)
