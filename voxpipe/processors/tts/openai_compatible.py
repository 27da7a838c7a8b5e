"""``tts: {provider: openai_compatible}``: ``/v1/audio/speech`` through the ``openai`` SDK.

One request per sentence asking for raw PCM (``response_format: pcm``: 16-bit little-endian
mono, 24 kHz on OpenAI); the body streams back in chunks and is read as it arrives, each chunk
keeping the request alive (``timeout_s`` is the longest silence, not the longest sentence). The
audio is resampled to the pipeline rate by the TTS base. OpenAI and self-hosted servers
(speaches, Kokoro-FastAPI, LocalAI) speak this API. Spoken sentences are kept in the bot's
phrase cache; the ``on_error`` lines are synthesised at start and never asked for again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe import events
from voxpipe.processors.openai_speech import (
    OpenAISpeechConnection,
    Progress,
    describe,
    is_provider_failure,
)
from voxpipe.processors.tts.base import CachedTTSSettings, TTSProcessor
from voxpipe.processors.tts.cache import PhraseCache

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


class OpenAICompatibleTTSSettings(CachedTTSSettings, OpenAISpeechConnection):
    """An OpenAI-compatible speech endpoint (OpenAI, or a self-hosted voice server)."""

    provider: Literal["openai_compatible"] = Field(description="Text-to-speech engine.")
    model: str = Field(
        "gpt-4o-mini-tts",
        description="Speech model as the server knows it (gpt-4o-mini-tts, tts-1, kokoro...).",
    )
    voice: str = Field("alloy", description="Voice name as the server knows it.")
    speed: float | None = Field(
        None, ge=0.25, le=4.0, description="Speaking speed (1.0 is normal); unset: the server's."
    )
    instructions: str | None = Field(
        None, description="How to speak (tone, accent), for models that take instructions."
    )
    pcm_rate: int = Field(
        24000,
        ge=8000,
        le=48000,
        description="Sample rate of the raw PCM the server returns (OpenAI: 24000); it is "
        "resampled to the pipeline rate.",
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Seconds the server may stay silent (before its first audio, or between "
        "chunks) before the request is retried.",
    )

    async def prepare_engine(self, ctx: BotContext) -> None:
        self.connect(ctx, "openai_compatible text-to-speech")

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        client = self.connect(ctx, "openai_compatible text-to-speech")
        return OpenAICompatibleTTS(
            client, self, sample_rate=call.sample_rate, cache=self.phrase_cache(ctx)
        )


class OpenAICompatibleTTS(TTSProcessor):
    """Speaks each sentence with one streamed ``/v1/audio/speech`` request for raw PCM.

    A request that times out or fails transiently is retried with backoff; when retries run out
    the sentence is skipped and a non-fatal ``ErrorFrame`` goes upstream, so the bot falls back
    to its filler and the call goes on.
    """

    provider: ClassVar[str] = "openai_compatible"

    __slots__ = ("_client", "_settings")

    def __init__(
        self,
        client: Any,
        settings: OpenAICompatibleTTSSettings,
        *,
        sample_rate: int,
        cache: PhraseCache | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, cache=cache)
        self._client = client
        self._settings = settings

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        settings = self._settings
        try:
            audio = await settings.with_retries(
                lambda progress: self._request(text, progress),
                self.call,
                "openai_compatible text-to-speech",
            )
        except Exception as exc:
            if not is_provider_failure(exc):
                raise
            events.emit.error(self.call, "provider")
            await self.push_error(f"openai_compatible text-to-speech failed: {describe(exc)}")
            return b"", settings.pcm_rate
        if len(audio) % 2:
            audio = audio[:-1]
        return audio, settings.pcm_rate

    async def _request(self, text: str, progress: Progress) -> bytes:
        settings = self._settings
        options: dict[str, Any] = {}
        if settings.speed is not None:
            options["speed"] = settings.speed
        if settings.instructions:
            options["instructions"] = settings.instructions
        audio = bytearray()
        async with self._client.audio.speech.with_streaming_response.create(
            model=settings.model,
            voice=settings.voice,
            input=text,
            response_format="pcm",
            **options,
        ) as response:
            progress()
            async for chunk in response.iter_bytes():
                progress()
                audio += chunk
        return bytes(audio)
