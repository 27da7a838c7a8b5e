"""``stt: {provider: openai_compatible}``: ``/v1/audio/transcriptions`` through the ``openai`` SDK.

Each caller utterance (the VAD's start to its stop, with the pre-roll) is uploaded once the
caller stops, as a WAV file at the pipeline rate (multipart, as the API takes it). With
``stream: true`` the server streams the transcript as server-sent events
(``transcript.text.delta``, then ``transcript.text.done``): the deltas become
``InterimTranscriptionFrame``s and the done event the ``TranscriptionFrame``; servers without
streaming answer one JSON body. This is how a heavy speech model moves to another machine
(speaches, vLLM or faster-whisper-server speak this API) or to OpenAI itself.

Recognition runs on a call-owned task per utterance, so caller audio never waits on the network;
transcripts are delivered in utterance order, and before the call's end frame. A request that
times out or fails transiently is retried; when retries run out a non-fatal ``ErrorFrame`` goes
upstream, so the bot says its ``on_error`` filler and the call goes on.
"""

from __future__ import annotations

import asyncio
import io
import wave
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe import events
from voxpipe.frames import Direction, EndFrame, Frame
from voxpipe.processors.openai_speech import (
    OpenAISpeechConnection,
    Progress,
    describe,
    is_provider_failure,
)
from voxpipe.processors.stt.base import STTProcessor, STTProviderSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


class OpenAICompatibleSTTSettings(STTProviderSettings, OpenAISpeechConnection):
    """An OpenAI-compatible transcription endpoint (OpenAI, or a self-hosted Whisper server)."""

    provider: Literal["openai_compatible"] = Field(description="Speech-to-text engine.")
    model: str = Field(
        "whisper-1",
        description="Transcription model as the server knows it (whisper-1, gpt-4o-transcribe, "
        "Systran/faster-whisper-small...).",
    )
    language: str = Field(
        "en",
        description="Language of the caller's speech (ISO-639-1, e.g. en, de; a BCP-47 tag "
        "such as en-US is cut to its language).",
    )
    stream: bool = Field(
        False,
        description="Ask the server to stream the transcript (stream=true, server-sent "
        "events): interim transcripts while it decodes. Only for servers and models that "
        "support it (gpt-4o-transcribe does, whisper-1 does not).",
    )
    prompt: str | None = Field(
        None, description="Words and spellings to expect (names, products), sent as the prompt."
    )
    max_utterance_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest stretch uploaded as one utterance; longer speech is cut into "
        "pieces of this length.",
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Seconds the server may stay silent (before its answer, or between "
        "streamed events) before the request is retried.",
    )

    async def prepare(self, ctx: BotContext) -> None:
        self.connect(ctx, "openai_compatible speech-to-text")

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        client = self.connect(ctx, "openai_compatible speech-to-text")
        return OpenAICompatibleSTT(client, self, sample_rate=call.sample_rate)


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """PCM16 mono audio as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


class OpenAICompatibleSTT(STTProcessor):
    """Uploads each caller utterance when the caller stops and reports its transcript."""

    provider: ClassVar[str] = "openai_compatible"

    __slots__ = ("_audio", "_client", "_pending", "_settings")

    def __init__(
        self, client: Any, settings: OpenAICompatibleSTTSettings, *, sample_rate: int
    ) -> None:
        super().__init__(
            language=settings.language.split("-")[0].lower(),
            preroll_ms=settings.preroll_ms,
            sample_rate=sample_rate,
        )
        self._client = client
        self._settings = settings
        self._audio: bytearray | None = None
        self._pending: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, EndFrame) and self._pending is not None:
            # The caller's last words reach the LLM before the call's end.
            await asyncio.wait([self._pending])
        await super().process_frame(frame, direction)

    async def on_speech_started(self, preroll: bytes) -> None:
        self._audio = bytearray(preroll)

    async def on_speech_audio(self, audio: bytes) -> None:
        if self._audio is None:
            return
        self._audio += audio
        if len(self._audio) >= self.sample_rate * 2 * self._settings.max_utterance_s:
            await self.on_speech_stopped()
            self._audio = bytearray()

    async def on_speech_stopped(self) -> None:
        audio, self._audio = self._audio, None
        if not audio:
            return
        self.begin_request()
        previous = self._pending
        wav = wav_bytes(bytes(audio), self.sample_rate)
        self._pending = self.create_task(self._recognize(wav, previous), name=self.name)

    async def _recognize(self, wav: bytes, previous: asyncio.Task[None] | None) -> None:
        try:
            text = await self._settings.with_retries(
                lambda progress: self._transcribe(wav, progress, previous),
                self.call,
                "openai_compatible speech-to-text",
            )
        except Exception as exc:
            if not is_provider_failure(exc):
                raise
            events.emit.error(self.call, "provider")
            if previous is not None:
                await asyncio.wait([previous])
            await self.push_error(f"openai_compatible speech-to-text failed: {describe(exc)}")
            return
        if previous is not None:
            await asyncio.wait([previous])
        await self.push_final(text)

    async def _transcribe(
        self, wav: bytes, progress: Progress, previous: asyncio.Task[None] | None
    ) -> str:
        settings = self._settings
        options: dict[str, Any] = {}
        if settings.prompt:
            options["prompt"] = settings.prompt
        request = {
            "file": ("utterance.wav", wav, "audio/wav"),
            "model": settings.model,
            "language": self.language,
            **options,
        }
        if not settings.stream:
            response = await self._client.audio.transcriptions.create(
                response_format="json", **request
            )
            return str(response.text)
        stream = await self._client.audio.transcriptions.create(stream=True, **request)
        text = ""
        try:
            async for event in stream:
                progress()
                kind = getattr(event, "type", "")
                if kind == "transcript.text.delta":
                    text += event.delta
                    if previous is None or previous.done():
                        await self.push_interim(text.strip())
                elif kind == "transcript.text.done":
                    return str(event.text)
        finally:
            await stream.close()
        return text
