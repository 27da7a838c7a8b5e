"""A text-to-speech outage mid-call, heard by a simulated caller over real AudioSocket.

The bot listens with Google speech-to-text and speaks with Google text-to-speech, both through
the official clients against the local gRPC fake; its brain is the scripted LLM. The fake voice
is a tone lasting ``MS_PER_CHAR`` per character, so what the caller hears is measured in
seconds of tone. The filler and goodbye were synthesised when the bot started; when the voice
fails mid-call they still reach the caller, then the call goes on or ends as configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from fakes.google_speech import FakeGoogleServer
from helpers import AUDIO

from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.processors.tts.cache import PhraseCache
from voxpipe.processors.tts.standby import standby_lines
from voxpipe.testing import until
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Hangup,
    Say,
    Silence,
    Step,
    WaitForBot,
    WaitForHangup,
    load_wav,
    place_call,
)

MS_PER_CHAR = 40
FILLER = "Sorry, I'm having a technical problem."
GOODBYE = ["Please call again later.", "Goodbye."]
LATE = "One moment."  # the LLM's filler for a late reply, kept beside the on_error lines
REPLY = ["Your order ships tomorrow before noon.", "Is there anything else?"]
DOWN = grpc.StatusCode.UNAVAILABLE


def seconds_of(*texts: str) -> float:
    """How long the fake voice speaks ``texts``."""
    return sum(len(text) for text in texts) * MS_PER_CHAR / 1000


def fallback_bot(endpoint: str, then: str) -> Bot:
    google = f'endpoint: "{endpoint}", insecure: true, backoff_s: 0.01'
    return Bot.from_yaml(
        f"""
name: tts-fallback
transport: {{audiosocket: {{sample_rate: 16000}}}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - stt: {{provider: google, {google}}}
  - llm:
      provider: scripted
      intents: [{{keywords: [order], reply: "{" ".join(REPLY)}"}}]
      on_error: {{say: "{FILLER}", then: {then}, goodbye: "{" ".join(GOODBYE)}"}}
  - tts: {{provider: google, retries: 0, {google}}}
"""
    )


def heard_s(result: CallResult) -> list[float]:
    """The length of each stretch of bot speech the caller heard."""
    return [end - start for start, end in result.bot_segments]


async def voice_back_when_caller_speaks_again(fake: FakeGoogleServer) -> None:
    """End the TTS outage once the caller's second utterance reaches speech-to-text."""
    await until(lambda: len(fake.speech.streams) >= 2, 30)  # the fake records, it signals nothing
    fake.tts.fail_next.clear()


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogleServer]:
    async with FakeGoogleServer() as server:
        server.tts.ms_per_char = MS_PER_CHAR
        server.speech.final = "where is my order"
        yield server


async def call(bot: Bot, fake: FakeGoogleServer, script: list[Step], *, down: bool) -> CallResult:
    """Place one call; with ``down``, the voice fails from the moment the call starts."""
    caller = load_wav(AUDIO / "caller_order_status_16k.wav", 16000)
    async with running_bot(bot) as server:
        if down:
            fake.tts.fail_next = [DOWN] * 50
        try:
            return await place_call(
                server.host, server.port, [Silence(0.3), Say(caller), *script], rate=16000
            )
        finally:
            await bot.close()


def texts_asked(fake: FakeGoogleServer) -> list[str]:
    return [request.input.text for request in fake.tts.requests]


def test_standby_lines_are_the_sentences_of_the_llm_on_error_lines_and_its_filler() -> None:
    bot = fallback_bot("127.0.0.1:1", "hangup")
    assert standby_lines(bot) == [FILLER, *GOODBYE, LATE]


async def test_caller_hears_the_filler_while_the_voice_is_down_then_the_call_goes_on(
    fake: FakeGoogleServer,
) -> None:
    bot = fallback_bot(fake.endpoint, "retry")
    caller = load_wav(AUDIO / "caller_order_status_16k.wav", 16000)
    restore = asyncio.create_task(voice_back_when_caller_speaks_again(fake))
    script: list[Step] = [WaitForBot(timeout_s=15, quiet_s=1.0), Say(caller)]
    script += [WaitForBot(timeout_s=15, quiet_s=1.0), Hangup()]
    result = await call(bot, fake, script, down=True)
    await restore
    assert result.hung_up_by == "caller"
    # The clips were made at start; in the call the voice was asked for the reply only: while
    # down, its first sentence (lost, with the rest of the reply: the filler came from its
    # clip instead), then, back up, the whole reply.
    assert texts_asked(fake) == [FILLER, *GOODBYE, LATE, REPLY[0], *REPLY]
    filler, reply = heard_s(result)
    assert abs(filler - seconds_of(FILLER)) < 0.3
    assert abs(reply - seconds_of(*REPLY)) < 0.3


