"""The voxpipe processors that host a Pipecat processor, one per role (see the package doc)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from pipecat.frames import frames as pf

from voxpipe import events
from voxpipe import frames as vx
from voxpipe.frames import Direction, Frame
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.processors.llm.client import ToolRound
from voxpipe.processors.llm.openai_compatible import openai_messages
from voxpipe.processors.llm.processor import LLMProcessor
from voxpipe.processors.pipecat.bridge import (
    DOWN,
    Marker,
    PipecatHost,
    Translator,
    error_text,
)
from voxpipe.processors.tts.base import TTSProcessor
from voxpipe.processors.tts.cache import PhraseCache
from voxpipe.tools.toolbox import ToolCall, ToolSpec

if TYPE_CHECKING:
    from voxpipe.processors.pipecat import PipecatSettings
    from voxpipe.tools.toolbox import Toolbox

END_TIMEOUT_S = 10.0


class PipecatFailed(Exception):
    """The hosted Pipecat service reported an error (an ``ErrorFrame``)."""


def _make_host(
    owner: FrameProcessor, settings: PipecatSettings, sample_rate: int, down: Any, up: Any
) -> PipecatHost:
    def failed(exc: BaseException) -> None:
        owner.task.fail(exc, source=owner.name)

    return PipecatHost(
        settings.build(),
        sample_rate=sample_rate,
        on_downstream=down,
        on_upstream=up,
        on_failure=failed,
    )


# --- stt and processor roles: every frame through the Pipecat processor ---------------------------


class PipecatProcessor(FrameProcessor):
    """Hosts a Pipecat processor in the chain: frames go through it, translated both ways."""

    __slots__ = ("_host", "_settings", "_translator", "sample_rate")

    def __init__(self, settings: PipecatSettings, *, sample_rate: int) -> None:
        prefix = "stt" if settings.kind == "stt" else "pipecat"
        super().__init__(name=f"{prefix}.{settings.class_name.rsplit('.', 1)[-1]}")
        self._settings = settings
        self.sample_rate = sample_rate
        self._translator = Translator(sample_rate)
        self._host: PipecatHost | None = None

    async def start(self) -> None:
        self._host = _make_host(
            self, self._settings, self.call.sample_rate, self._from_service, self._upstream
        )
        await self._host.start(self._settings.start_timeout_s)

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        host = self._host
        if host is None or direction is vx.UPSTREAM or isinstance(frame, vx.StartFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, vx.EndFrame):
            await host.end(END_TIMEOUT_S)  # what the service holds comes out first
            await self.push_frame(frame, direction)
        elif isinstance(frame, vx.CancelFrame):
            await host.cancel()
            await self.push_frame(frame, direction)
        else:
            if isinstance(frame, vx.InterruptionFrame):
                self._translator.forget()
            for out in self._translator.to_pipecat(frame):
                await host.send(out)

    async def _from_service(self, frame: pf.Frame) -> None:
        translated = self._translator.from_pipecat(frame)
        if translated is not None:
            await self.push_frame(translated)

    async def _upstream(self, frame: pf.Frame) -> None:
        if isinstance(frame, pf.ErrorFrame):
            events.emit.error(self.call, "provider")
            await self.push_error(f"{self.name}: {error_text(frame)}", fatal=bool(frame.fatal))
        elif isinstance(frame, pf.InterruptionFrame):
            await self.push_frame(vx.InterruptionFrame(), vx.UPSTREAM)

    async def stop(self) -> None:
        if self._host is not None:
            await self._host.end(END_TIMEOUT_S)

    async def cancel(self) -> None:
        if self._host is not None:
            await self._host.cancel()


# --- requests: a sentence for the tts role, a context for the llm role ---------------------------


class _Requests:
    """Frames out of a hosted service, attributed to the request they answer.

    Each request is sent between two markers; frames that arrive between its start marker and
    its end marker are its own, anything else (a cancelled request's stragglers) is dropped.
    """

    _tokens = itertools.count(1)

    def __init__(self) -> None:
        self.current: int | None = None
        self.queue: asyncio.Queue[Any] | None = None

    def open(self) -> tuple[int, asyncio.Queue[Any]]:
        token = next(self._tokens)
        self.queue = asyncio.Queue()
        self.current = None
        return token, self.queue

    def marker(self, frame: Marker, token_wanted: int) -> None:
        if frame.start and frame.token == token_wanted:
            self.current = frame.token
        elif not frame.start and frame.token == self.current:
            self.current = None
            if self.queue is not None:
                self.queue.put_nowait(_DONE)

    def put(self, item: Any) -> None:
        if self.current is not None and self.queue is not None:
            self.queue.put_nowait(item)

    def fail(self, error: str) -> None:
        if self.queue is not None:
            self.queue.put_nowait(PipecatFailed(error))

    def close(self) -> None:
        self.current = None
        self.queue = None


_DONE = object()


class _Session:
    """A hosted service answering one request at a time (the tts and llm roles)."""

    def __init__(self, owner: FrameProcessor, settings: PipecatSettings, sample_rate: int) -> None:
        self.owner = owner
        self.settings = settings
        self.sample_rate = sample_rate
        self.requests = _Requests()
        self._wanted = 0
        self.host = _make_host(owner, settings, sample_rate, self._down, self._up)

    async def start(self) -> None:
        await self.host.start(self.settings.start_timeout_s)

    async def ask(self, frame: pf.Frame) -> AsyncIterator[Any]:
        """Send one request; yield what the service answers until it is done. Raises
        ``PipecatFailed`` on an error frame, ``TimeoutError`` when it stays silent."""
        token, queue = self.requests.open()
        self._wanted = token
        finished = False
        try:
            await self.host.send(Marker(token=token, start=True))
            await self.host.send(frame)
            await self.host.send(Marker(token=token, start=False))
            while True:
                async with asyncio.timeout(self.settings.timeout_s):
                    item = await queue.get()
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, PipecatFailed):
                    raise item
                yield item
        finally:
            self.requests.close()
            if not finished:
                # Stop the work in flight (an interruption, a timeout, a failure).
                await self.host.send(pf.InterruptionFrame())

    async def _down(self, frame: pf.Frame) -> None:
        if isinstance(frame, Marker):
            self.requests.marker(frame, self._wanted)
        else:
            self.requests.put(frame)

    async def _up(self, frame: pf.Frame) -> None:
        if isinstance(frame, pf.ErrorFrame):
            self.owner.call.log.warning("%s: %s", self.owner.name, error_text(frame))
            if self.requests.queue is not None:
                self.requests.fail(error_text(frame))
            else:
                await self.owner.push_error(f"{self.owner.name}: {error_text(frame)}")

    async def end(self) -> None:
        await self.host.end(END_TIMEOUT_S)

    async def cancel(self) -> None:
        await self.host.cancel()


class PipecatTTS(TTSProcessor):
    """voxpipe's text-to-speech over a Pipecat TTS service: one ``TTSSpeakFrame`` per sentence."""

    provider: ClassVar[str] = "pipecat"

    __slots__ = ("_session", "_settings")

    def __init__(
        self, settings: PipecatSettings, *, sample_rate: int, cache: PhraseCache | None = None
    ) -> None:
        super().__init__(sample_rate=sample_rate, cache=cache)
        self.name = f"tts.{settings.class_name.rsplit('.', 1)[-1]}"
        self._settings = settings
        self._session: _Session | None = None

    async def start(self) -> None:
        self._session = _Session(self, self._settings, self.call.sample_rate)
        await self._session.start()

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        assert self._session is not None
        audio = bytearray()
        rate = self.sample_rate
        async for frame in self._session.ask(pf.TTSSpeakFrame(text)):
            if isinstance(frame, pf.TTSAudioRawFrame) and frame.num_channels == 1:
                if audio and frame.sample_rate != rate:
                    continue  # one rate per sentence; a service never mixes them
                rate = frame.sample_rate
                audio += frame.audio
        return bytes(audio), rate

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.end()

    async def cancel(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.cancel()


class PipecatLLMClient:
    """voxpipe's ``LLMClient`` over a hosted Pipecat LLM service (one per call)."""

    provider = "pipecat"

    def __init__(self, settings: PipecatSettings) -> None:
        self.settings = settings
        self.session: _Session | None = None

    async def stream(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> AsyncIterator[str | ToolCall]:
        from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
        from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
        from pipecat.processors.aggregators.llm_context import LLMContext
        from pipecat.utils.types import NOT_GIVEN

        assert self.session is not None, "the LLM step has not started"
        schemas = [
            FunctionSchema(
                name=t.name,
                description=t.description,
                properties=dict(t.parameters.get("properties", {})),
                required=list(t.parameters.get("required", [])),
                handler=_settle,
            )
            for t in tools
        ]
        context = LLMContext(
            messages=openai_messages("", history, rounds),  # type: ignore[arg-type]
            tools=ToolsSchema(standard_tools=schemas) if schemas else NOT_GIVEN,
        )
        calls: list[ToolCall] = []
        async for frame in self.session.ask(pf.LLMContextFrame(context)):
            if isinstance(frame, pf.LLMTextFrame) and frame.text:
                yield frame.text
            elif isinstance(frame, pf.FunctionCallsStartedFrame):
                calls += [
                    ToolCall(c.tool_call_id, c.function_name, dict(c.arguments))
                    for c in frame.function_calls
                ]
        for call in calls:
            yield call


async def _settle(params: Any) -> None:
    """The handler Pipecat runs for a function call: voxpipe's toolbox runs the tool (the call
    reached it as a ``FunctionCallsStartedFrame``), so the Pipecat side is only settled."""
    await params.result_callback(None)


class PipecatLLM(LLMProcessor):
    """voxpipe's LLM (turns, history, tools, fillers) over a hosted Pipecat LLM service."""

    __slots__ = ("_session",)

    def __init__(
        self, settings: PipecatSettings, toolbox: Toolbox, *, greeting: str | None = None
    ) -> None:
        super().__init__(settings, PipecatLLMClient(settings), toolbox, greeting=greeting)
        self._session: _Session | None = None

    async def start(self) -> None:
        assert isinstance(self.client, PipecatLLMClient)
        self._session = _Session(self, self.client.settings, self.call.sample_rate)
        self.client.session = self._session
        await self._session.start()
        system = self.client.settings.system
        if system:
            from pipecat.services.settings import LLMSettings

            await self._session.host.send(
                pf.LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=system))
            )

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.end()

    async def cancel(self) -> None:
        await super().cancel()
        if self._session is not None:
            await self._session.cancel()


__all__ = ["DOWN", "PipecatLLM", "PipecatLLMClient", "PipecatProcessor", "PipecatTTS"]
