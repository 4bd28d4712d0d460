"""A node of its own, for the cluster tests: ``python -m tests.remote_node NAME BROKER COOKIE``.

It joins the broker, registers its main thread's process as ``ctl`` and prints one JSON line
(its node name, program and agent OS pids). Then ``ctl`` runs what the test asks: a message
``("run", reply_to, tag, "module:function", args)`` runs the function there and answers
``(tag, "ok", result)`` or ``(tag, "error", text)``. It stops its node when its stdin closes.
"""
import importlib
import json
import os
import sys
import threading

import otp


def _quit_on_stdin_eof() -> None:
    sys.stdin.read()
    otp.send("ctl", ("quit",))


def main() -> None:
    name, broker, cookie = sys.argv[1:4]
    tick = float(sys.argv[4]) if len(sys.argv) > 4 else None
    with otp.Node(name, cookie=cookie, broker=broker, preload=["tests.cluster_procs"]) as node:
        otp.register("ctl", otp.self())
        threading.Thread(target=_quit_on_stdin_eof, daemon=True).start()
        print(json.dumps({"node": node.name, "program": os.getpid(), "agent": node.agent_os_pid}), flush=True)
        while True:
            msg = otp.receive()
            if msg == ("quit",):
                return
            _, reply_to, tag, funcref, args = msg
            module, _, qualname = funcref.partition(":")
            try:
                result = getattr(importlib.import_module(module), qualname)(*args)
                otp.send(reply_to, (tag, "ok", result))
            except Exception as exc:
                otp.send(reply_to, (tag, "error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    main()
