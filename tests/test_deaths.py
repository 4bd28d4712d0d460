"""The agent's death watch against real OS processes: this test process plays the zygote (the
parent that reaps), so the watch sees its children as the agent sees the zygote's."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import pytest

from otp.deaths import DeathWatch


def pidfds_work() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):   # before Linux 5.3, or refused by a sandbox
        return False
    return True


pytestmark = pytest.mark.skipif(not pidfds_work(),
                                reason="no pidfds here: the agent hears of every death from the zygote")


@pytest.fixture
def child():
    """Starts child processes of this test; any still running at the end is killed and reaped."""
    started = []

    def start(code: str = "import time; time.sleep(60)") -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", code]))
        return started[-1]
    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


def wait_deaths(watch: DeathWatch) -> list:
    readable, _, _ = select.select([watch.fileno()], [], [], 10)
    assert readable, "no death reported"
    return watch.deaths()


def test_a_killed_process_is_reported_with_its_wait_status_before_it_is_reaped(child):
    watch = DeathWatch(zygote_pid=os.getpid())
    victim = child()
    watch.add(7, victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    [(proc_id, os_pid, status)] = wait_deaths(watch)
    assert (proc_id, os_pid) == (7, victim.pid) and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert victim.wait(10) == -signal.SIGKILL
    assert watch.deaths() == []           # reported once, then watched no more


def test_a_death_is_reported_after_the_parent_reaped_it_with_the_status_if_the_kernel_kept_it(child):
    watch = DeathWatch(zygote_pid=os.getpid())
    victim = child()
    watch.add(8, victim.pid)
    victim.kill()
    victim.wait(10)                        # reaped: no zombie left to read
    [(proc_id, _, status)] = wait_deaths(watch)
    assert proc_id == 8 and status in (signal.SIGKILL, None)   # None: the zygote's report decides


def test_a_process_that_exits_on_its_own_gives_its_exit_status(child):
    watch = DeathWatch(zygote_pid=os.getpid())
    quitter = child("import os; os._exit(3)")
    watch.add(9, quitter.pid)
    [(proc_id, _, status)] = wait_deaths(watch)
    assert proc_id == 9 and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    assert quitter.wait(10) == 3


def test_a_zombie_of_another_parent_is_not_read_as_the_zygotes(child):
    watch = DeathWatch(zygote_pid=os.getppid())   # not the parent of what this test starts
    victim = child()
    watch.add(10, victim.pid)
    victim.kill()
    [(proc_id, _, status)] = wait_deaths(watch)
    assert proc_id == 10 and status is None       # not reaped yet, so the pidfd holds no status


def test_a_discarded_process_is_not_reported(child):
    watch = DeathWatch(zygote_pid=os.getpid())
    first, second = child(), child()
    watch.add(1, first.pid)
    watch.add(2, second.pid)
    watch.discard(1)
    first.kill()
    second.kill()
    assert [proc_id for proc_id, _, _ in wait_deaths(watch)] == [2]
