"""``serve --workers N``: N bot processes sharing one AudioSocket port, one per core.

The supervisor starts N copies of ``run-pipeline serve`` (without ``--workers``), each told its
index through ``VOXPIPE_WORKER`` (0..N-1) and the count through ``VOXPIPE_WORKERS``. Each worker
binds the AudioSocket port with SO_REUSEPORT, so the kernel spreads incoming calls over them;
worker ``i`` serves the HTTP API on the configured port plus ``i`` (Prometheus scrapes each).
Call state shared through Redis lets ``/calls`` on any worker list every call.

SIGTERM or SIGINT to the supervisor is passed to every worker, which drains its calls and exits;
the supervisor exits 0 once all have exited cleanly. A worker that dies on its own is restarted;
one that fails within its first seconds (a busy port, a provider that cannot start) stops them all.

A worker that dies without ending its calls (killed) leaves their records in the Redis session
store as live. The supervisor knows the dead worker's pid, which every record names, and ends
those calls at once (``end_worker_calls``): ``/calls`` stops listing them and the dialplan
asking for their outcome hears ``error``. While Redis does not answer it tries again every few
seconds, until the records would have expired anyway.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from voxpipe.worker_env import WORKER_ENV, WORKERS_ENV, worker_index

if TYPE_CHECKING:
    from voxpipe.bots.config import RedisStoreSettings

log = logging.getLogger("voxpipe.workers")

RESTART_DELAY_S = 1.0
STARTUP_S = 5.0
# How often the calls of a dead worker are tried again while Redis does not answer.
ORPHAN_RETRY_S = 5.0


def worker_listen(listen: str) -> str:
    """``host:port`` of this worker's own HTTP API: the configured port plus its index."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return listen
    return f"{host}:{int(port) + worker_index()}"


class Supervisor:
    """Runs and restarts the worker processes; passes SIGTERM/SIGINT on to them."""

    def __init__(
        self, count: int, argv: Sequence[str], store: RedisStoreSettings | None = None
    ) -> None:
        self.count = count
        self.argv = [sys.executable, "-m", "voxpipe.bots.cli", *argv]
        self.store = store
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.stopping = False
        # Dead workers ("host:pid") whose calls are still to be ended in Redis, with the time
        # after which their records have expired on their own.
        self.orphans: dict[str, float] = {}
        self.orphans_told: set[str] = set()
        self.orphans_retry_at = 0.0

    def spawn(self, index: int) -> None:
        """Start worker ``index``."""
        env = {**os.environ, WORKER_ENV: str(index), WORKERS_ENV: str(self.count)}
        self.procs[index] = subprocess.Popen(self.argv, env=env)
        self.started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def stop(self, signum: int, frame: FrameType | None = None) -> None:
        """Ask every worker to drain and exit."""
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Start the workers and wait for them; 0 when every worker ended cleanly."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for index in range(self.count):
            self.spawn(index)
        failed = 0
        while self.procs:
            time.sleep(0.1)
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.procs[index]
                if code != 0:  # a clean exit has ended its calls itself
                    self.worker_died(proc.pid)
                if self.stopping:
                    failed += code != 0
                    continue
                # A worker that exits with an error of its own (a busy port) soon after its
                # start would fail again; one killed by a signal (OOM killer) is restarted.
                if code > 0 and time.monotonic() - self.started[index] < STARTUP_S:
                    log.error("worker %d failed at start (exit %d); stopping", index, code)
                    failed += 1
                    self.stop(signal.SIGTERM)
                    continue
                log.warning("worker %d (pid %d) exited with %d; restarting", index, proc.pid, code)
                time.sleep(RESTART_DELAY_S)
                if not self.stopping:
                    self.spawn(index)
            if self.orphans and time.monotonic() >= self.orphans_retry_at:
                self.end_orphaned_calls()
        if self.orphans:
            self.end_orphaned_calls()
        return 1 if failed else 0

    def worker_died(self, pid: int) -> None:
        """Worker ``pid`` exited without ending its calls: end them in the session store now."""
        if self.store is None:
            return  # calls in memory died with the worker
        from voxpipe.sessions.store import worker_id

        self.orphans[worker_id(pid)] = time.monotonic() + self.store.ttl_s
        self.end_orphaned_calls()

    def end_orphaned_calls(self) -> None:
        """End the dead workers' calls in Redis; when it does not answer, try again later.

        The first failure for a worker is logged; the retries are quiet until Redis answers, or
        until the records have expired by themselves (or the supervisor stops), said once too.
        """
        assert self.store is not None
        from voxpipe.sessions.store import end_worker_calls

        url = self.store.url.get_secret_value()
        for worker, expires in list(self.orphans.items()):
            try:
                ended = end_worker_calls(url, worker, self.store.ttl_s)
            except Exception as exc:
                self.orphans_retry_at = time.monotonic() + ORPHAN_RETRY_S
                if time.monotonic() >= expires or self.stopping:
                    del self.orphans[worker]
                    log.warning(
                        "session store: the calls of dead worker %s stay in Redis until their "
                        "TTL (%s)",
                        worker,
                        exc or type(exc).__name__,
                    )
                elif worker not in self.orphans_told:
                    self.orphans_told.add(worker)
                    log.warning(
                        "session store: cannot end the calls of dead worker %s (%s); "
                        "retrying every %g s",
                        worker,
                        exc or type(exc).__name__,
                        ORPHAN_RETRY_S,
                    )
                continue
            del self.orphans[worker]
            self.orphans_told.discard(worker)
            if ended:
                log.warning(
                    "worker %s died with %d call(s) in progress; ended as failed: %s",
                    worker,
                    len(ended),
                    ", ".join(ended),
                )


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``run-pipeline serve`` arguments of one worker: the supervisor's, minus ``--workers``."""
    argv = ["serve", args.bot]
    if args.host:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    if args.log_format:
        argv += ["--log-format", args.log_format]
    if args.verbose:
        argv.append("--verbose")
    return argv


def supervise(count: int, argv: Sequence[str], store: RedisStoreSettings | None = None) -> int:
    """Run ``count`` workers of ``run-pipeline <argv>`` until SIGTERM; return the exit code.

    ``store``: the bot's Redis session store, where a dead worker's calls are ended.
    """
    return Supervisor(count, argv, store).run()
