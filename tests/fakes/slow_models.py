"""Model engines for the model pool's tests, and a deliberately slow speech-to-text step.

``ProbeEngine`` runs in the model workers and reports on them (its process, its environment),
sleeps, fails or keeps per-session values on request. ``SlowSTTSettings`` (processor type
``slow_stt``, see ``registry()``) is a speech-to-text step whose engine sleeps ``delay_s`` in
the worker, as a decoder queued behind a burst of callers would, and then "hears" ``text``.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from pydantic import Field

from voxpipe.bots.bot import Bot
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.models.engine import STTEngine
from voxpipe.models.pool import ModelPool
from voxpipe.pipelines.call import Call
from voxpipe.processors.stt.base import LocalSTTProcessor, LocalSTTSettings


class ProbeEngine(STTEngine):
    """An engine that tells about the worker it runs in."""

    def __init__(self, name: str = "probe", delay_s: float = 0.0, text: str = "") -> None:
        self.name = name
        self.delay_s = delay_s
        self.text = text
        self.loads = 0
        self.sessions: dict[str, Any] = {}

    @property
    def key(self) -> str:
        return f"{self.name}:{self.delay_s}:{self.text}"

    def load(self) -> None:
        if self.name == "unloadable":
            raise RuntimeError("probe: this model cannot be loaded")
        self.loads += 1

    def pid(self) -> int:
        return os.getpid()

    def parent_pid(self) -> int:
        return os.getppid()

    def environment(self, name: str) -> str | None:
        return os.environ.get(name)

    def threads(self) -> int:
        import threading

        return threading.active_count()

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def remember(self, session: str, value: Any) -> int:
        self.sessions[session] = value
        return os.getpid()

    def recall(self, session: str) -> Any:
        return self.sessions[session]

    def stamp(self) -> float:
        return time.monotonic()

    def echo(self, value: Any) -> Any:
        return value

    def transcribe(self, audio: bytes, sample_rate: int) -> str:
        time.sleep(self.delay_s)
        return self.text


class SlowSTTSettings(LocalSTTSettings):
    """Speech-to-text that takes ``delay_s`` in its worker to "hear" ``text``."""

    delay_s: float = Field(description="Seconds each decode takes in the model worker.")
    text: str = Field(description="What the caller is taken to have said.")

    def engine(self) -> ProbeEngine:
        return ProbeEngine("slow", self.delay_s, self.text)

    def sample_job(self, audio: bytes, sample_rate: int) -> tuple[str, tuple[Any, ...]]:
        return "transcribe", (audio, sample_rate)

    def processor(self, call: Call, bot: Bot, models: ModelPool, key: str) -> LocalSTTProcessor:
        return SlowSTT(self, key, sample_rate=call.sample_rate, models=models)


class SlowSTT(LocalSTTProcessor):
    provider: ClassVar[str] = "slow"

    def __init__(
        self, settings: SlowSTTSettings, key: str, *, sample_rate: int, models: ModelPool
    ) -> None:
        super().__init__(settings, sample_rate=sample_rate, models=models)
        self.key = key

    async def finish(self, utterance: bytes, sample_rate: int) -> str:
        text: str = await self.models.run(self.key, "transcribe", utterance, sample_rate)
        return text


def registry() -> Registry:
    """The built-in processor types plus ``slow_stt``."""
    found = Registry.default(plugins=False)
    found.add(ProcessorType("slow_stt", SlowSTTSettings, origin="tests"))
    return found
