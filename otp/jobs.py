"""A crash-isolated job runner: a ``concurrent.futures.Executor`` whose workers are supervised
OS processes, any of which may segfault, leak or be killed without breaking it.

    with otp.jobs.JobRunner(workers=4, timeout=30, max_memory="512MB", retries=1) as runner:
        future = runner.submit(mymodule.work, 42)
        results = list(runner.map(mymodule.work, range(1000), chunksize=64))

The workers are GenServers under a ``simple_one_for_one`` supervisor. A dispatcher (a thread of
the calling program, itself an otp process) hands them jobs in batches and takes their results
in batches, so that tiny jobs cost little. A worker that dies fails only the job it was
running, with ``otp.WorkerCrashed(reason)`` (``"killed"``, ``("signal", "SIGSEGV")``,
``("exit_code", n)``, ``("max_memory", rss, limit)``), and only after ``retries`` further
attempts on a fresh worker; the jobs queued behind it go to the others, and the supervisor
starts its replacement at once. Each worker writes the id of the job it is running into a
shared slot before it starts it, so the dispatcher knows exactly which job a death belongs to.

Functions travel by reference (``module:qualname``); arguments and results with the msgpack
codec, so a lambda, a closure or an unencodable argument is refused by ``submit`` with a
``TypeError``. ``serializer="pickle"`` sends arbitrary Python objects instead (the workers are
local processes of this node, so no pickle crosses a network).
"""
from __future__ import annotations

import builtins
import collections
import concurrent.futures
import importlib
import itertools
import mmap
import os
import pickle
import re
import struct
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import otp
from otp import codec
from otp.errors import OtpError
from otp.funcref import function_reference, load_function
from otp.runtime import current

SLOT = struct.Struct("=qd")     # job id running (0: none), when it started (time.monotonic)
MAX_WINDOW = 256
"""Jobs one worker may have queued at once (fewer when jobs are slow: see ``_Worker.window``)."""
QUEUED_WORK_SECONDS = 0.005
"""How much work, by the measured job duration, a worker is given ahead."""
MEMORY_CHECK_INTERVAL = 0.1


class WorkerCrashed(OtpError):
    """The worker running a job died; ``reason`` says how (DESIGN section 3)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"the worker running this job died: {reason!r}")
        self.reason = reason


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (the ``__cause__`` of the exception
    a future raises, as ``concurrent.futures`` does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(Exception):
    """An exception raised in a worker whose type cannot be rebuilt here."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


def parse_bytes(size: int | str | None) -> int | None:
    """``512MB``, ``2GiB``, ``1e9`` or an int, in bytes."""
    if size is None or type(size) is int:
        return size
    match = re.fullmatch(r"\s*([0-9.e+]+)\s*([kmgt]?)(i?b)?\s*", str(size).lower())
    if not match:
        raise ValueError(f"max_memory is bytes or a size like '512MB'; got {size!r}")
    number, unit, suffix = match.groups()
    base = 1024 if suffix == "ib" else 1000
    return int(float(number) * base ** " kmgt".index(unit or " "))


# --------------------------------------------------------------------- the worker process