async def test_caller_hears_the_filler_and_goodbye_while_the_voice_is_down_then_is_hung_up_on(
    fake: FakeGoogleServer,
) -> None:
    bot = fallback_bot(fake.endpoint, "hangup")
    result = await call(bot, fake, [WaitForHangup(timeout_s=20)], down=True)
    assert result.hung_up_by == "bot"
    assert texts_asked(fake) == [FILLER, *GOODBYE, LATE, REPLY[0]]
    assert abs(sum(heard_s(result)) - seconds_of(FILLER, *GOODBYE)) < 0.4


async def test_a_voice_already_down_at_start_gets_its_clips_from_the_local_voice(
    fake: FakeGoogleServer, caplog: pytest.LogCaptureFixture
) -> None:
    bot = fallback_bot(fake.endpoint, "hangup")
    fake.tts.fail_next = [DOWN] * 50
    with caplog.at_level(logging.WARNING, "voxpipe.tts"):
        result = await call(bot, fake, [WaitForHangup(timeout_s=20)], down=False)
    assert "packaged piper voice" in caplog.text
    assert result.hung_up_by == "bot"
    # Asked once at start (the first failure stops the asking), then for the reply only.
    assert texts_asked(fake) == [FILLER, REPLY[0]]
    # The piper voice is no tone: its lines last as long as it takes to say them.
    assert sum(heard_s(result)) > 1.5


async def test_without_any_voice_at_start_the_missing_clips_are_logged_as_errors(
    fake: FakeGoogleServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxpipe.pipelines.settings import ProviderError
    from voxpipe.processors.tts import packaged

    def no_piper(text: str, sample_rate: int) -> bytes:
        raise ProviderError("piper: piper-tts is not installed")

    monkeypatch.setattr(packaged, "offline_say", no_piper)
    bot = fallback_bot(fake.endpoint, "retry")
    fake.tts.fail_next = [DOWN] * 50
    with caplog.at_level(logging.ERROR, "voxpipe.tts"):
        await bot.prepare()
    await bot.close()
    (record,) = [r for r in caplog.records if r.name == "voxpipe.tts"]
    assert record.levelno == logging.ERROR
    assert FILLER in record.getMessage() and "caller hears nothing" in record.getMessage()


def test_standby_clips_stay_pinned_when_the_cache_turns_over() -> None:
    cache = PhraseCache(size=1)
    cache.pin(FILLER, b"\x01\x00", 16000)
    cache.put("One.", b"\x02\x00", 16000)
    cache.put("Two.", b"\x03\x00", 16000)
    assert cache.get(FILLER) == (b"\x01\x00", 16000)
    assert cache.get("One.") is None
    assert PhraseCache(size=0).get(FILLER) is None


async def test_a_sentence_many_calls_want_at_once_is_synthesised_once() -> None:
    cache = PhraseCache(size=8)
    asked: list[str] = []

    async def voice(text: str) -> tuple[bytes, int]:
        asked.append(text)
        await asyncio.sleep(0.1)
        return b"\x01\x00", 16000

    heard = await asyncio.gather(*(cache.shared("Hello.", voice) for _ in range(10)))
    assert asked == ["Hello."] and set(heard) == {(b"\x01\x00", 16000)}

    async def down(text: str) -> tuple[bytes, int]:
        asked.append(text)
        await asyncio.sleep(0.05)
        raise ConnectionError("the voice is down")

    failed = await asyncio.gather(
        *(cache.shared("Bye.", down) for _ in range(3)), return_exceptions=True
    )
    assert asked.count("Bye.") == 1
    assert all(isinstance(result, ConnectionError) for result in failed)

    # The call that asked first hangs up mid-synthesis: the one waiting asks again.
    first = asyncio.create_task(cache.shared("Thanks.", voice))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.shared("Thanks.", voice))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == (b"\x01\x00", 16000)
    assert asked.count("Thanks.") == 2
