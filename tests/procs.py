"""Process functions the tests spawn: they must be importable, so they live here."""
from __future__ import annotations

import ctypes
import os
import signal

import otp


def echo():
    """Send every (sender, payload) back to sender; return on "stop"."""
    while True:
        msg = otp.receive()
        if msg == "stop":
            return
        sender, payload = msg
        otp.send(sender, payload)


def send_back(parent, value):
    otp.send(parent, value)


def report_os_pid(parent):
    otp.send(parent, ("os_pid", os.getpid()))


def report_process_state(parent):
    """Tell ``parent`` a random draw and what ``threading`` knows of this process's one thread."""
    import random
    import threading
    me = threading.current_thread()
    otp.send(parent, ("state", random.random(), me is threading.main_thread(),
                      threading.get_native_id() == os.getpid(), threading.active_count()))


def report_modules(parent, names):
    """Tell ``parent`` which of the modules ``names`` this process has loaded."""
    import sys
    otp.send(parent, ("modules", {name: name in sys.modules for name in names}))


def report_os_pid_and_wait(parent):
    otp.send(parent, ("os_pid", os.getpid()))
    otp.receive()


def send_numbers(parent, count):
    for i in range(count):
        otp.send(parent, i)


def wait_forever():
    otp.receive()


def raise_value_error(message):
    raise ValueError(message)


def exit_with(reason):
    raise otp.ExitError(reason)


def exit_with_when_told(reason):
    """Exit with ``reason`` at the first message."""
    otp.receive()
    raise otp.ExitError(reason)


def os_exit(code):
    os._exit(code)


def segfault():
    ctypes.string_at(0)


def sigterm_self():
    os.kill(os.getpid(), signal.SIGTERM)
    otp.receive()


def trap_and_forward(parent):
    """Trap exits, tell parent we are ready, then forward every message to parent."""
    otp.trap_exit(True)
    otp.send(parent, ("ready", otp.self()))
    while True:
        otp.send(parent, ("got", otp.receive()))


def trap_then_stream(parent, count, size):
    """Trap exits, send parent count numbered chunks of size bytes, take the exit signal
    parent sends meanwhile, then tell parent it is done."""
    otp.trap_exit(True)
    chunk = b"x" * size
    for i in range(count):
        otp.send(parent, ("chunk", i, chunk))
    signal = otp.receive(timeout=30)
    otp.send(parent, ("done", signal))


def link_then_wait(parent, target):
    """Link to target, tell parent, then wait; tell parent if we survive target's exit."""
    otp.link(target)
    otp.send(parent, ("linked", otp.self()))
    msg = otp.receive()
    otp.send(parent, ("survived", msg))


def spawn_linked_child(parent, func_name, *args):
    """Spawn the function of this module named func_name, linked to us; tell parent its pid,
    then forward what we receive."""
    child = otp.spawn_link(globals()[func_name], *args)
    otp.send(parent, ("child", child))
    while True:
        msg = otp.receive()
        otp.send(parent, ("middle got", msg))


def spawn_many(parent, tag, count):
    """Spawn count processes back to back, each of which sends parent (tag, i)."""
    for i in range(count):
        otp.spawn(send_back, parent, (tag, i))


def spawn_tree(parent, depth):
    """Spawn a chain of linked processes depth deep, report every OS pid, then wait."""
    otp.send(parent, ("os_pid", os.getpid()))
    if depth > 1:
        otp.spawn_link(spawn_tree, parent, depth - 1)
    otp.receive()


def register_self_and_wait(parent, name):
    otp.register(name, otp.self())
    otp.send(parent, ("registered", otp.self()))
    otp.receive()


def threads_are_processes_too(parent):
    """In a spawned process, a second thread that uses otp is a process of its own."""
    import threading
    seen = []
    thread = threading.Thread(target=lambda: seen.append(otp.self()))
    thread.start()
    thread.join()
    otp.send(parent, ("pids", otp.self(), seen[0]))


def tagged_echo():
    """Answer ("echo", sender, payload) messages; leave any other message alone."""
    while True:
        _, sender, payload = otp.receive(
            match=lambda m: type(m) is tuple and len(m) == 3 and m[0] == "echo" and type(m[1]) is otp.Pid)
        otp.send(sender, payload)


def register_then_report(parent, name, pid):
    otp.register(name, pid)
    otp.send(parent, "done")


def reregister_then_report(parent, name, pid):
    otp.unregister(name)
    otp.register(name, pid)
    otp.send(parent, "done")


def wait_for_go_then_drain(parent):
    """Tell the parent it waits; take nothing until "go"; then drain and say so."""
    otp.send(parent, "waiting")
    otp.receive(match=lambda m: m == "go")
    while True:
        try:
            otp.receive(timeout=0)
        except otp.Timeout:
            break
    otp.send(parent, "drained")


def tcp_client(parent, port):
    """Connect; forward each chunk as ("got", data), then "closed"."""
    sock = otp.tcp.connect("127.0.0.1", port)
    while True:
        sock.active_once()
        msg = otp.receive(match=(otp.Tcp, otp.TcpClosed))
        if isinstance(msg, otp.TcpClosed):
            otp.send(parent, "closed")
            return
        assert msg.sock == sock.id
        otp.send(parent, ("got", msg.data))
