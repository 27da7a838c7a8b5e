"""The model worker process: load engines once, then run jobs one at a time until told to stop.

This module is what the forkserver preloads, so it imports nothing heavy: the thread limits
below must be in the environment before numpy, CTranslate2 or onnxruntime are first imported
(they read them once, at import), and that happens only when the first engine loads.

Messages (pickled tuples over two pipes):

* from the pool: ``("load", key, pickled_engine)``, ``("run", key, method, args)``, ``("stop",)``
  (the engine comes pickled on its own, so that an engine this process cannot import fails
  its load, not the worker);
* to the pool: ``("ready", pid)`` once, then one reply per message: ``("loaded", key)`` or
  ``("load_failed", key, error)``; ``("done", result)`` or ``("failed", error)``.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from voxpipe.models.engine import Engine

# Thread pools of the numeric libraries: one core per worker, so one thread each. Libraries
# that take their count as an argument (CTranslate2's intra_threads, onnxruntime's session
# options) are set by the engines themselves.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def limit_threads(threads: int) -> None:
    """Cap the numeric libraries' thread pools of this process (before they are imported)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def describe(exc: BaseException) -> str:
    """One line for an engine's failure: the exception's type and message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def main(requests: Connection, results: Connection, threads: int) -> None:
    """Serve jobs from ``requests`` until ``("stop",)`` or the pool's end of the pipe closes."""
    limit_threads(threads)
    # Ctrl-C reaches the whole process group: the bot drains its calls, and the workers must
    # keep decoding for them until the pool stops them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Terminated, exit as Python does (the libraries' exit handlers run: tqdm, for one, leaves
    # a semaphore behind otherwise).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    engines: dict[str, Engine] = {}
    results.send(("ready", os.getpid()))
    while True:
        try:
            message: tuple[Any, ...] = requests.recv()
        except (EOFError, OSError):
            return  # the bot's process is gone
        kind = message[0]
        if kind == "run":
            _, key, method, args = message
            try:
                reply: tuple[Any, ...] = ("done", getattr(engines[key], method)(*args))
            except Exception as exc:
                reply = ("failed", describe(exc))
        elif kind == "load":
            _, key, pickled = message
            try:
                if key not in engines:
                    engine = pickle.loads(pickled)
                    engine.load()
                    engines[key] = engine
                reply = ("loaded", key)
            except Exception as exc:
                reply = ("load_failed", key, str(exc).strip() or describe(exc))
        else:
            return
        try:
            results.send(reply)
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # a result that cannot be pickled fails its job only
            results.send(("failed", f"the result cannot be sent back: {describe(exc)}"))
