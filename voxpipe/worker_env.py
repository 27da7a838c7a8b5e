"""Where this process stands among the bot processes of ``run-pipeline serve --workers N``.

The supervisor (``voxpipe.bots.workers``) starts each worker with its index in ``VOXPIPE_WORKER``
(0..N-1) and the count in ``VOXPIPE_WORKERS``. Lower layers read them here: the AudioSocket
server (share the port) and the model pool (share the cores).
"""

from __future__ import annotations

import os

WORKER_ENV = "VOXPIPE_WORKER"
WORKERS_ENV = "VOXPIPE_WORKERS"


def worker_index() -> int:
    """This process's worker index (0 when not started by the supervisor)."""
    return int(os.environ.get(WORKER_ENV, "0") or 0)


def shares_port() -> bool:
    """Whether this process is one of several workers sharing the AudioSocket port."""
    return int(os.environ.get(WORKERS_ENV, "1") or 1) > 1
