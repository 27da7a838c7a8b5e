"""``stt: {provider: google}``: Google Cloud Speech-to-Text v1, streaming with interim results.

Each caller utterance (the VAD's start to its stop, with the pre-roll) is one
``StreamingRecognize`` call: LINEAR16 audio at the pipeline rate goes up as the caller speaks,
interim results come back as ``InterimTranscriptionFrame``, and once the caller stops the
request stream is closed and the final results become one ``TranscriptionFrame``. An utterance
longer than Google's stream limit (about five minutes) is split over fresh streams.

The connection options (credentials, endpoint, timeouts, retries) are shared with the Google
text-to-speech provider (``voxpipe.processors.google``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe.frames import Direction, EndFrame, Frame
from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.google import GoogleConnection, describe, is_provider_failure
from voxpipe.processors.stt.base import STTProcessor, STTProviderSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor

# Google ends a streaming recognition after about 305 s of audio; start a new one before that.
STREAM_LIMIT_S = 280.0
# Google accepts at most 25 KB of audio per streaming request.
MAX_REQUEST_BYTES = 16000


class GoogleSTTSettings(STTProviderSettings, GoogleConnection):
    """Google Cloud Speech-to-Text: streaming recognition with interim results."""

    provider: Literal["google"] = Field(description="Speech-to-text engine.")
    model: str = Field(
        "phone_call",
        description="Recognition model: phone_call (8 kHz telephone audio), latest_short, "
        "command_and_search, telephony or telephony_short where the language has them; "
        "empty lets Google choose.",
    )
    enhanced: bool = Field(
        True,
        description="Use the enhanced version of the model when there is one (Google falls "
        "back to the standard one otherwise).",
    )
    phrase_hints: list[str] = Field(
        default_factory=list,
        description="Words and phrases to favour (product names, menu options).",
    )
    phrase_boost: float | None = Field(
        None, ge=0, le=20, description="How strongly to favour the phrase hints."
    )
    interim_results: bool = Field(
        True, description="Report partial transcripts while the caller is still speaking."
    )
    punctuation: bool = Field(True, description="Ask Google for automatic punctuation.")
    timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Seconds to wait for the final transcript after the caller stops speaking.",
    )

    async def prepare(self, ctx: BotContext) -> None:
        key = self.client_key("stt")
        if key in ctx.shared:
            return
        try:
            from google.cloud import speech_v1
            from google.cloud.speech_v1.services.speech.transports import (
                SpeechGrpcAsyncIOTransport,
            )
        except ImportError as exc:
            raise ProviderError(
                "google speech-to-text: google-cloud-speech is not installed "
                "(pip install 'voxpipe[google]')"
            ) from exc
        ctx.shared[key] = await self.connect(
            "google speech-to-text", speech_v1.SpeechAsyncClient, SpeechGrpcAsyncIOTransport
        )

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return GoogleSTT(ctx.shared[self.client_key("stt")], self, sample_rate=call.sample_rate)


class _Speech:
    """One utterance's audio, kept whole so that a failed stream can be replayed from the start."""

    __slots__ = (
        "_changed",
        "attempt_at",
        "chunks",
        "deadline",
        "ended_at",
        "rate",
        "size",
        "timeout_s",
    )

    def __init__(self, rate: int, timeout_s: float) -> None:
        self.rate = rate
        self.timeout_s = timeout_s
        self.chunks: list[bytes] = []
        self.size = 0
        self.ended_at: float | None = None
        self.deadline: asyncio.Timeout | None = None
        self.attempt_at = 0.0
        self._changed = asyncio.Event()

    @property
    def duration_s(self) -> float:
        """Seconds of audio so far."""
        return self.size / (2 * self.rate)

    def add(self, audio: bytes) -> None:
        """Append caller audio."""
        if audio:
            self.chunks.append(audio)
            self.size += len(audio)
            self._changed.set()

    def end(self) -> None:
        """The caller stopped: close the request stream and start the answer's deadline."""
        self.ended_at = asyncio.get_running_loop().time()
        self._arm()
        self._changed.set()

    def watch(self, deadline: asyncio.Timeout) -> None:
        """Let ``deadline`` expire ``timeout_s`` after the end of the utterance (or after this
        attempt started, for a retry of an utterance that has already ended)."""
        self.deadline = deadline
        self.attempt_at = asyncio.get_running_loop().time()
        self._arm()

    def _arm(self) -> None:
        if self.deadline is not None and self.ended_at is not None:
            self.deadline.reschedule(max(self.ended_at, self.attempt_at) + self.timeout_s)

    async def requests(self, config: Any) -> AsyncIterator[Any]:
        """The streaming requests: the config, then the audio as it comes, then the end."""
        from google.cloud.speech_v1 import StreamingRecognizeRequest

        yield StreamingRecognizeRequest(streaming_config=config)
        sent = 0
        while True:
            if sent < len(self.chunks):
                batch = bytearray()
                while sent < len(self.chunks) and len(batch) < MAX_REQUEST_BYTES:
                    batch += self.chunks[sent]
                    sent += 1
                yield StreamingRecognizeRequest(audio_content=bytes(batch))
            elif self.ended_at is not None:
                return
            else:
                self._changed.clear()
                await self._changed.wait()


