"""Every test runs against a fresh node and must leave no process, socket file or run dir."""
from __future__ import annotations

import glob
import os
import types

import psutil
import pytest

import otp
from otp.local_node import RUNDIR_PREFIX, rundir_base


def _leftovers() -> tuple[list, list]:
    children = [p for p in psutil.Process().children(recursive=True) if _running(p)]
    rundirs = glob.glob(os.path.join(rundir_base(), RUNDIR_PREFIX + "*"))
    return children, rundirs


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a process, a run directory or an ipc socket file behind."""
    before_children, before_dirs = _leftovers()
    yield
    children, rundirs = _leftovers()
    new_children = [p for p in children if p.pid not in {c.pid for c in before_children}]
    new_dirs = sorted(set(rundirs) - set(before_dirs))
    for proc in new_children:  # end them by pid so one leak does not fail the next tests
        proc.kill()
    for path in new_dirs:
        import shutil
        shutil.rmtree(path, ignore_errors=True)
    assert not new_children, f"processes left behind: {[(p.pid, p.cmdline()) for p in new_children]}"
    assert not new_dirs, f"run directories left behind: {new_dirs}"


@pytest.fixture
def node():
    """A fresh, unnamed node; the test's thread is one of its processes."""
    with otp.Node() as n:
        yield n


@pytest.fixture
def cluster():
    """A broker (in this program, tick 1 s), this program as node ``test`` joined to it, and
    ``start(name)`` for more nodes, each in its own process tree; all stopped at the end."""
    from tests.cluster import COOKIE, RemoteNode
    remotes = []
    with otp.Broker("tcp://127.0.0.1:0", cookie=COOKIE, tick=1.0) as broker:
        def start(name):
            remote = RemoteNode(name, broker.address)
            remotes.append(remote)
            return remote
        with otp.Node("test", cookie=COOKIE, broker=broker.address) as node:
            try:
                yield types.SimpleNamespace(broker=broker, node=node, start=start)
            finally:
                for remote in remotes:
                    remote.stop()
