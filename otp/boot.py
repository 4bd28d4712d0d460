"""A node's first OS process (``python -m otp.boot ARGS``, started by ``otp.Node``): it forks
the zygote before it loads anything only the node agent needs, then becomes the agent.

Every process of the node is a fork of the zygote, and pays at its birth and at its death for
each page the zygote maps: the agent's own code, its command line parser and its cluster
modules (1.4 MB of memory) stay out of the zygote this way. The agent tells the zygote the
node's name, run directory and modules to preload in its first frame (``protocol.Z_START``).
Not a public interface.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys

from otp import forkserver


def main() -> None:
    # What the zygote's processes inherit: the program's import path and the log format.
    sys.path[:] = json.loads(os.environ.get("OTP_SYS_PATH", "[]")) or sys.path
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cookie = os.environ.pop("OTP_AGENT_COOKIE", None)  # for the agent alone
    agent_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote_pid = os.fork()  # before any ZeroMQ context or thread exists
    if zygote_pid == 0:
        agent_end.close()
        forkserver.serve(zygote_end)
    zygote_end.close()
    from otp import agent
    agent.main(sys.argv[1:], zygote_pid, agent_end, cookie)


if __name__ == "__main__":
    main()
