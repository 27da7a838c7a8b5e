"""The model pool: worker processes that load each model once and run model jobs from queues.

Speech models are heavy and blocking. Run on the event loop's process, they compete for the
GIL with the audio of every call; in worker processes they do not, and the number of processes
(one per core by default), not the GIL, sets how much decoding and synthesis the bot does at
once. The loop only hands jobs over and gets results back.

Each worker has a driver thread in the bot's process. The driver takes the next job from the
pool's queue (first come, first served within a priority; a job bound to a session only by the
worker holding the session), sends it, waits for the result, and resolves the job's future; so a
worker holds one job at a time, and what waits, waits in the queue where every worker can take
it. Speech synthesis goes first (``URGENT``): its sentence is the answer a caller is waiting
for, a short job, while a decode queued behind it is only a little later; the other way round,
a burst of decodes holds back every answer, and the sentences in the middle of a reply too.

Failures:

* an engine that raises fails that job (``ModelError``);
* a worker that dies (killed, out of memory, a crash in a native library) or exceeds
  ``job_timeout_s`` on one job (it is killed then) is restarted, with every engine loaded
  again; its job is retried once on the next free worker, and fails with ``WorkerLost`` if it
  dies a second time. A session's state dies with its worker: its jobs fail with ``WorkerLost``
  until the session is released (a streaming decoder starts its utterance again).

Workers start with the ``forkserver`` method: the bot's process has threads (these drivers,
executors, the HTTP server), and forking a process with threads can copy a lock some thread
held and deadlock the child; ``spawn`` would re-import the bot's main module in every worker.
The fork server is a small clean process that only imports ``voxpipe.models.forkserver``, which
puts one-thread limits for the numeric libraries in the environment every worker inherits.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import logging
import multiprocessing
import multiprocessing.util  # its exit handler must be registered before ours (see _close_all)
import os
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from voxpipe.models import worker as worker_module
from voxpipe.models.engine import NORMAL, URGENT, ModelError, WorkerLost

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from voxpipe.models.engine import Engine

log = logging.getLogger("voxpipe.models")

START_METHOD: Final = "forkserver"
# How long a new worker may take to start and load every engine.
START_TIMEOUT_S = 180.0
# Wait before starting again a worker that failed to start.
RESTART_BACKOFF_S = 1.0


class _Died(Exception):
    """The worker of a slot is gone (or was killed for taking too long)."""


@dataclass(eq=False)
class _Job:
    key: str
    method: str
    args: tuple[Any, ...]
    affinity: str | None
    future: concurrent.futures.Future[Any]
    priority: int = NORMAL
    retried: bool = False
    running: bool = False
    queued_at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Load:
    """An engine every worker must load; done when each has answered."""

    key: str
    label: str
    pickled: bytes
    pending: set[int]
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)

    def answer(self, index: int, error: str | None) -> None:
        self.pending.discard(index)
        if self.future.done():
            return
        if error is not None:
            named = error if error.startswith(f"{self.label}:") else f"{self.label}: {error}"
            self.future.set_exception(ModelError(named))
        elif not self.pending:
            self.future.set_result(None)


@dataclass(eq=False)
class _Slot:
    """One worker process, seen from its driver thread."""

    index: int
    process: BaseProcess | None = None
    requests: Connection | None = None
    results: Connection | None = None
    loaded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    job: _Job | None = None
    thread: threading.Thread | None = None
    sending: threading.Lock = field(default_factory=threading.Lock)


class ModelPool:
    """``workers`` model worker processes fed from one queue (see the module's docstring).

    Thread-safe and independent of any event loop: ``submit`` returns a
    ``concurrent.futures.Future``; ``run`` awaits one from asyncio code.
    """

    def __init__(self, workers: int, *, job_timeout_s: float = 60.0, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError("a model pool needs at least one worker")
        self.workers = workers
        self.job_timeout_s = job_timeout_s
        self.threads = threads
        self.restarts = 0
        self.calibration: dict[str, Any] = {}  # what ``voxpipe.models.capacity`` measured
        self._cond = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._engines: dict[str, _Load] = {}
        self._affinity: dict[str, int] = {}
        self._lost: set[str] = set()
        self._slots = [_Slot(i) for i in range(workers)]
        self._closing = False
        self._started = False

    # --- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (in the background: ``load`` waits for them)."""
        with self._cond:
            if self._started:
                return
            self._started = True
        for slot in self._slots:
            slot.thread = threading.Thread(
                target=self._drive, args=(slot,), name=f"voxpipe-model-{slot.index}", daemon=True
            )
            slot.thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers; jobs still queued or running fail with ``WorkerLost``."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in queued:
            _fail(job, WorkerLost("the model pool was closed"))
        # Idle workers are asked to stop (they exit as a Python process should); busy ones, and
        # any that do not stop in time, are terminated.
        asked = []
        for slot in self._slots:
            with slot.sending:
                if slot.requests is not None and slot.job is None and slot.process is not None:
                    with contextlib.suppress(OSError, ValueError):
                        slot.requests.send(("stop",))
                        asked.append(slot.process)
        deadline = time.monotonic() + timeout_s
        for process in asked:
            process.join(max(0.0, deadline - time.monotonic()))
        for slot in self._slots:
            _stop_process(slot, timeout_s)
        for slot in self._slots:
            if slot.thread is not None and slot.thread is not threading.current_thread():
                slot.thread.join(timeout_s)

    # --- engines and jobs ------------------------------------------------------------------

    def add(self, engine: Engine) -> concurrent.futures.Future[None]:
        """Have every worker load ``engine`` (once: an engine already added is not loaded
        again). The future fails with ``ModelError`` when a worker cannot load it."""
        self.start()
        with self._cond:
            known = self._engines.get(engine.key)
            if known is not None:
                return known.future
            load = _Load(
                engine.key,
                engine.label,
                pickle.dumps(engine),
                pending={slot.index for slot in self._slots},
            )
            self._engines[engine.key] = load
            self._cond.notify_all()
        return load.future

    async def load(self, engine: Engine) -> None:
        """``add`` for asyncio code: returns once every worker has loaded ``engine``."""
        await asyncio.wrap_future(self.add(engine))

    def submit(
        self,
        key: str,
        method: str,
        *args: Any,
        affinity: str | None = None,
        priority: int = NORMAL,
    ) -> concurrent.futures.Future[Any]:
        """Queue a job: ``method(*args)`` of engine ``key`` in a worker. Jobs with the same
        ``affinity`` (a session) run on one worker, in the order submitted; jobs of a lower
        ``priority`` number go first."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        job = _Job(key, method, args, affinity, future, priority)
        with self._cond:
            if self._closing:
                _fail(job, WorkerLost("the model pool was closed"))
                return future
            if affinity is not None:
                if affinity in self._lost:
                    _fail(job, WorkerLost("the worker holding this session died"))
                    return future
                if affinity not in self._affinity:
                    self._affinity[affinity] = self._least_loaded()
            self._queue.append(job)
            self._cond.notify_all()
        return future

    async def run(
        self,
        key: str,
        method: str,
        *args: Any,
        affinity: str | None = None,
        priority: int = NORMAL,
    ) -> Any:
        """Run a job and return its result (raises ``ModelError`` or ``WorkerLost``).

        Cancelling the caller drops the job if no worker has taken it yet.
        """
        future = self.submit(key, method, *args, affinity=affinity, priority=priority)
        return await asyncio.wrap_future(future)

    def release(self, affinity: str) -> None:
        """The session is over: its worker may take other sessions, and a lost one is
        forgotten."""
        with self._cond:
            self._affinity.pop(affinity, None)
            self._lost.discard(affinity)

    def stats(self) -> dict[str, int]:
        """Workers, how many are alive and busy, jobs queued, and restarts so far."""
        with self._cond:
            return {
                "workers": self.workers,
                "alive": sum(1 for s in self._slots if _alive(s)),
                "busy": sum(1 for s in self._slots if s.job is not None),
                "queued": len(self._queue),
                "restarts": self.restarts,
            }

    def pids(self, *, busy: bool = False) -> list[int]:
        """The process ids of the live workers (``busy``: those running a job)."""
        with self._cond:
            return [
                s.process.pid
                for s in self._slots
                if s.process is not None
                and s.process.pid is not None
                and s.process.is_alive()
                and (s.job is not None or not busy)
            ]

    def _least_loaded(self) -> int:
        sessions = collections.Counter(self._affinity.values())
        alive = [s.index for s in self._slots if _alive(s)] or [s.index for s in self._slots]
        return min(alive, key=lambda i: (sessions[i], i))

    # --- the driver of one worker ----------------------------------------------------------

    def _drive(self, slot: _Slot) -> None:
        while True:
            if slot.process is None:
                if self._closing:
                    return
                if not self._start_worker(slot):
                    with self._cond:
                        self._cond.wait_for(lambda: self._closing, RESTART_BACKOFF_S)
                    continue
            work: _Job | _Load | None = None
            with self._cond:
                while not self._closing:
                    work = self._next_load(slot) or self._take(slot)
                    if work is not None:
                        break
                    self._cond.wait()
                if self._closing:
                    return
            try:
                if isinstance(work, _Load):
                    self._load_in(slot, work)
                else:
                    assert work is not None
                    self._run_in(slot, work)
            except _Died as exc:
                self._on_death(slot, str(exc))

    def _next_load(self, slot: _Slot) -> _Load | None:
        for load in self._engines.values():
            if load.key not in slot.loaded and load.key not in slot.failed:
                return load
        return None

    def _take(self, slot: _Slot) -> _Job | None:
        """The first queued job of the highest priority this worker may run (a session's only
        on its own worker)."""
        while True:
            best: _Job | None = None
            for job in self._queue:
                if job.affinity is not None and self._affinity.get(job.affinity) != slot.index:
                    continue
                if best is None or job.priority < best.priority:
                    best = job
                    if job.priority == URGENT:
                        break
            if best is None:
                return None
            self._queue.remove(best)
            if not best.running:
                if not best.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                best.running = True
            slot.job = best
            return best

    def _start_worker(self, slot: _Slot) -> bool:
        """Start the slot's worker and load every engine added so far; False if it failed."""
        context = multiprocessing.get_context(START_METHOD)
        context.set_forkserver_preload(["voxpipe.models.forkserver"])
        requests_r, requests_w = context.Pipe(duplex=False)
        results_r, results_w = context.Pipe(duplex=False)
        process = context.Process(
            target=worker_module.main,
            args=(requests_r, results_w, self.threads),
            name=f"voxpipe-model-{slot.index}",
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:
            log.error("model worker %d could not start: %s", slot.index, exc)
            self._fail_loads(slot, f"the worker could not start: {exc}")
            return False
        finally:
            requests_r.close()
            results_w.close()
        slot.process, slot.requests, slot.results = process, requests_w, results_r
        slot.loaded, slot.failed = set(), set()
        try:
            self._receive(slot, START_TIMEOUT_S)  # ("ready", pid)
            while True:
                with self._cond:
                    load = self._next_load(slot)
                if load is None:
                    break
                self._load_in(slot, load)
        except _Died as exc:
            log.error("model worker %d failed at start: %s", slot.index, exc)
            self._fail_loads(slot, f"the worker failed at start ({exc})")
            _stop_process(slot, 1.0)
            return False
        log.info("model worker %d started (pid %s)", slot.index, process.pid)
        return True

    def _load_in(self, slot: _Slot, load: _Load) -> None:
        self._send(slot, ("load", load.key, load.pickled))
        reply = self._receive(slot, START_TIMEOUT_S)
        error = reply[2] if reply[0] == "load_failed" else None
        with self._cond:
            (slot.failed if error else slot.loaded).add(load.key)
            load.answer(slot.index, error)
            if error and self._engines.get(load.key) is load:
                del self._engines[load.key]  # not loaded again; a later ``add`` tries afresh

    def _fail_loads(self, slot: _Slot, error: str) -> None:
        with self._cond:
            for load in self._engines.values():
                if slot.index in load.pending:
                    load.answer(slot.index, error)

    def _run_in(self, slot: _Slot, job: _Job) -> None:
        started = time.monotonic()
        self._send(slot, ("run", job.key, job.method, job.args))
        reply = self._receive(slot, self.job_timeout_s)
        with self._cond:
            slot.job = None
            queued = len(self._queue)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "worker %d: %s.%s waited %.3f s, ran %.3f s; %d queued",
                slot.index,
                job.key.split(":", 1)[0],
                job.method,
                started - job.queued_at,
                time.monotonic() - started,
                queued,
            )
        if reply[0] == "done":
            job.future.set_result(reply[1])
        else:
            job.future.set_exception(ModelError(f"{job.key.split(':', 1)[0]}: {reply[1]}"))

    def _send(self, slot: _Slot, message: tuple[Any, ...]) -> None:
        # The worker is idle and reading, so this write does not wait on a busy worker.
        try:
            with slot.sending:
                if slot.requests is None:
                    raise _Died("the pool is closing")
                slot.requests.send(message)
        except (OSError, EOFError) as exc:
            raise _Died(f"its pipe broke ({exc})") from None

    def _receive(self, slot: _Slot, timeout_s: float) -> tuple[Any, ...]:
        assert slot.results is not None and slot.process is not None
        results, process = slot.results, slot.process
        try:
            if not results.poll(timeout_s):
                process.kill()
                raise _Died(f"it took over {timeout_s:g} s and was killed")
            reply: tuple[Any, ...] = results.recv()
        except (EOFError, OSError):
            process.join(1.0)
            raise _Died(_exit_reason(process)) from None
        return reply

    def _on_death(self, slot: _Slot, reason: str) -> None:
        _stop_process(slot, 1.0)
        with self._cond:
            if self._closing:
                if slot.job is not None:
                    _fail(slot.job, WorkerLost("the model pool was closed"))
                    slot.job = None
                return
            self.restarts += 1
            job, slot.job = slot.job, None
            lost = {s for s, index in self._affinity.items() if index == slot.index}
            for session in lost:
                del self._affinity[session]
            self._lost |= lost
            for queued in [j for j in self._queue if j.affinity in lost]:
                self._queue.remove(queued)
                _fail(queued, WorkerLost("the worker holding this session died"))
            retried = job is not None and job.affinity is None and not job.retried
            if job is not None and retried:
                job.retried = True
                self._queue.appendleft(job)
            elif job is not None:
                _fail(job, WorkerLost(f"the model worker running it died ({reason})"))
            self._cond.notify_all()
        log.warning(
            "model worker %d died (%s); restarting it%s",
            slot.index,
            reason,
            "; its job is retried once" if retried else "",
        )


def _alive(slot: _Slot) -> bool:
    return slot.process is not None and slot.process.is_alive()


def _fail(job: _Job, error: Exception) -> None:
    if not job.running and not job.future.set_running_or_notify_cancel():
        return
    job.running = True
    if not job.future.done():
        job.future.set_exception(error)


def _exit_reason(process: BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "its pipe closed"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


def _stop_process(slot: _Slot, timeout_s: float) -> None:
    process, slot.process = slot.process, None
    for pipe in (slot.requests, slot.results):
        if pipe is not None:
            pipe.close()
    slot.requests = slot.results = None
    if process is None:
        return
    if process.is_alive():
        process.terminate()
        process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join(timeout_s)


# --- pools shared in a process -------------------------------------------------------------

_pools: dict[tuple[int, float], tuple[ModelPool, int]] = {}
_pools_lock = threading.Lock()


def acquire(workers: int, job_timeout_s: float = 60.0) -> ModelPool:
    """The process's pool of ``workers`` workers, started, with one more user.

    Bots of one process with the same settings share a pool (each model is loaded once per
    worker); ``release`` it when done: the last user's release stops it.
    """
    key = (workers, job_timeout_s)
    with _pools_lock:
        pool, users = _pools.get(key, (None, 0))
        if pool is None:
            pool = ModelPool(workers, job_timeout_s=job_timeout_s)
            log.info(
                "starting %d model worker process%s (%s)",
                workers,
                "" if workers == 1 else "es",
                START_METHOD,
            )
        _pools[key] = (pool, users + 1)
    pool.start()
    return pool


def release(pool: ModelPool) -> None:
    """One user less; the pool stops when it has none."""
    with _pools_lock:
        for key, (known, users) in list(_pools.items()):
            if known is pool:
                if users > 1:
                    _pools[key] = (known, users - 1)
                    return
                del _pools[key]
                break
    pool.close()


@atexit.register
def _close_all() -> None:
    # Registered after multiprocessing's exit handler, so it runs before it: the pools stop
    # their workers themselves, rather than see them terminated and start them again.
    with _pools_lock:
        pools = [pool for pool, _ in _pools.values()]
        _pools.clear()
    for pool in pools:
        pool.close(1.0)


def default_workers() -> int:
    """Model workers when the bot says ``auto``: one per core, shared among the bot processes
    of ``serve --workers`` on this host."""
    from voxpipe.worker_env import WORKERS_ENV

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = int(os.environ.get(WORKERS_ENV, "1") or 1)
    return max(1, (cores or 1) // max(1, processes))
