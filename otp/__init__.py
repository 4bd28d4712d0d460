"""otp: Erlang/OTP's fault tolerance for Python, with every process a real OS process.

    import otp

    def worker(parent):
        otp.send(parent, ("hello", otp.self()))

    pid, ref = otp.spawn_monitor(worker, otp.self())
    print(otp.receive(timeout=5))          # ('hello', <nonode@nohost.2>)
    print(otp.receive(match=otp.Down))     # Down(ref=..., pid=..., reason='normal')
"""
from otp import cluster, supervisor
from otp.child_spec import ChildSpec, SupFlags, child_spec
from otp.errors import (AlreadyStarted, CallTimeout, ChildSpecError, DecodeError, ExitError, NodeError, NoProc,
                        OtpError, StartError, Stop, SupervisorError, Timeout)
from otp.gen_server import IGNORE, NOREPLY, GenServer, call, cast, reply, stop
from otp.introspect import process_info, processes
from otp.process import (demonitor, exit, is_alive, link, monitor, monitor_nodes, node, nodes, os_pid,
                         receive, register, registered, self, send, spawn, spawn_link, spawn_monitor,
                         trap_exit, unlink, unregister, whereis)
from otp.supervisor import Supervisor
from otp.terms import Down, Exit, NodeDown, NodeUp, Pid, Ref, Tcp, TcpClosed


def __getattr__(name: str):
    # Node pulls in what only a program that starts a node needs (psutil, subprocess...): the
    # zygote, which every process is forked from, stays lean without it.
    if name == "Node":
        from otp.local_node import Node
        return Node
    if name == "Broker":
        from otp.broker import Broker
        return Broker
    if name in ("jobs", "chaos", "observer", "tcp"):
        import importlib
        return importlib.import_module(f"otp.{name}")
    if name == "WorkerCrashed":
        from otp.jobs import WorkerCrashed
        return WorkerCrashed
    raise AttributeError(f"module 'otp' has no attribute {name!r}")


__all__ = [
    # processes
    "spawn", "spawn_link", "spawn_monitor", "self", "send", "receive", "link", "unlink",
    "monitor", "demonitor", "exit", "trap_exit", "register", "unregister", "whereis",
    "registered", "is_alive", "os_pid", "process_info", "processes",
    # gen_server
    "GenServer", "call", "cast", "reply", "stop", "Stop", "NOREPLY", "IGNORE",
    # supervisor
    "Supervisor", "SupFlags", "ChildSpec", "child_spec", "supervisor",
    # terms
    "Pid", "Ref", "Exit", "Down", "NodeUp", "NodeDown", "Tcp", "TcpClosed",
    # nodes and the cluster
    "Node", "Broker", "node", "nodes", "monitor_nodes", "cluster",
    # jobs and tools
    "jobs", "WorkerCrashed", "chaos", "observer", "tcp",
    # errors
    "OtpError", "NoProc", "ExitError", "Timeout", "CallTimeout", "StartError", "AlreadyStarted",
    "ChildSpecError", "SupervisorError", "NodeError", "DecodeError",
]