class GoogleSTT(STTProcessor):
    """Streams each caller utterance to Google and reports its interim and final transcripts.

    Recognition runs on a call-owned task per utterance, so caller audio never waits on the
    network. Transcripts are delivered in utterance order. A stream that fails with a transient
    error (or gets no final answer within ``timeout_s`` of the caller stopping) is retried with
    the utterance's audio replayed; when retries run out, a non-fatal ``ErrorFrame`` goes
    upstream so the bot can apologise. Time to first result is measured from the end of the
    caller's speech, which is the wait the caller notices.
    """

    provider: ClassVar[str] = "google"

    __slots__ = ("_client", "_pending", "_settings", "_speech")

    def __init__(self, client: Any, settings: GoogleSTTSettings, *, sample_rate: int) -> None:
        super().__init__(
            language=settings.language, preroll_ms=settings.preroll_ms, sample_rate=sample_rate
        )
        self._client = client
        self._settings = settings
        self._speech: _Speech | None = None
        self._pending: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, EndFrame):
            await self._drain()
        await super().process_frame(frame, direction)

    async def _drain(self) -> None:
        """Deliver the transcript still being recognised before the call ends."""
        if self._speech is not None:
            self._speech.end()
            self._speech = None
        if self._pending is not None:
            await asyncio.wait([self._pending])

    async def on_speech_started(self, preroll: bytes) -> None:
        speech = _Speech(self.sample_rate, self._settings.timeout_s)
        speech.add(preroll)
        self._speech = speech
        previous = self._pending
        self._pending = self.create_task(self._recognize(speech, previous), name=self.name)

    async def on_speech_audio(self, audio: bytes) -> None:
        speech = self._speech
        if speech is None:
            return
        speech.add(audio)
        if speech.duration_s >= STREAM_LIMIT_S:
            await self.utterance_ended()
            await self.on_speech_stopped()
            await self.on_speech_started(b"")

    async def on_speech_stopped(self) -> None:
        if self._speech is not None:
            self.begin_request()
            self._speech.end()
            self._speech = None

    async def _recognize(self, speech: _Speech, previous: asyncio.Task[None] | None) -> None:
        settings = self._settings
        try:
            text = await settings.with_retries(
                lambda: self._stream(speech, previous), self.call, "google speech-to-text"
            )
        except Exception as exc:
            if not is_provider_failure(exc):
                raise
            if previous is not None:
                await asyncio.wait([previous])
            await self.lose_utterance(f"google speech-to-text: {describe(exc)}")
            return
        if previous is not None:
            await asyncio.wait([previous])
        await self.push_final(text)

    async def _stream(self, speech: _Speech, previous: asyncio.Task[None] | None) -> str:
        """One StreamingRecognize call over the utterance; returns its final transcript."""
        finals: list[str] = []
        async with asyncio.timeout(None) as deadline:
            speech.watch(deadline)
            stream = await self._client.streaming_recognize(
                requests=speech.requests(self._config(speech.rate)),
                retry=None,
                timeout=STREAM_LIMIT_S + 30,
            )
            try:
                async for response in stream:
                    for result in response.results:
                        if not result.alternatives:
                            continue
                        text = result.alternatives[0].transcript.strip()
                        if result.is_final:
                            finals.append(text)
                        elif previous is None or previous.done():
                            await self.push_interim(" ".join([*finals, text]))
            finally:
                stream.cancel()
        return " ".join(part for part in finals if part)

    def _config(self, rate: int) -> Any:
        from google.cloud import speech_v1

        settings = self._settings
        contexts = []
        if settings.phrase_hints:
            context = speech_v1.SpeechContext(phrases=settings.phrase_hints)
            if settings.phrase_boost is not None:
                context.boost = settings.phrase_boost
            contexts.append(context)
        config = speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=rate,
            audio_channel_count=1,
            language_code=settings.language,
            model=settings.model,
            use_enhanced=settings.enhanced,
            speech_contexts=contexts,
            enable_automatic_punctuation=settings.punctuation,
            max_alternatives=1,
        )
        return speech_v1.StreamingRecognitionConfig(
            config=config, interim_results=settings.interim_results
        )
