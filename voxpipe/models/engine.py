"""The contract of a model that runs in the model worker processes.

An ``Engine`` is a small picklable description of a model (paths and options, no loaded
state). The bot's process builds it and hands it to the ``ModelPool``; every worker process
unpickles it, calls ``load()`` once, and then runs jobs on it: a job names one of the engine's
methods and its arguments, and the method's return value is the job's result. Arguments and
results cross a process boundary, so keep them to bytes, strings, numbers and tuples of those.

Methods run one at a time in a worker (a worker is one core), never on the event loop, and may
block as long as they need. An exception a method raises fails that job only; a worker that
dies takes its jobs with it, and the pool retries them once on another worker.

Engines that keep state between jobs (a streaming decoder that holds one utterance) receive a
session id as an argument and keep that state in the worker; the caller submits all of a
session's jobs with the same ``affinity`` so that they reach the same worker, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

# Job priorities in the pool's queue: lower goes first. Speech synthesis is ``URGENT``.
URGENT = 0
NORMAL = 1


class Engine:
    """A model loaded once per worker process; subclasses add the methods jobs call."""

    kind: ClassVar[str] = ""

    @property
    def key(self) -> str:
        """The engine's identity: engines with the same key are loaded once per worker."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """A short name for logs and the start-up line (``whisper``, ``piper``)."""
        return self.key.split(":", 1)[0]

    def load(self) -> None:
        """Load the model (in the worker process; may take seconds). Raise with a clear
        message when it cannot: the bot refuses to start with that message."""

    def ping(self) -> None:
        """Do nothing: a job that measures the pool's own round trip."""


class STTEngine(Engine):
    """A speech-to-text model."""

    kind: ClassVar[str] = "stt"


class TTSEngine(Engine):
    """A text-to-speech model."""

    kind: ClassVar[str] = "tts"


# How a step runs its engine on a sample (a whole utterance as ``(pcm16, rate)`` for
# speech-to-text, a sentence for text-to-speech): the job's method and arguments, with the
# step's own options. It is what ``max_calls: auto`` times at start.
SampleJob = Callable[..., tuple[str, tuple[Any, ...]]]


class ModelError(Exception):
    """A model job failed: the engine raised, or could not be loaded."""


class WorkerLost(ModelError):
    """The worker process running a job died (after the job's one retry, for a free job)."""
