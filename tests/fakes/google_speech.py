"""Local fakes of Google Speech-to-Text v1 and Text-to-Speech v1, speaking real gRPC.

Each fake is a ``grpc.aio`` server registered under the real service and method names, with
the request and response messages (de)serialised by the protobuf types shipped in
google-cloud-speech and google-cloud-texttospeech. The official clients talk to it exactly as
they talk to Google, over an insecure channel on 127.0.0.1. Every request is recorded so tests
can check what the client really sent.

    async with FakeGoogleServer() as server:
        server.speech.interims = ["where is", "where is my"]
        server.speech.final = "where is my order"
        ... # point a client at server.endpoint
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.speech_v1.types import cloud_speech
from google.cloud.texttospeech_v1.types import cloud_tts


@dataclass
class RecordedStream:
    """One StreamingRecognize call as the fake received it."""

    config: cloud_speech.StreamingRecognitionConfig | None = None
    audio: bytearray = field(default_factory=bytearray, repr=False)
    audio_requests: int = 0
    half_closed: bool = False


class FakeSpeech:
    """``google.cloud.speech.v1.Speech``: StreamingRecognize with scripted results.

    For each stream it answers one interim result per audio request received (from
    ``interims``, in order, while they last), then the ``final`` result once the client
    half-closes. ``fail_next`` fails the next streams with the given status codes (one each),
    after taking in all their audio (failing earlier races the client's writes, and gRPC may
    then report INTERNAL instead); ``hang`` makes it accept audio but never answer.
    """

    service = "google.cloud.speech.v1.Speech"

    def __init__(self) -> None:
        self.interims: list[str] = []
        self.final = ""
        self.fail_next: list[grpc.StatusCode] = []
        self.hang = False
        self.streams: list[RecordedStream] = []

    def handler(self) -> grpc.GenericRpcHandler:
        """The gRPC handler to register on a server."""
        return grpc.method_handlers_generic_handler(
            self.service,
            {
                "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                    self._streaming_recognize,
                    request_deserializer=cloud_speech.StreamingRecognizeRequest.deserialize,
                    response_serializer=cloud_speech.StreamingRecognizeResponse.serialize,
                )
            },
        )

    async def _streaming_recognize(
        self,
        requests: AsyncIterator[cloud_speech.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[cloud_speech.StreamingRecognizeResponse]:
        stream = RecordedStream()
        self.streams.append(stream)
        failure = self.fail_next.pop(0) if self.fail_next else None
        interims = list(self.interims) if failure is None and not self.hang else []
        async for request in requests:
            if "streaming_config" in request:
                stream.config = request.streaming_config
                continue
            stream.audio += request.audio_content
            stream.audio_requests += 1
            if interims:
                yield _response(interims.pop(0), is_final=False)
        stream.half_closed = True
        if failure is not None:
            await context.abort(failure, "the fake drops this stream")
        if self.hang:
            await asyncio.Event().wait()
        if self.final:
            yield _response(self.final, is_final=True)


def _response(text: str, *, is_final: bool) -> cloud_speech.StreamingRecognizeResponse:
    alternative = cloud_speech.SpeechRecognitionAlternative(transcript=text, confidence=0.9)
    result = cloud_speech.StreamingRecognitionResult(
        alternatives=[alternative],
        is_final=is_final,
        stability=0.0 if is_final else 0.8,
        language_code="en-us",
    )
    return cloud_speech.StreamingRecognizeResponse(results=[result])


class FakeTextToSpeech:
    """``google.cloud.texttospeech.v1.TextToSpeech``: SynthesizeSpeech as Google answers it.

    LINEAR16 answers are WAV files (a RIFF header, then PCM), as the real service returns them:
    a 440 Hz tone lasting ``ms_per_char`` per character of text, at the requested rate (24 kHz
    when none is asked for). ``fail_next`` fails the next requests with the given status codes;
    ``delay_s`` holds every answer back that long.
    """

    service = "google.cloud.texttospeech.v1.TextToSpeech"

    def __init__(self) -> None:
        self.ms_per_char = 10
        self.fail_next: list[grpc.StatusCode] = []
        self.delay_s = 0.0
        self.requests: list[cloud_tts.SynthesizeSpeechRequest] = []

    def handler(self) -> grpc.GenericRpcHandler:
        """The gRPC handler to register on a server."""
        return grpc.method_handlers_generic_handler(
            self.service,
            {
                "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                    self._synthesize_speech,
                    request_deserializer=cloud_tts.SynthesizeSpeechRequest.deserialize,
                    response_serializer=cloud_tts.SynthesizeSpeechResponse.serialize,
                )
            },
        )

    async def _synthesize_speech(
        self,
        request: cloud_tts.SynthesizeSpeechRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> cloud_tts.SynthesizeSpeechResponse:
        self.requests.append(request)
        if self.fail_next:
            await context.abort(self.fail_next.pop(0), "the fake refuses this request")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.audio_config.audio_encoding != cloud_tts.AudioEncoding.LINEAR16:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the fake speaks LINEAR16 only")
        rate = request.audio_config.sample_rate_hertz or 24000
        samples = rate * self.ms_per_char * len(request.input.text) // 1000
        return cloud_tts.SynthesizeSpeechResponse(audio_content=tone_wav(rate, samples))


def tone_wav(rate: int, samples: int) -> bytes:
    """A mono 16-bit WAV file holding ``samples`` of a 440 Hz tone."""
    pcm = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(samples)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


class FakeGoogleServer:
    """Both fakes on one insecure gRPC server at ``endpoint`` (127.0.0.1, a free port)."""

    def __init__(self) -> None:
        self.speech = FakeSpeech()
        self.tts = FakeTextToSpeech()
        self.endpoint = ""
        self._server: grpc.aio.Server | None = None

    async def __aenter__(self) -> FakeGoogleServer:
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((self.speech.handler(), self.tts.handler()))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.endpoint = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
