"""The README's three-terminal cluster example works as written (on a free port)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.cluster import free_tcp_address

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _terminals() -> dict[int, list[str]]:
    """Each '# terminal N' block of the README's cluster section: its lines."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## A cluster", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n# terminal (\d)[^\n]*\n(.*?)```", section, re.S)
    return {int(n): body.strip().splitlines() for n, body in blocks}


def _session(lines: list[str]) -> tuple[list[str], list[str]]:
    """The statements typed at the prompt, and the outputs the README shows for them."""
    typed = [line[4:].split("  #")[0].rstrip() for line in lines[1:] if line.startswith(">>> ")]
    shown = [line for line in lines[1:] if line and not line.startswith(">>> ")]
    return typed, shown


def _command(line: str, address: str) -> list[str]:
    args = line.replace("tcp://127.0.0.1:4370", address).split()
    assert args[:3] == ["python", "-m", "otp"]
    return [sys.executable, *args[1:]]


def test_the_three_terminal_example_runs_as_written():
    terminals = _terminals()
    assert sorted(terminals) == [1, 2, 3]
    address = free_tcp_address()
    broker = subprocess.Popen(_command(terminals[1][0], address), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    node_a = None
    try:
        assert "listening" in broker.stdout.readline()
        typed_a, shown_a = _session(terminals[2])
        node_a = subprocess.Popen(_command(terminals[2][0], address), cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        node_a.stdin.write("\n".join(typed_a) + "\nprint('--done--')\n")
        node_a.stdin.flush()
        seen_a = ""
        while "--done--" not in seen_a:
            line = node_a.stdout.readline()
            assert line, f"node_a ended early: {node_a.stderr.read()}"
            seen_a += line
        for output in shown_a:
            assert output in seen_a
        typed_b, shown_b = _session(terminals[3])
        node_b = subprocess.run(_command(terminals[3][0], address), cwd=ROOT, input="\n".join(typed_b) + "\n",
                                capture_output=True, text=True, timeout=60)
        for output in shown_b:
            assert output in node_b.stdout, node_b.stderr
    finally:
        if node_a is not None:
            node_a.stdin.close()
            node_a.wait(30)
            node_a.stdout.close()
            node_a.stderr.close()
        broker.terminate()
        broker.wait(10)
        broker.stdout.close()
