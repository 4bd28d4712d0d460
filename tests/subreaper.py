"""Run a command as a child of a subreaper that reaps every orphan below it, then exit.

The machine's init may not reap orphans; this stands in for a well-behaved one, so that the
orphan tests see processes gone, not zombies.   python -m tests.subreaper CMD...
"""
import ctypes
import os
import subprocess
import sys

if __name__ == "__main__":
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    child = subprocess.Popen(sys.argv[1:])
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
