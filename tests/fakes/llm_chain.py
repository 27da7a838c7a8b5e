"""Runs one call through a bot's chain with a stand-in for text-to-speech and the transport.

``Listener`` (a ``voxpipe.testing.Recorder``) records every frame reaching the end of the
chain and, like a TTS plus transport, turns the text it is asked to speak into ``Utterance``s
in ``call.speech``, marked played in full (or only partly, with
``play_fraction``) so that history tests can tell what the caller heard.
"""

from __future__ import annotations

import asyncio

from voxpipe.bots.bot import Bot
from voxpipe.frames import (
    Direction,
    Frame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    Utterance,
)
from voxpipe.pipelines.task import PipelineTask
from voxpipe.testing import Recorder


class Listener(Recorder):
    """The tail of the chain under test: a ``voxpipe.testing.Recorder`` that plays what it is
    asked to say (see the module's docstring)."""

    def __init__(self, play_fraction: float = 1.0) -> None:
        super().__init__(name="listener")
        self.play_fraction = play_fraction
        self._pending = ""

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TTSSpeakFrame):
            self._speak(frame.text)
        elif isinstance(frame, LLMTextFrame):
            self._pending += frame.text
        elif isinstance(frame, LLMResponseEndFrame):
            self._speak(self._pending)
            self._pending = ""
        elif isinstance(frame, InterruptionFrame):
            self._pending = ""
        await super().process_frame(frame, direction)

    def _speak(self, text: str) -> None:
        utterance = Utterance(text, frames_total=10)
        utterance.frames_played = round(10 * self.play_fraction)
        self.call.speech.sent(utterance)

    def spoken(self) -> list[str]:
        """What the bot was asked to say: TTSSpeakFrame texts and whole LLM responses."""
        out: list[str] = []
        pending = ""
        for f in self.frames:
            if isinstance(f, TTSSpeakFrame):
                out.append(f.text)
            elif isinstance(f, LLMTextFrame):
                pending += f.text
            elif isinstance(f, LLMResponseEndFrame):
                out.append(pending)
                pending = ""
            elif isinstance(f, InterruptionFrame):
                pending = ""
        return out


class Conversation:
    """One running call of a bot, driven by test code."""

    def __init__(self, bot: Bot, listener: Listener) -> None:
        self.bot = bot
        self.listener = listener
        self.call = bot.new_call()
        self.task: PipelineTask
        self.runner: asyncio.Task[str] | None = None

    async def __aenter__(self) -> Conversation:
        await self.bot.prepare()
        self.task = self.bot.create_pipeline(self.call, tail=[self.listener])
        self.runner = asyncio.create_task(self.task.run())
        await self.listener.wait_for(lambda: bool(self.listener.of(StartFrame)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel("test over")
        assert self.runner is not None
        await asyncio.wait_for(self.runner, 5)

    async def say(self, text: str) -> None:
        """The caller speaks one utterance: VAD start, its final transcript, VAD stop."""
        await self.task.push_frame(UserStartedSpeakingFrame())
        await self.task.push_frame(TranscriptionFrame(text))
        await self.task.push_frame(UserStoppedSpeakingFrame())

    async def replies(self, count: int, timeout_s: float = 10.0) -> list[str]:
        """Wait until the bot said ``count`` things; return everything it said."""
        await self.listener.wait_for(lambda: len(self.listener.spoken()) >= count, timeout_s)
        return self.listener.spoken()


async def converse(yaml_text: str, play_fraction: float = 1.0) -> Conversation:
    """A conversation with the bot described by ``yaml_text`` (use with ``async with``)."""
    return Conversation(Bot.from_yaml(yaml_text), Listener(play_fraction))
