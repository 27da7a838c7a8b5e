"""A provider that hangs (accepts the connection, never sends a byte) rather than fails, for
speech-to-text, the LLM and text-to-speech in turn, heard by a simulated caller over real
AudioSocket: with `on_error: {then: hangup}` the bot says so (the filler), says goodbye and
hangs up within a bound; it never leaves the caller in silence on an open line. (``then:
retry`` is tested against failing providers in test_llm_outage.py.)

The working providers: pocketsphinx hears the caller, the Anthropic SDK talks to the local SSE
fake, the tone TTS speaks (200 ms a word, so what the caller hears is counted in words).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from fakes.anthropic_sse import FakeHTTPServer, anthropic_reply
from helpers import AUDIO

from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Say,
    Silence,
    WaitForHangup,
    load_wav,
    place_call,
)

WORD_S = 0.2
FILLER = "Sorry, I'm having a technical problem."  # 6 words
GOODBYE = "Please call again later. Goodbye."  # 5 words
REPLY = "Your order ships tomorrow before noon, is there anything else?"  # 10 words


class SilentServer:
    """Accepts connections and reads what comes, and never answers: a provider that hangs."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._held:
            writer.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._held.append(writer)
        while await reader.read(65536):
            pass


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


@pytest.fixture
async def llm_api() -> AsyncIterator[FakeHTTPServer]:
    async with FakeHTTPServer() as api:
        yield api


def hanging_bot(stt: str, llm: str, tts: str, then: str = "hangup") -> Bot:
    return Bot.from_yaml(
        f"""
name: hanging
transport: {{audiosocket: {{sample_rate: 16000}}}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - stt: {stt}
  - llm:
      {llm}
      retries: 0
      timeout_s: 0.5
      on_error: {{say: "{FILLER}", then: {then}, goodbye: "{GOODBYE}"}}
  - tts: {tts}
"""
    )


def anthropic(url: str) -> str:
    return f'provider: anthropic\n      api_key: test-key\n      base_url: "{url}"'


def hanging_speech(url: str) -> str:
    settings = f'base_url: "{url}", api_key: k, timeout_s: 0.5, retries: 0'
    return f"{{provider: openai_compatible, {settings}}}"


TONE = f"{{provider: tone, word_ms: {int(WORD_S * 1000)}}}"


def spoken_words(result: CallResult) -> float:
    return sum(end - start for start, end in result.bot_segments) / WORD_S


async def call(bot: Bot, script: list[object]) -> tuple[CallResult, float]:
    caller = load_wav(AUDIO / "caller_order_status_16k.wav", 16000)
    async with running_bot(bot) as server:
        started = time.monotonic()
        result = await place_call(
            server.host,
            server.port,
            [Silence(0.3), Say(caller), *script],
            rate=16000,  # type: ignore[list-item]
        )
        return result, time.monotonic() - started


async def test_an_llm_that_hangs_gets_the_filler_and_goodbye_then_a_hang_up(
    silent: SilentServer,
) -> None:
    bot = hanging_bot("{provider: pocketsphinx}", anthropic(silent.url), TONE)
    result, took = await call(bot, [WaitForHangup(timeout_s=30)])
    assert silent.connections == 1  # the request went out and got nothing back
    assert result.hung_up_by == "bot"
    assert abs(spoken_words(result) - 11) <= 1.5  # the filler (6) then the goodbye (5)
    assert took < 30


async def test_speech_to_text_that_hangs_gets_the_filler_and_goodbye_then_a_hang_up(
    silent: SilentServer, llm_api: FakeHTTPServer
) -> None:
    llm_api.add(anthropic_reply(REPLY))
    bot = hanging_bot(hanging_speech(silent.url), anthropic(llm_api.url), TONE)
    result, took = await call(bot, [WaitForHangup(timeout_s=30)])
    assert silent.connections >= 1
    assert result.hung_up_by == "bot"
    assert not llm_api.requests  # no words came, so no reply was asked for
    assert abs(spoken_words(result) - 11) <= 1.5  # the filler (6) then the goodbye (5)
    assert took < 30


async def test_text_to_speech_that_hangs_lets_the_local_voice_say_goodbye_then_a_hang_up(
    silent: SilentServer, llm_api: FakeHTTPServer
) -> None:
    llm_api.add(anthropic_reply(REPLY))
    bot = hanging_bot(
        "{provider: pocketsphinx}", anthropic(llm_api.url), hanging_speech(silent.url)
    )
    result, took = await call(bot, [WaitForHangup(timeout_s=30)])
    assert silent.connections >= 1
    assert len(llm_api.requests) == 1
    assert result.hung_up_by == "bot"
    # The filler and goodbye, cached at start from the packaged local voice (the hanging
    # voice could not say them either): a few seconds of speech, then the hang-up.
    assert result.bot_audio_s() > 2.0
    assert took < 30
