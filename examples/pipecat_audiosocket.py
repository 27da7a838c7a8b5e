"""A Pipecat voice bot that answers Asterisk calls over AudioSocket or chan_websocket.

    pip install 'voxpipe[pipecat,openai]'
    OPENAI_API_KEY=sk-... python examples/pipecat_audiosocket.py
    OPENAI_API_KEY=sk-... TRANSPORT=chan_websocket python examples/pipecat_audiosocket.py

Point Asterisk's dialplan at it (``same => n,AudioSocket(${UUID()},127.0.0.1:9092)``, see
``asterisk/``), or call it without a phone:

    run-pipeline call configs/echo.yaml --connect 127.0.0.1:9092 --say "Where is my order?"

With ``TRANSPORT=chan_websocket`` Asterisk's WebSocket channel driver dials the bot instead
(Asterisk 20.16+: a ``websocket_client.conf`` connection with ``uri = ws://127.0.0.1:8765`` and
``same => n,Dial(WebSocket/voxpipe/c(slin16))``); the same pipeline runs, and Pipecat's
interruptions become ``FLUSH_MEDIA``.

The pipeline is plain Pipecat: ``transport.input()``, OpenAI speech-to-text, a user context
aggregator with Silero VAD, an OpenAI LLM, OpenAI text-to-speech, ``transport.output()``.
``OPENAI_BASE_URL`` points all three at an OpenAI-compatible server instead (self-hosted
speech and models); ``LISTEN`` (default 0.0.0.0:9092, or 0.0.0.0:8765 for chan_websocket) is
where Asterisk connects.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.workers.runner import WorkerRunner

from voxpipe.interop.pipecat import (
    AudioSocketListener,
    ChanWebSocketListener,
    LineTransport,
    serve,
    serve_chan_websocket,
)

SAMPLE_RATE = 16000  # the pipeline's rate; callers at 8 kHz (slin) are resampled both ways


@dataclass
class Config:
    """Where the services are and what the bot says first."""

    api_key: str
    base_url: str | None = None
    greeting: str = "Hello, this is the ACME order desk. How can I help?"
    system: str = "You are the order desk of ACME, on the phone. Answer in one or two sentences."

    @classmethod
    def from_env(cls) -> Config:
        return cls(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ.get("OPENAI_BASE_URL"))


async def run_call(transport: LineTransport, config: Config) -> None:
    """One call: a Pipecat pipeline between the call's input and output."""
    stt = OpenAISTTService(
        api_key=config.api_key,
        base_url=config.base_url,
        settings=OpenAISTTService.Settings(model="whisper-1"),
    )
    llm = OpenAILLMService(
        api_key=config.api_key,
        base_url=config.base_url,
        settings=OpenAILLMService.Settings(model="gpt-4o-mini", system_instruction=config.system),
    )
    tts = OpenAITTSService(
        api_key=config.api_key,
        base_url=config.base_url,
        sample_rate=24000,
        settings=OpenAITTSService.Settings(model="gpt-4o-mini-tts", voice="nova"),
    )
    context = LLMContext()
    user, assistant = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline([transport.input(), stt, user, llm, tts, transport.output(), assistant])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_connected")
    async def greet(transport: LineTransport, call_id: str) -> None:
        await worker.queue_frames([TTSSpeakFrame(config.greeting)])

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def main() -> None:
    config = Config.from_env()
    kind = os.environ.get("TRANSPORT", "audiosocket")
    if kind == "chan_websocket":
        listener: AudioSocketListener | ChanWebSocketListener = await serve_chan_websocket(
            lambda transport: run_call(transport, config),
            listen=os.environ.get("LISTEN", "0.0.0.0:8765"),
        )
    elif kind == "audiosocket":
        listener = await serve(
            lambda transport: run_call(transport, config),
            listen=os.environ.get("LISTEN", "0.0.0.0:9092"),
        )
    else:
        raise SystemExit(f"TRANSPORT is audiosocket or chan_websocket, not {kind!r}")
    print(f"taking {kind} calls on port {listener.port}")
    try:
        await asyncio.Event().wait()
    finally:
        await listener.stop()


if __name__ == "__main__":
    asyncio.run(main())