class _JobWorker(otp.GenServer):
    """Runs the batches of jobs the dispatcher casts to it, reports results in batches."""

    def init(self, dispatcher: otp.Pid, slots_path: str, options: dict, index: int) -> None:
        self.dispatcher, self.index = dispatcher, index
        self.pickled = options["serializer"] == "pickle"
        self.tasks_left = options["max_tasks_per_child"]
        with open(slots_path, "r+b") as f:
            self.slots = mmap.mmap(f.fileno(), 0)
        self.offset = index * SLOT.size
        self.functions: dict[tuple, Callable] = {}
        if options["initializer"] is not None:
            initializer = load_function(options["initializer"])
            initializer(*codec.decode(options["initargs"]))
        otp.send(dispatcher, ("up", index, otp.self(), os.getpid()))

    def handle_cast(self, batch: list) -> Any:
        results = []
        started = time.perf_counter()
        slots, offset, pack = self.slots, self.offset, SLOT.pack_into
        for job_id, kind, funcref, payload in batch:
            pack(slots, offset, job_id, time.monotonic())
            results.append(self._run(job_id, kind, funcref, payload))
            pack(slots, offset, 0, 0.0)
            if self.tasks_left is not None:
                self.tasks_left -= 1
                if self.tasks_left <= 0:
                    break
        report = ("done", self.index, results, time.perf_counter() - started)
        try:
            otp.send(self.dispatcher, report)
        except TypeError:  # some result cannot be encoded: that job fails, not the batch
            for entry in results:
                try:
                    codec.encode(entry[2])
                except TypeError as exc:
                    entry[1:] = [False, self._error(exc)]
            otp.send(self.dispatcher, report)
        if self.tasks_left is not None and self.tasks_left <= 0:
            return otp.Stop("normal")  # recycled: the supervisor starts a fresh one
        return None

    def _run(self, job_id: int, kind: str, funcref: Any, payload: Any) -> list:
        try:
            if self.pickled:
                func, args, kwargs = pickle.loads(payload)
            else:
                key = tuple(funcref)
                func = self.functions.get(key)
                if func is None:
                    func = self.functions[key] = load_function(funcref)
                args, kwargs = codec.decode(payload)
            if kind == "chunk":  # args holds one column per iterable of map
                value = [func(x) for x in args[0]] if len(args) == 1 else [func(*item) for item in zip(*args)]
            else:
                value = func(*args, **kwargs)
            return [job_id, True, pickle.dumps(value) if self.pickled else value]
        except Exception as exc:
            return [job_id, False, self._error(exc)]

    def _error(self, exc: Exception) -> Any:
        """What the dispatcher needs to raise ``exc`` again: its type, args and traceback."""
        text = "".join(traceback.format_exception(exc))
        if self.pickled:
            try:
                return pickle.dumps((exc, text))
            except Exception:
                return pickle.dumps((RemoteError(type(exc).__qualname__, str(exc)), text))
        args = exc.args
        try:
            codec.encode(args)
        except TypeError:
            args = (str(exc),)
        return [type(exc).__module__, type(exc).__qualname__, list(args), text]


# --------------------------------------------------------------------- the dispatcher

@dataclass(eq=False, slots=True)
class _Job:
    id: int
    future: concurrent.futures.Future
    kind: str                     # "call" or "chunk"
    funcref: Any
    payload: Any
    attempts: int = 0
    started: bool = False         # its future is running (set once, when first sent)


@dataclass(eq=False)
class _Worker:
    index: int
    pid: otp.Pid
    os_pid: int
    ref: otp.Ref
    inflight: dict = field(default_factory=dict)   # job id -> _Job, in the order sent
    seconds_per_job: float = 0.001
    kill_cause: Any = None

    def window(self) -> int:
        return max(1, min(MAX_WINDOW, int(QUEUED_WORK_SECONDS / max(self.seconds_per_job, 1e-7))))


