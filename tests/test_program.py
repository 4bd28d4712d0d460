"""otp as a program sees it: the implicit node, functions of __main__, the demo, no zombies."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil

import otp
from tests import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_program(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_program_gets_an_implicit_node_on_first_use_and_it_stops_at_exit():
    result = run_program("""
        import otp
        from tests import procs
        pid = otp.spawn(procs.send_back, otp.self(), "hello")
        print(otp.receive(timeout=10), otp.node())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "nonode@nohost"]


def test_a_node_stops_when_a_thread_that_sent_messages_ended_without_closing_its_process():
    result = run_program("""
        import threading
        import otp
        with otp.Node("threads"):
            otp.register("main", otp.self())
            thread = threading.Thread(target=otp.send, args=("main", "from a thread"))
            thread.start()
            thread.join()
            print(otp.receive(timeout=10))
        print("stopped")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from a thread", "stopped"]


def test_a_function_defined_in_the_main_script_can_be_spawned(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import otp

        def greet(parent, name):
            otp.send(parent, "hello " + name)

        if __name__ == "__main__":
            otp.spawn(greet, otp.self(), "main")
            print(otp.receive(timeout=10))
    """))
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello main"


def test_the_demo_runs_and_exits_cleanly():
    result = subprocess.run([sys.executable, "-m", "otp", "demo"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("untouched: True") == 2
    assert "app_sup stopped its children and gave up: Exit(" in result.stdout and "reason='shutdown'" in result.stdout
    assert "run directory removed: True" in result.stdout


def test_a_dead_process_is_reaped_before_its_down_arrives(node):
    pid, ref = otp.spawn_monitor(procs.report_os_pid, otp.self())
    _, os_pid = otp.receive(timeout=10)
    otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10)
    assert not psutil.pid_exists(os_pid)  # gone, not a zombie


def test_threads_of_a_spawned_process_are_processes_too(node):
    otp.spawn(procs.threads_are_processes_too, otp.self())
    _, main_pid, thread_pid = otp.receive(timeout=10)
    assert main_pid != thread_pid and thread_pid.node == main_pid.node


def test_a_process_that_cannot_import_its_function_exits_with_the_import_error(node):
    from otp import codec, protocol, runtime
    rt = runtime.current()
    ref = rt.make_ref()
    # A raw spawn request naming a module this machine lacks, as a peer node might send.
    rt._request(protocol.SPAWN, ["tests.no_such_module", None, "func"], codec.encode(()), False, ref)
    reason = otp.receive(match=lambda m: isinstance(m, otp.Down) and m.ref == ref, timeout=10).reason
    assert reason[:2] == ("exception", "ModuleNotFoundError")
