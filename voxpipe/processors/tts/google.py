"""``tts: {provider: google}``: Google Cloud Text-to-Speech v1, one request per sentence.

Each sentence is one ``SynthesizeSpeech`` call asking for LINEAR16 at the pipeline rate, so the
audio needs no resampling; the WAV header Google puts in front of LINEAR16 audio is stripped.
Credentials, endpoint, timeout and retries are the same options as the Google speech-to-text
provider's (``GoogleConnection``). Spoken sentences are kept in the bot's phrase cache
(``cache_phrases``); the ``on_error`` lines are synthesised at start and never asked for again.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe import events
from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.google import GoogleConnection, describe, is_provider_failure
from voxpipe.processors.tts.base import CachedTTSSettings, TTSProcessor
from voxpipe.processors.tts.cache import PhraseCache

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


class GoogleTTSSettings(CachedTTSSettings, GoogleConnection):
    """Google Cloud Text-to-Speech: natural voices, synthesised sentence by sentence."""

    provider: Literal["google"] = Field(description="Text-to-speech engine.")
    voice: str = Field(
        "en-US-Neural2-C",
        description="Voice name (en-US-Neural2-C, en-GB-Wavenet-B...); see Google's voice list.",
    )
    language: str | None = Field(
        None, description="Language code of the voice. Default: taken from the voice name."
    )
    speaking_rate: float = Field(
        1.0, ge=0.25, le=4.0, description="Speed: 1.0 is normal, 2.0 twice as fast."
    )
    audio_profile: str | None = Field(
        "telephony-class-application",
        description="Google audio effects profile that tunes the voice for the listening "
        "device; empty for none.",
    )

    @property
    def language_code(self) -> str:
        """The voice's language: ``language``, or the first two parts of the voice name."""
        return self.language or "-".join(self.voice.split("-")[:2])

    async def prepare_engine(self, ctx: BotContext) -> None:
        key = self.client_key("tts")
        if key in ctx.shared:
            return
        try:
            from google.cloud import texttospeech_v1
            from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
                TextToSpeechGrpcAsyncIOTransport,
            )
        except ImportError as exc:
            raise ProviderError(
                "google text-to-speech: google-cloud-texttospeech is not installed "
                "(pip install 'voxpipe[google]')"
            ) from exc
        ctx.shared[key] = await self.connect(
            "google text-to-speech",
            texttospeech_v1.TextToSpeechAsyncClient,
            TextToSpeechGrpcAsyncIOTransport,
        )

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return GoogleTTS(
            ctx.shared[self.client_key("tts")],
            self,
            sample_rate=call.sample_rate,
            cache=self.phrase_cache(ctx),
        )


def strip_wav_header(audio: bytes) -> tuple[bytes, int | None]:
    """The PCM inside a WAV file and its sample rate; other bytes come back as they are."""
    if len(audio) < 12 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        return audio, None
    rate = None
    pos = 12
    while pos + 8 <= len(audio):
        chunk, size = audio[pos : pos + 4], struct.unpack_from("<I", audio, pos + 4)[0]
        if chunk == b"fmt " and size >= 8:
            rate = struct.unpack_from("<I", audio, pos + 12)[0]
        elif chunk == b"data":
            return audio[pos + 8 : pos + 8 + size], rate
        pos += 8 + size + (size & 1)
    return b"", rate


class GoogleTTS(TTSProcessor):
    """Speaks each sentence with one Google ``SynthesizeSpeech`` request at the pipeline rate.

    A request that times out or fails transiently is retried with backoff; when retries run out
    the sentence is skipped and a non-fatal ``ErrorFrame`` goes upstream, so the bot can fall
    back to a filler and the call goes on.
    """

    provider: ClassVar[str] = "google"

    __slots__ = ("_client", "_settings")

    def __init__(
        self,
        client: Any,
        settings: GoogleTTSSettings,
        *,
        sample_rate: int,
        cache: PhraseCache | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, cache=cache)
        self._client = client
        self._settings = settings

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        settings = self._settings
        rate = self.sample_rate
        try:
            response = await settings.with_retries(
                lambda: self._request(text, rate), self.call, "google text-to-speech"
            )
        except Exception as exc:
            if not is_provider_failure(exc):
                raise
            events.emit.error(self.call, "provider")
            await self.push_error(f"google text-to-speech failed: {describe(exc)}")
            return b"", rate
        audio, wav_rate = strip_wav_header(response.audio_content)
        return audio, wav_rate or rate

    async def _request(self, text: str, rate: int) -> Any:
        from google.cloud import texttospeech_v1 as tts

        settings = self._settings
        audio_config = tts.AudioConfig(
            audio_encoding=tts.AudioEncoding.LINEAR16,
            sample_rate_hertz=rate,
            speaking_rate=settings.speaking_rate,
            effects_profile_id=[settings.audio_profile] if settings.audio_profile else [],
        )
        request = tts.SynthesizeSpeechRequest(
            input=tts.SynthesisInput(text=text),
            voice=tts.VoiceSelectionParams(
                language_code=settings.language_code, name=settings.voice
            ),
            audio_config=audio_config,
        )
        return await self._client.synthesize_speech(
            request=request, retry=None, timeout=settings.timeout_s
        )
