"""A loaded bot: its validated configuration, shared resources, and a pipeline per call."""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from voxpipe.bots.config import BotConfig, LoadedConfig, ProcessorEntry, load_bot, parse_bot
from voxpipe.bots.registry import Registry
from voxpipe.conversation.tracker import create_tracker
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.sessions.store import session_store

log = logging.getLogger("voxpipe.bot")


async def _close(resource: Any) -> None:
    """Close one shared resource by whichever protocol it speaks."""
    if isinstance(resource, concurrent.futures.Executor):
        resource.shutdown(wait=False, cancel_futures=True)
        return
    if hasattr(resource, "__aexit__"):
        await resource.__aexit__(None, None, None)
        return
    for name in ("aclose", "close"):
        method = getattr(resource, name, None)
        if callable(method):
            result = method()
            if inspect.isawaitable(result):
                await result
            return


@dataclass(eq=False)
class Bot:
    """One bot file, validated and ready to build a pipeline for each call.

    ``shared`` holds what every call of the bot uses (loaded models, clients, the session store),
    filled by the processors' ``prepare`` hooks before the bot takes calls.
    """

    loaded: LoadedConfig
    shared: dict[str, Any] = field(default_factory=dict)
    prepared: bool = False

    @classmethod
    def load(cls, path: str | os.PathLike[str], registry: Registry | None = None) -> Bot:
        """Read and validate a bot file (raises ``ConfigError``)."""
        return cls(load_bot(path, registry))

    @classmethod
    def from_yaml(cls, text: str, file: str = "<string>", registry: Registry | None = None) -> Bot:
        """Validate a bot given as YAML text (raises ``ConfigError``)."""
        return cls(parse_bot(text, file, registry))

    @property
    def config(self) -> BotConfig:
        """The top-level settings."""
        return self.loaded.config

    @property
    def name(self) -> str:
        """The bot's name."""
        return self.config.name

    @property
    def steps(self) -> list[ProcessorEntry]:
        """The validated pipeline steps, in order."""
        return self.loaded.steps

    @property
    def sample_rate(self) -> int:
        """The audio rate inside the pipeline."""
        return self.config.transport.audiosocket.sample_rate

    async def prepare(self) -> None:
        """Load shared resources once (models, clients); raises ``ProviderError`` on failure."""
        if self.prepared:
            return
        for step in self.steps:
            await step.settings.prepare(self)
        await session_store(self).start()
        if self.config.call_records is not None or self.config.hooks.call_ended is not None:
            from voxpipe.records.service import start_records

            await start_records(self)
        self.prepared = True

    async def close(self) -> None:
        """Release what ``prepare`` loaded, newest first: flush the session store, close API
        clients, stop model thread pools. Each resource is closed once; a failure is logged."""
        while self.shared:
            key, resource = self.shared.popitem()
            try:
                await _close(resource)
            except Exception:  # one stubborn resource must not keep the rest open
                log.warning("bot %s: closing %s failed", self.name, key, exc_info=True)
        self.prepared = False

    def new_call(self, call_id: str | None = None) -> Call:
        """A fresh call context for this bot."""
        if call_id:
            return Call(call_id=call_id, bot=self.name, sample_rate=self.sample_rate)
        return Call(bot=self.name, sample_rate=self.sample_rate)

    async def start_call(self, call: Call) -> None:
        """Settle who is calling before the call's pipeline is built: the context the dialplan
        posted (or ARI gave) and, with call records, the customer with that number."""
        from voxpipe.records.context import SHARED_KEY, settle_caller

        if call.caller is not None or SHARED_KEY in self.shared:
            await settle_caller(self, call)

    def create_processors(self, call: Call) -> list[FrameProcessor]:
        """Build the chain of processors for one call."""
        return [step.settings.create(call, self) for step in self.steps]

    def create_task(
        self,
        call: Call,
        head: list[FrameProcessor] | None = None,
        tail: list[FrameProcessor] | None = None,
    ) -> PipelineTask:
        """Build one call's pipeline task, with transport processors around the bot's chain."""
        started = time.perf_counter()
        tracker = create_tracker(call, self)
        recorder = self._audio_recorder(call)
        processors = [
            *(head or ()),
            *self.create_processors(call),
            tracker,
            *recorder,
            *(tail or ()),
        ]
        task = PipelineTask(processors, call)
        call.data["build_ms"] = (time.perf_counter() - started) * 1000
        return task

    def _audio_recorder(self, call: Call) -> list[FrameProcessor]:
        """The call's audio recorder, when its call records keep audio."""
        records = self.config.call_records
        if records is None or records.audio is None:
            return []
        from voxpipe.records.service import records_of

        service = records_of(self)
        recorder = service.recorder(call) if service is not None else None
        return [recorder] if recorder is not None else []
