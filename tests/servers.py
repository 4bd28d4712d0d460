"""GenServers the tests start (they must be importable, so they live here)."""
from __future__ import annotations

import logging
import os
import time

import otp


class Echo(otp.GenServer):
    """Replies with the request; records casts; forwards infos to a watcher."""

    def init(self, watcher=None, trap=False):
        self.watcher = watcher
        self.casts = []
        self.pending = None
        if trap:
            otp.trap_exit(True)

    def handle_call(self, request, caller):
        match request:
            case ("echo", value):
                return value
            case "casts":
                return self.casts
            case "os_pid":
                return os.getpid()
            case "later":                       # answered by the next cast ("answer", value)
                self.pending = caller
                if self.watcher is not None:
                    otp.send(self.watcher, ("pending", caller))
                return otp.NOREPLY
            case ("stop", reason, reply):
                return otp.Stop(reason, reply=reply)
            case ("raise_stop", reason):
                raise otp.Stop(reason)
            case ("crash", message):
                raise ValueError(message)
            case ("ask", other, value):         # a call from inside a call
                return ("via", otp.call(other, ("echo", value)))
            case "unencodable":
                return object()
            case ("monitor", pid):
                return otp.monitor(pid)
            case "never":
                if self.watcher is not None:
                    otp.send(self.watcher, ("pending", caller))
                return otp.NOREPLY
        raise ValueError(f"unknown request {request!r}")

    def handle_cast(self, msg):
        match msg:
            case ("answer", value):
                otp.reply(self.pending, value)
            case ("stop", reason):
                return otp.Stop(reason)
            case _:
                self.casts.append(msg)

    def handle_info(self, msg):
        if self.watcher is not None:
            otp.send(self.watcher, ("info", msg))

    def terminate(self, reason):
        if self.watcher is not None:
            otp.send(self.watcher, ("terminate", reason))


class InitStops(otp.GenServer):
    def init(self, how):
        match how:
            case "stop":
                raise otp.Stop("no_thanks")
            case "return_stop":
                return otp.Stop("no_thanks")
            case "ignore":
                return otp.IGNORE
            case "crash":
                raise RuntimeError("init failed")
            case "hang":
                otp.receive(match=lambda m: False)


class BadTerminate(otp.GenServer):
    def handle_cast(self, msg):
        return otp.Stop("normal")

    def terminate(self, reason):
        raise KeyError("terminate failed")


class Worker(otp.GenServer):
    """A supervised child that announces each start to a watcher, and stops on request.

    The announcement carries the moment of the start (the machine's monotonic clock): messages
    from different processes may arrive in any order, so a test of start order sorts by it.
    """

    def init(self, watcher, name):
        self.watcher, self.name = watcher, name
        otp.send(watcher, ("started", name, otp.self(), time.monotonic_ns()))

    def handle_call(self, request, caller):
        return ("pong", self.name)

    def handle_cast(self, msg):
        return otp.Stop(msg)            # exit with the reason cast


class WaitsInInit(otp.GenServer):
    """Tells ``watcher`` its pid from ``init``, then stays there."""

    def init(self, watcher):
        otp.send(watcher, ("in_init", otp.self()))
        otp.receive()


def start_waits_in_init(watcher):
    """Start a ``WaitsInInit`` (start blocks until its init returns) and stay alive."""
    WaitsInInit.start(watcher)
    otp.receive()


class FailingInit(otp.GenServer):
    def init(self, watcher, name):
        raise otp.Stop("cannot start")


def ignores_exits(watcher, name):
    """A child that traps exits and ignores them: only a kill stops it."""
    otp.trap_exit(True)
    otp.send(watcher, ("started", name, otp.self()))
    while True:
        otp.receive()


class Inner(otp.Supervisor):
    def init(self, watcher, intensity):
        return otp.SupFlags("one_for_one", intensity=intensity, period=10), [
            otp.child_spec("inner_worker", Worker, args=(watcher, "inner_worker"))]


class ForwardRecords(logging.Handler):
    """Sends each record it handles to ``watcher`` as ``("log", levelname, message)``."""

    def __init__(self, watcher):
        super().__init__()
        self.watcher = watcher

    def emit(self, record):
        otp.send(self.watcher, ("log", record.levelname, record.getMessage()))


class Reporting(otp.Supervisor):
    """A one_for_one supervisor of ``Worker`` children that forwards its reports to ``watcher``."""

    def init(self, watcher, intensity, names):
        logging.getLogger("otp.supervisor").addHandler(ForwardRecords(watcher))
        return otp.SupFlags("one_for_one", intensity=intensity, period=10), [
            otp.child_spec(name, Worker, args=(watcher, name)) for name in names]


class Nested(otp.Supervisor):
    def init(self, watcher, intensity):
        return otp.SupFlags("one_for_one", intensity=5, period=10), [
            otp.child_spec("inner", Inner, args=(watcher, intensity), type="supervisor")]


def chaos_client(parent, names, seed):
    """Call random named servers until told to stop; report how the calls ended. Says
    "calling" once a first call has been answered."""
    import random
    rng = random.Random(seed)
    otp.call(names[0], "ping", timeout=10)
    otp.send(parent, "calling")
    outcomes = {"ok": 0, "ExitError": 0, "NoProc": 0}
    while True:
        try:
            otp.receive(match=lambda m: m == "stop", timeout=0)
            otp.send(parent, ("outcomes", outcomes))
            return
        except otp.Timeout:
            pass
        try:
            otp.call(rng.choice(names), "ping", timeout=10)
            outcomes["ok"] += 1
        except otp.ExitError:
            outcomes["ExitError"] += 1
        except otp.NoProc:
            outcomes["NoProc"] += 1


class Blockable(otp.GenServer):
    """Starts unless a process is registered as "block"."""

    def init(self, watcher, name):
        if otp.whereis("block") is not None:
            raise otp.Stop("blocked")
        otp.send(watcher, ("started", name, otp.self(), time.monotonic_ns()))

    def handle_call(self, request, caller):
        return ("pong", "blockable")
