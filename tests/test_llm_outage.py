"""A provider outage mid-call, heard by a simulated caller over real AudioSocket.

The caller speaks a recorded utterance (pocketsphinx hears it); the LLM is Anthropic through the
official SDK against the local SSE fake, failing with 529s. The bot speaks with the tone TTS
(200 ms per word), so what the caller hears is measured in words.
"""

from __future__ import annotations

from fakes.anthropic_sse import FakeHTTPServer, anthropic_error, anthropic_reply
from helpers import AUDIO

from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Hangup,
    Say,
    Silence,
    WaitForBot,
    WaitForHangup,
    load_wav,
    place_call,
)

WORD_S = 0.2
FILLER = "Sorry, I'm having a technical problem."  # 6 words
REPLY = "Your order ships tomorrow before noon, is there anything else?"  # 10 words
GOODBYE = "Please call again later. Goodbye."  # 5 words


def outage_bot(api_url: str, then: str, retries: int) -> Bot:
    return Bot.from_yaml(
        f"""
name: outage
transport: {{audiosocket: {{sample_rate: 16000}}}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - stt: {{provider: pocketsphinx}}
  - llm:
      provider: anthropic
      api_key: test-key
      base_url: "{api_url}"
      retries: {retries}
      backoff_s: 0.05
      on_error: {{say: "{FILLER}", then: {then}, goodbye: "{GOODBYE}"}}
  - tts: {{provider: tone, word_ms: {int(WORD_S * 1000)}}}
"""
    )


def spoken_words(result: CallResult) -> float:
    """How many words of tone the caller heard."""
    return sum(end - start for start, end in result.bot_segments) / WORD_S


async def call(bot: Bot, script: list[object]) -> CallResult:
    caller = load_wav(AUDIO / "caller_order_status_16k.wav", 16000)
    async with running_bot(bot) as server:
        return await place_call(
            server.host,
            server.port,
            [Silence(0.3), Say(caller), *script],
            rate=16000,  # type: ignore[list-item]
        )


async def test_caller_hears_the_filler_then_the_retried_reply() -> None:
    async with FakeHTTPServer() as api:
        api.add(anthropic_error(529), anthropic_reply(REPLY))
        bot = outage_bot(api.url, "retry", retries=0)
        result = await call(bot, [WaitForBot(timeout_s=15, quiet_s=1.0), Hangup()])
    assert result.hung_up_by == "caller"
    assert len(api.requests) == 2  # the request, then the turn retried once
    assert "status of my order" in api.requests[1].json["messages"][0]["content"]
    assert abs(spoken_words(result) - 16) <= 1.5  # the filler (6) then the reply (10)


async def test_caller_hears_the_filler_then_goodbye_and_is_hung_up_on() -> None:
    async with FakeHTTPServer() as api:
        api.add(*[anthropic_error(529)] * 3)
        bot = outage_bot(api.url, "hangup", retries=2)
        result = await call(bot, [WaitForHangup(timeout_s=20)])
    assert result.hung_up_by == "bot"
    assert len(api.requests) == 3  # the request and two retries with backoff
    assert abs(spoken_words(result) - 11) <= 1.5  # the filler (6) then the goodbye (5)