class JobRunner(concurrent.futures.Executor):
    """An Executor whose workers are supervised OS processes; see the module doc."""

    def __init__(self, workers: int | None = None, timeout: float | None = None,
                 max_memory: int | str | None = None, max_tasks_per_child: int | None = None,
                 retries: int = 0, initializer: Callable | None = None, initargs: tuple = (),
                 serializer: str = "msgpack") -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if type(workers) is not int or workers < 1:
            raise ValueError(f"workers is an int >= 1; got {workers!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout is None or seconds > 0; got {timeout!r}")
        if max_tasks_per_child is not None and (type(max_tasks_per_child) is not int or max_tasks_per_child < 1):
            raise ValueError(f"max_tasks_per_child is None or an int >= 1; got {max_tasks_per_child!r}")
        if type(retries) is not int or retries < 0:
            raise ValueError(f"retries is an int >= 0; got {retries!r}")
        if serializer not in ("msgpack", "pickle"):
            raise ValueError(f"serializer is 'msgpack' or 'pickle'; got {serializer!r}")
        self._workers_wanted = workers
        self._timeout = timeout
        self._max_memory = parse_bytes(max_memory)
        self._retries = retries
        self._pickled = serializer == "pickle"
        options = {"serializer": serializer, "max_tasks_per_child": max_tasks_per_child,
                   "initializer": None if initializer is None else function_reference(initializer),
                   "initargs": codec.encode(tuple(initargs))}
        self._ids = itertools.count(1)
        self._funcrefs: dict[Callable, list] = {}
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._shutdown = False
        self._sleeping = False
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        # The slots live in the node's run directory: they go with the node, even a killed one.
        fd, self._slots_path = tempfile.mkstemp(prefix="jobs-", dir=current().node.rundir)
        os.ftruncate(fd, SLOT.size * workers)
        os.close(fd)
        self._slots_file = open(self._slots_path, "r+b")
        self._slots = mmap.mmap(self._slots_file.fileno(), 0)
        self._options = options
        self._thread = threading.Thread(target=self._dispatch_loop, name="otp-jobs-dispatcher", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._release_slots()
            raise self._start_error

    # ----------------------------------------------------------------- Executor API

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return its Future. ``TypeError`` at once
        if ``fn`` is not importable or the arguments cannot be encoded."""
        return self._submit("call", fn, args, kwargs)

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Like ``Executor.map``; ``chunksize`` > 1 sends that many calls as one job."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        items = zip(*iterables)
        futures = []
        while True:
            chunk = list(itertools.islice(items, chunksize))
            if not chunk:
                break
            futures.append(self._submit("chunk", fn, chunk, {}))
        return _chain_results(futures, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more jobs; ``cancel_futures`` cancels those not started; ``wait`` waits for the
        rest, then stops the workers."""
        with self._lock:
            already = self._shutdown
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    job = self._queue.popleft()
                    if job.future.cancel():
                        self._jobs.pop(job.id, None)
                    else:
                        self._queue.appendleft(job)
                        break
        if not already:
            self._wake()
        if wait and self._thread.is_alive():
            self._thread.join()

    def worker_os_pids(self) -> list[int]:
        """The OS pids of the workers now running (for tools and tests)."""
        return [worker.os_pid for worker in list(self._workers.values())]

    # ----------------------------------------------------------------- submitting

    def _submit(self, kind: str, fn: Callable, args: Any, kwargs: dict) -> concurrent.futures.Future:
        if self._pickled:
            payload = pickle.dumps((fn, args, kwargs))
            funcref = None
        else:
            funcref = self._funcrefs.get(fn)
            if funcref is None:
                funcref = function_reference(fn)  # TypeError for a lambda or a closure
                if len(self._funcrefs) < 1024:
                    self._funcrefs[fn] = funcref
            # Encoded here, once: an unencodable argument raises TypeError in the caller. A
            # chunk goes as columns (one flat list per iterable), which decode fastest.
            payload = codec.encode([[list(column) for column in zip(*args)] if kind == "chunk" else args, kwargs])
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a JobRunner after shutdown")
            job = _Job(next(self._ids), future, kind, funcref, payload)
            self._jobs[job.id] = job
            self._queue.append(job)
            sleeping = self._sleeping
        if sleeping:
            self._wake()
        return future

    def _wake(self) -> None:
        otp.send(self._dispatcher, "wake")

    # ----------------------------------------------------------------- the dispatcher loop

    def _dispatch_loop(self) -> None:
        try:
            self._dispatcher = otp.self()
            self._workers: dict[int, _Worker] = {}
            self._by_ref: dict[otp.Ref, _Worker] = {}
            spec = otp.child_spec("job_worker", _JobWorker, args=(self._dispatcher, self._slots_path, self._options),
                                  restart="permanent", shutdown="brutal_kill")
            # Workers die by design here: their supervisor never gives up on them.
            self._sup = otp.Supervisor.start_link([spec], strategy="simple_one_for_one", intensity=10**9, period=1)
            for index in range(self._workers_wanted):
                otp.supervisor.start_child(self._sup, (index,))
            while len(self._workers) < self._workers_wanted:
                self._on_message(otp.receive(timeout=30))
        except BaseException as exc:
            self._start_error = exc
            if hasattr(self, "_sup"):
                otp.stop(self._sup, "shutdown")
            current().close()
            self._started.set()
            return
        self._started.set()
        try:
            self._serve()
        finally:
            self._stop_workers()
            current().close()

    def _serve(self) -> None:
        next_memory_check = time.monotonic()
        while True:
            self._dispatch()
            with self._lock:
                if self._shutdown and not self._jobs:
                    return
                # Submitters wake an idle dispatcher; a busy one is woken by results anyway.
                self._sleeping = not self._queue
            timeout = self._next_timer(next_memory_check)
            try:
                msg = otp.receive(timeout=timeout)
            except otp.Timeout:
                msg = None
            self._sleeping = False
            if msg is not None:
                self._on_message(msg)
            now = time.monotonic()
            if self._timeout is not None:
                self._check_timeouts(now)
            if self._max_memory is not None and now >= next_memory_check:
                self._check_memory()
                next_memory_check = now + MEMORY_CHECK_INTERVAL

    def _next_timer(self, next_memory_check: float) -> float | None:
        deadlines = []
        if self._max_memory is not None:
            deadlines.append(next_memory_check)
        if self._timeout is not None:
            for worker in self._workers.values():
                job_id, started = SLOT.unpack_from(self._slots, worker.index * SLOT.size)
                if job_id:
                    deadlines.append(started + self._timeout)
                elif worker.inflight:
                    deadlines.append(time.monotonic() + min(self._timeout, 0.05))
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _dispatch(self) -> None:
        for worker in self._workers.values():
            room = worker.window() - len(worker.inflight)
            if room <= 0 or worker.kill_cause is not None:
                continue
            batch = []
            with self._lock:
                while room > 0 and self._queue:
                    job = self._queue.popleft()
                    if not job.started:
                        if not job.future.set_running_or_notify_cancel():
                            self._jobs.pop(job.id, None)  # cancelled while queued
                            continue
                        job.started = True
                    worker.inflight[job.id] = job
                    batch.append([job.id, job.kind, job.funcref, job.payload])
                    room -= 1
            if batch:
                otp.cast(worker.pid, batch)
            if not self._queue:
                return

    def _on_message(self, msg: Any) -> None:
        if type(msg) is tuple and msg and msg[0] == "done":
            _, index, results, elapsed = msg
            worker = self._workers.get(index)
            if worker is None:
                return
            if results:
                worker.seconds_per_job = 0.7 * worker.seconds_per_job + 0.3 * (elapsed / len(results))
            settled = []
            for job_id, ok, value in results:
                job = worker.inflight.pop(job_id, None)
                if job is not None:
                    settled.append((job, ok, value))
            with self._lock:
                for job, _, _ in settled:
                    self._jobs.pop(job.id, None)
            for job, ok, value in settled:
                self._settle(job, ok, value)
        elif type(msg) is tuple and msg and msg[0] == "up":
            _, index, pid, os_pid = msg
            worker = _Worker(index, pid, os_pid, otp.monitor(pid))
            self._workers[index] = worker
            self._by_ref[worker.ref] = worker
        elif isinstance(msg, otp.Down):
            worker = self._by_ref.pop(msg.ref, None)
            if worker is not None:
                self._worker_died(worker, msg.reason)

    def _settle(self, job: _Job, ok: bool, value: Any) -> None:
        if ok:
            job.future.set_result(pickle.loads(value) if self._pickled else value)
        else:
            job.future.set_exception(self._rebuild_error(value))

    def _rebuild_error(self, value: Any) -> BaseException:
        if self._pickled:
            exc, text = pickle.loads(value)
        else:
            module, qualname, args, text = value
            exc = _rebuild_exception(module, qualname, args)
        exc.__cause__ = RemoteTraceback(text)
        return exc

    def _worker_died(self, worker: _Worker, reason: Any) -> None:
        """Fail the job it was running (or retry it); the others it held go back in the queue."""
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]
        job_id, _ = SLOT.unpack_from(self._slots, worker.index * SLOT.size)
        SLOT.pack_into(self._slots, worker.index * SLOT.size, 0, 0.0)
        requeue = []
        for job in worker.inflight.values():
            if job.id != job_id:
                requeue.append(job)  # not started, or done with its result lost: run it again
                continue
            cause = worker.kill_cause or reason
            job.attempts += 1
            if job.attempts <= self._retries:
                requeue.append(job)
            elif type(cause) is tuple and cause and cause[0] == "timeout":
                self._fail(job, TimeoutError(f"job ran longer than {self._timeout} s: its worker was killed"))
            else:
                self._fail(job, WorkerCrashed(cause))
        with self._lock:
            self._queue.extendleft(reversed(requeue))

    def _fail(self, job: _Job, exc: BaseException) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)
        job.future.set_exception(exc)

    def _check_timeouts(self, now: float) -> None:
        for worker in list(self._workers.values()):
            job_id, started = SLOT.unpack_from(self._slots, worker.index * SLOT.size)
            if job_id and worker.kill_cause is None and now - started > self._timeout:
                worker.kill_cause = ("timeout", job_id)
                otp.exit(worker.pid, "kill")

    def _check_memory(self) -> None:
        import psutil
        for worker in list(self._workers.values()):
            try:
                rss = psutil.Process(worker.os_pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > self._max_memory and worker.kill_cause is None:
                worker.kill_cause = ("max_memory", rss, self._max_memory)
                otp.exit(worker.pid, "kill")

    def _stop_workers(self) -> None:
        try:
            otp.stop(self._sup, "shutdown")
        except otp.OtpError:
            pass
        with self._lock:
            left = list(self._jobs.values())
            self._jobs.clear()
            self._queue.clear()
        for job in left:  # only after an error in the dispatcher
            if not job.future.done():
                job.future.set_exception(RuntimeError("the JobRunner stopped"))
        self._release_slots()

    def _release_slots(self) -> None:
        self._slots.close()
        self._slots_file.close()
        try:
            os.unlink(self._slots_path)
        except FileNotFoundError:
            pass


def _rebuild_exception(module: str, qualname: str, args: list) -> BaseException:
    """The worker's exception, rebuilt from its type and args where the type can be found."""
    try:
        cls: Any = builtins if module == "builtins" else importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls(*args)
    except Exception:
        pass
    return RemoteError(qualname, " ".join(str(a) for a in args))


def _chain_results(futures: list, timeout: float | None) -> Iterator:
    end = None if timeout is None else time.monotonic() + timeout
    try:
        futures.reverse()
        while futures:
            future = futures.pop()
            left = None if end is None else end - time.monotonic()
            yield from future.result(left)
    finally:
        for future in futures:
            future.cancel()


# --------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """``python -m otp jobs MODULE:FUNC --input FILE``: one JSON argument list per input line;
    one JSON result per output line, in input order (a failed job prints
    ``{"error": ..., "line": n}``); exit status 1 if any job failed."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m otp jobs", description=main.__doc__)
    parser.add_argument("target", metavar="MODULE:FUNC")
    parser.add_argument("--input", required=True, help="file of JSON argument lists, one per line ('-': stdin)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per job")
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--max-memory", default=None, help="per worker, e.g. 512MB")
    args = parser.parse_args(argv)
    module, _, qualname = args.target.partition(":")
    try:
        func: Any = importlib.import_module(module)
        for part in qualname.split("."):
            func = getattr(func, part)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(f"cannot load {args.target}: {exc}")
    source = sys.stdin if args.input == "-" else open(args.input)
    with source:
        jobs = []
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                job_args = json.loads(line)
            except ValueError as exc:
                parser.error(f"line {number} of {args.input} is not JSON: {exc}")
            if type(job_args) is not list:
                parser.error(f"line {number} of {args.input} is not a JSON list of arguments")
            jobs.append((number, job_args))
    failed = 0
    show_progress = sys.stderr.isatty()
    with JobRunner(workers=args.workers, timeout=args.timeout, retries=args.retries,
                   max_memory=args.max_memory) as runner:
        futures = [runner.submit(func, *job_args) for _, job_args in jobs]
        for done, ((number, _), future) in enumerate(zip(jobs, futures), 1):
            try:
                line = json.dumps(future.result(), default=repr)
            except Exception as exc:
                failed += 1
                line = json.dumps({"error": f"{type(exc).__name__}: {exc}", "line": number})
            print(line, flush=not show_progress)
            if show_progress:
                width = 40
                filled = width * done // len(jobs)
                sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{len(jobs)} ({failed} failed)")
    if show_progress:
        sys.stderr.write("\n")
    sys.stderr.write(f"{len(jobs)} jobs: {len(jobs) - failed} succeeded, {failed} failed\n")
    return 1 if failed else 0
