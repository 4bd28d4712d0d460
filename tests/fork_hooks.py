"""A module that registers an at-fork hook, for a node's zygote to preload (test_node)."""
from __future__ import annotations

import os

import otp

IMPORTED_IN = os.getpid()
forked_in = None


def _note_fork():
    global forked_in
    forked_in = os.getpid()


os.register_at_fork(after_in_child=_note_fork)


def report(parent):
    """Tell ``parent`` whether this process found the module loaded, and ran its hook."""
    otp.send(parent, ("fork_hooks", IMPORTED_IN != os.getpid(), forked_in == os.getpid()))
