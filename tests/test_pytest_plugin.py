"""The pytest plugin, run on test files of its own (pytester)."""
from __future__ import annotations

pytest_plugins = ["pytester"]

EXAMPLE = '''
import os, signal, subprocess, sys
import otp
from otp.pytest_plugin import assert_restarted, wait_for


class Store(otp.GenServer):
    def init(self):
        self.data = {}

    def handle_call(self, request, caller):
        return self.data.get(request)


def test_a_killed_child_is_restarted(otp_node):
    sup = otp.Supervisor.start_link([otp.child_spec("store", Store, name="store")])
    old = otp.whereis("store")
    os.kill(otp.os_pid(old), signal.SIGKILL)
    new = assert_restarted(sup, "store", old)
    assert otp.call(new, "k") is None
    assert wait_for(lambda: otp.whereis("store") == new)


def test_under_a_chaos_monkey_calls_end(otp_node, chaos):
    sup = otp.Supervisor.start([otp.child_spec("store", Store, name="store")], intensity=100, period=1)
    chaos(sup, rate=20, kinds=("kill",), seed=1)
    for _ in range(50):
        try:
            otp.call("store", "k", timeout=5)
        except (otp.NoProc, otp.ExitError):
            pass


def test_a_leaked_process_fails_the_test(otp_node):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
'''


def test_the_fixtures_work_and_a_leak_is_caught(pytester):
    pytester.makepyfile(test_example=EXAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*processes left behind*sleep(60)*"])


def test_the_readme_example_passes(pytester):
    import os
    import re
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme.split("## Writing resilience tests", 1)[1]
    pytester.makepyfile(test_readme_example=re.search(r"```python\n(.*?)```", section, re.S).group(1))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
