"""Every test runs against a fresh node and must leave no process, socket file or run dir."""
from __future__ import annotations

import pytest

from otp.pytest_plugin import LeakCheck


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a process, a run directory or an ipc socket file behind."""
    leaks = LeakCheck()
    yield
    leaks.check()


@pytest.fixture
def node(otp_node):
    """A fresh, unnamed node; the test's thread is one of its processes (the plugin's otp_node)."""
    return otp_node


@pytest.fixture
def cluster(otp_cluster):
    """A broker, this program as node ``test``, and ``start(name)`` for more nodes (the plugin's)."""
    return otp_cluster
