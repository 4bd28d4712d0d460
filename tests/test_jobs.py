"""The crash-isolated job runner (otp.jobs.JobRunner) against real worker processes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import concurrent.futures

import psutil
import pytest

import otp
from otp.jobs import JobRunner, RemoteTraceback
from tests import job_funcs

pytestmark = pytest.mark.usefixtures("node")


def _gone(os_pids, timeout=10):
    gone, alive = psutil.wait_procs([p for p in map(_proc, os_pids) if p], timeout=timeout)
    return not alive


def _proc(os_pid):
    try:
        return psutil.Process(os_pid)
    except psutil.NoSuchProcess:
        return None


def test_submit_and_map_return_results_in_order():
    with JobRunner(workers=2) as runner:
        assert runner.submit(job_funcs.add, 2, y=3).result(10) == 5
        assert [f.result(10) for f in [runner.submit(job_funcs.inc, i) for i in range(100)]] == list(range(1, 101))
        assert list(runner.map(job_funcs.inc, range(50))) == list(range(1, 51))
        assert list(runner.map(job_funcs.add, range(50), range(50), chunksize=7)) == [2 * i for i in range(50)]


@pytest.mark.parametrize("how, reason", [("kill", "killed"), ("segv", ("signal", "SIGSEGV")),
                                         ("exit", ("exit_code", 3))])
def test_a_worker_that_dies_fails_only_its_own_job(how, reason):
    with JobRunner(workers=2) as runner:
        slow = [runner.submit(job_funcs.sleep_then, 0.2, i) for i in range(6)]
        doomed = runner.submit(job_funcs.die, how)
        with pytest.raises(otp.WorkerCrashed) as info:
            doomed.result(20)
        assert info.value.reason == reason
        assert [f.result(20) for f in slow] == list(range(6))
        assert [f.result(20) for f in [runner.submit(job_funcs.inc, i) for i in range(200)]] == list(range(1, 201))
        assert len(runner.worker_os_pids()) == 2


def test_a_crashed_job_is_retried_on_a_fresh_worker(tmp_path):
    with JobRunner(workers=1, retries=1) as runner:
        assert runner.submit(job_funcs.die_once, str(tmp_path / "marker")).result(20) == "survived"
    with JobRunner(workers=1, retries=2) as runner:
        with pytest.raises(otp.WorkerCrashed):
            runner.submit(job_funcs.die, "kill").result(30)


def test_a_job_over_its_timeout_kills_its_worker_which_is_replaced():
    with JobRunner(workers=1, timeout=0.5) as runner:
        before = runner.submit(job_funcs.worker_os_pid).result(10)
        with pytest.raises(TimeoutError):
            runner.submit(job_funcs.sleep_then, 30, "late").result(20)
        after = runner.submit(job_funcs.worker_os_pid).result(20)
        assert after != before
        assert _gone([before])


def test_a_worker_over_max_memory_is_killed_and_its_job_fails():
    with JobRunner(workers=1, max_memory="100MB") as runner:
        with pytest.raises(otp.WorkerCrashed) as info:
            runner.submit(job_funcs.hog, 300).result(30)
        kind, rss, limit = info.value.reason
        assert kind == "max_memory" and limit == 100_000_000 and rss > limit
        assert runner.submit(job_funcs.inc, 1).result(20) == 2


def test_max_tasks_per_child_recycles_workers():
    with JobRunner(workers=1, max_tasks_per_child=3) as runner:
        pids = [runner.submit(job_funcs.worker_os_pid).result(20) for _ in range(9)]
    assert len(set(pids)) == 3
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [3, 3, 3]


def test_shutdown_with_cancel_futures_cancels_what_has_not_started():
    runner = JobRunner(workers=1)
    futures = [runner.submit(job_funcs.sleep_then, 0.05, i) for i in range(400)]
    # Once the first job is done, some have run and some have not when the shutdown comes.
    futures[0].result(timeout=10)
    runner.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    cancelled = [f for f in futures if f.cancelled()]
    assert cancelled and len(cancelled) < len(futures)
    assert all(f.result() == i for i, f in enumerate(futures) if not f.cancelled())
    with pytest.raises(RuntimeError, match="after shutdown"):
        runner.submit(job_funcs.inc, 1)


def test_what_cannot_be_sent_is_refused_at_submit():
    def closure(x):
        return x
    with JobRunner(workers=1) as runner:
        with pytest.raises(TypeError, match="importable"):
            runner.submit(lambda: 1)
        with pytest.raises(TypeError, match="importable"):
            runner.submit(closure, 1)
        with pytest.raises(TypeError, match="object"):
            runner.submit(job_funcs.inc, object())
        assert runner.submit(job_funcs.inc, 1).result(10) == 2


def test_an_exception_comes_back_with_its_remote_traceback_and_the_worker_keeps_serving():
    with JobRunner(workers=1) as runner:
        pid = runner.submit(job_funcs.worker_os_pid).result(10)
        future = runner.submit(job_funcs.boom, "bad input")
        with pytest.raises(ValueError, match="bad input") as info:
            future.result(10)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "in boom" in str(info.value.__cause__)
        with pytest.raises(TypeError):
            runner.submit(job_funcs.unencodable_result).result(10)
        assert runner.submit(job_funcs.worker_os_pid).result(10) == pid


def test_the_initializer_runs_in_every_worker():
    with JobRunner(workers=2, initializer=job_funcs.initialize, initargs=("ready",)) as runner:
        assert {runner.submit(job_funcs.initialized).result(10) for _ in range(20)} == {"ready"}


def test_the_pickle_serializer_carries_any_python_object():
    with JobRunner(workers=1, serializer="pickle") as runner:
        assert runner.submit(job_funcs.unbox, job_funcs.Box(21)).result(10).value == 42
        with pytest.raises(ValueError, match="pickled"):
            runner.submit(job_funcs.boom, "pickled").result(10)


def test_no_worker_is_left_after_shutdown():
    with JobRunner(workers=2) as runner:
        pids = runner.worker_os_pids()
        assert runner.submit(job_funcs.inc, 1).result(10) == 2
    assert _gone(pids)


def test_no_worker_is_left_when_the_owning_program_is_killed():
    code = ("import json, otp\nfrom tests import job_funcs\nrunner = otp.jobs.JobRunner(workers=2)\n"
            "runner.submit(job_funcs.inc, 1).result(10)\n"
            "print(json.dumps(runner.worker_os_pids()), flush=True)\nimport time\ntime.sleep(60)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    harness = subprocess.Popen([sys.executable, "-m", "otp.pytest_plugin", "subreaper", sys.executable, "-c", code],
                               cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        pids = __import__("json").loads(harness.stdout.readline())
        program = [c for c in psutil.Process(harness.pid).children() if c.pid not in pids][0]
        program.kill()
        assert _gone(pids, timeout=5)
    finally:
        harness.wait(20)
        harness.stdout.close()
    from otp.local_node import remove_stale_rundirs
    remove_stale_rundirs()


def test_chaos_every_future_resolves_once_while_workers_are_killed():
    with JobRunner(workers=2) as runner:
        stop = threading.Event()
        kills = []

        def killer():
            rng = random.Random(7)
            while not stop.wait(0.05):
                pids = runner.worker_os_pids()
                if pids:
                    victim = rng.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            futures = [runner.submit(job_funcs.slow_inc, i) for i in range(5000)]
            done, pending = concurrent.futures.wait(futures, timeout=120)
        finally:
            stop.set()
            thread.join()
        assert not pending
        crashed = 0
        for i, future in enumerate(futures):
            exc = future.exception()
            if exc is None:
                assert future.result() == i + 1
            else:
                assert isinstance(exc, otp.WorkerCrashed), exc
                crashed += 1
        assert kills and crashed <= len(kills)
        assert [f.result(20) for f in [runner.submit(job_funcs.inc, i) for i in range(100)]] == list(range(1, 101))


def test_the_command_line_runs_a_file_of_jobs_in_order(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('[1, 2]\n[3, 4]\n\n["a", 1]\n[5]\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "otp", "jobs", "tests.job_funcs:add", "--input", str(source),
                           "--workers", "2"], cwd=root, capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert lines[:2] == ["3", "7"] and lines[3] == "5"
    assert '"line": 4' in lines[2] and "TypeError" in lines[2]
    assert done.returncode == 1
    assert "4 jobs: 3 succeeded, 1 failed" in done.stderr
