"""A program that embeds otp, for the orphan tests: it starts a node with a chain of linked
processes, prints every OS pid as one JSON line, then waits to be killed."""
import json
import os
import sys

import otp
from tests import procs

if __name__ == "__main__":
    depth = int(sys.argv[1])
    node = otp.Node().start()
    otp.spawn(procs.spawn_tree, otp.self(), depth)
    children = [otp.receive(timeout=30)[1] for _ in range(depth)]
    print(json.dumps({"program": os.getpid(), "agent": node.agent_os_pid, "zygote": node.zygote_pid,
                      "children": children, "rundir": node.rundir}), flush=True)
    try:
        otp.receive()
    except otp.ExitError:   # the agent was killed: wait for the test to kill us
        sys.stdin.read()
