"""A loaded bot: its validated configuration, shared resources, and a pipeline per call."""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voxpipe.bots.config import BotConfig, LoadedConfig, ProcessorEntry, load_bot, parse_bot
from voxpipe.bots.registry import Registry
from voxpipe.conversation.tracker import create_tracker
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import Settings
from voxpipe.pipelines.task import PipelineTask
from voxpipe.sessions.store import SessionStore, open_store

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
    filled by the processors' ``prepare`` hooks before the bot takes calls. A ``Bot`` is the
    ``BotContext`` its processors get and the ``CallHost`` its transports serve
    (``voxpipe.pipelines.context``).
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

    @property
    def greeting(self) -> str | None:
        """What the bot says when a call starts (``{caller.x}`` templates unrendered)."""
        return self.config.greeting

    @property
    def tools(self) -> Mapping[str, Settings]:
        """The tools the bot declares (``tools:``), by name."""
        return self.config.tools

    @property
    def standby_lines(self) -> list[str]:
        """What the bot's steps speak when something fails, for the voice to keep ready."""
        return [line for step in self.steps for line in step.settings.standby_lines()]

    @property
    def speech_stop_s(self) -> float:
        """The VAD's ``stop_ms``: silence that passes before the caller counts as stopped."""
        for step in self.steps:
            if step.type_name == "vad":
                return float(getattr(step.settings, "stop_ms", 0)) / 1000
        return 0.0

    async def prepare(self) -> None:
        """Load shared resources once (models, clients); raises ``ProviderError`` on failure."""
        if self.prepared:
            return
        from voxpipe.models.shared import provide_models

        provide_models(self, self.config.models)
        for step in self.steps:
            await step.settings.prepare(self)
        await self.session_store().start()
        if self.config.call_records is not None or self.config.hooks.call_ended is not None:
            from voxpipe.records.service import start_records

            await start_records(self, self.config.call_records, self.config.hooks)
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
            await settle_caller(self, call, self.config.caller)

    def session_store(self) -> SessionStore:
        """The bot's session store, opened on first use from ``session_store:``."""
        redis = self.config.session_store.redis
        if redis is None:
            return open_store(self)
        return open_store(self, redis.url.get_secret_value(), redis.ttl_s)

    def create_processors(self, call: Call) -> list[FrameProcessor]:
        """Build the chain of processors for one call."""
        return [step.settings.create(call, self) for step in self.steps]

    def added_processors(self) -> list[tuple[str, str]]:
        """What the bot puts after its steps in every call's chain, in order, as (name, what
        it does): the conversation tracker always (it sees what the bot is about to say going
        down and what the caller heard coming back up), the audio recorder when call records
        keep audio. ``run-pipeline graph`` shows them."""
        added = [("conversation", "call state, turns, session store")]
        records = self.config.call_records
        if records is not None and records.audio is not None:
            added.append(("recorder", "call audio"))
        return added

    def create_pipeline(
        self,
        call: Call,
        head: list[FrameProcessor] | None = None,
        tail: list[FrameProcessor] | None = None,
    ) -> PipelineTask:
        """Build one call's pipeline: ``head`` (the transport's input), the bot's steps, the
        processors the bot adds (``added_processors``), ``tail`` (the transport's output)."""
        started = time.perf_counter()
        processors = [*(head or ()), *self.create_processors(call)]
        for name, _ in self.added_processors():
            if name == "conversation":
                processors.append(create_tracker(call, self.session_store(), self.greeting))
            elif name == "recorder":
                processors += self._audio_recorder(call)
        processors += tail or ()
        task = PipelineTask(processors, call)
        call.data["build_ms"] = (time.perf_counter() - started) * 1000
        return task

    def _audio_recorder(self, call: Call) -> list[FrameProcessor]:
        """The call's audio recorder (its call records keep audio)."""
        from voxpipe.records.service import records_of

        service = records_of(self)
        recorder = service.recorder(call) if service is not None else None
        return [recorder] if recorder is not None else []
