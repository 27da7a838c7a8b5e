"""Conversations with audio in the loop: a simulated caller over real AudioSocket (loopback TCP).

The bot speaks with the tone text-to-speech (a beep per word, so its audio is easy to find on
the socket); the caller speaks recorded utterances from tests/audio, or noise, or nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from helpers import AUDIO, observing

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.conversation import CallState
from voxpipe.pipelines.call import Call
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Say,
    Silence,
    WaitForBot,
    WaitForHangup,
    load_wav,
    place_call,
)
from voxpipe.transports.audiosocket.protocol import RATE_OF_KIND

FRAME_S = 0.02
WORD_MS = 200
LONG_GREETING = " ".join(
    [
        "Welcome to the ACME order desk, where we track every parcel from the warehouse",
        "to your door, tell you when it ships, when it arrives, and what to do if it is late.",
        "You can ask about an order, a refund, a delivery slot, or speak to an operator.",
    ]
)


class ScenarioEvents(events.Observer):
    """Notes barge-ins (with the loop time), silence hang-ups and state changes."""

    def __init__(self) -> None:
        self.barge_ins: list[float] = []
        self.silence_hangups = 0
        self.states: list[str] = []

    def barge_in(self, call: Call) -> None:
        self.barge_ins.append(asyncio.get_running_loop().time())

    def silence_hangup(self, call: Call) -> None:
        self.silence_hangups += 1

    def call_state(self, call: Call, state: str) -> None:
        self.states.append(state)


def bot_yaml(pipeline: str, greeting: str | None = None) -> Bot:
    text = "name: scenario\n"
    if greeting:
        text += f"greeting: {greeting!r}\n"
    text += "transport: {audiosocket: {sample_rate: 16000, keepalive_s: 0.5}}\n"
    text += "pipeline:\n" + pipeline
    return Bot.from_yaml(text)


async def converse(
    bot: Bot, script: list[Any], rate: int
) -> tuple[CallResult, Call, ScenarioEvents, float]:
    """Place one call; return what the caller got, the bot's call, the events and the call's t0."""
    seen = ScenarioEvents()
    calls: list[Call] = []

    async def keep(call: Call) -> None:
        calls.append(call)

    with observing(seen):
        async with running_bot(bot) as server:
            server.on_call_start.append(keep)
            t0 = asyncio.get_running_loop().time()
            result = await place_call(server.host, server.port, script, rate=rate)
            for _ in range(100):
                if not server.calls:
                    break
                await asyncio.sleep(0.02)
    assert len(calls) == 1
    return result, calls[0], seen, t0


def voice_messages(result: CallResult) -> list[float]:
    """Arrival times of the bot's audio messages that carry sound (not keepalive silence)."""
    out = []
    offset = 0
    for t, kind, size in result.messages:
        rate = RATE_OF_KIND.get(kind)  # type: ignore[call-overload]
        if rate is None:
            continue
        chunk = np.frombuffer(result.received[offset : offset + size * result.rate // rate], "<i2")
        offset += size * result.rate // rate
        if chunk.size and int(np.abs(chunk.astype(np.int32)).max()) >= 512:
            out.append(t)
    return out


def noise(rate: int, seconds: float, level: float) -> bytes:
    rng = np.random.default_rng(11)
    return bytes(rng.normal(0, level, int(rate * seconds)).astype("<i2").tobytes())


BARGE_IN_PIPELINE = f"""\
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - barge_in: {{min_speech_ms: 300, protect_greeting: false}}
  - llm: {{provider: scripted, fallback: "Sorry?"}}
  - tts: {{provider: tone, word_ms: {WORD_MS}}}
"""


async def test_caller_interrupts_a_long_reply_and_the_bot_stops_at_once() -> None:
    bot = bot_yaml(BARGE_IN_PIPELINE, greeting=LONG_GREETING)
    speech = load_wav(AUDIO / "caller_interrupt_16k.wav", 16000)
    script = [Silence(2.0), Say(speech), Silence(1.0)]
    result, call, seen, t0 = await converse(bot, script, rate=16000)

    assert len(seen.barge_ins) == 1
    decided = seen.barge_ins[0] - t0
    voiced = voice_messages(result)
    assert voiced and voiced[0] < 2.0, "the bot was speaking when the caller started"
    after = [t for t in voiced if t > decided]
    # Within 2 frames on the wire; the time bound leaves room for a loaded machine.
    assert len(after) <= 2, f"{len(after)} bot frames after the barge-in decision"
    assert voiced[-1] - decided < 0.25
    assert result.bot_audio_s() < len(LONG_GREETING.split()) * WORD_MS / 1000

    greeting = [m for m in call.history if m["role"] == "assistant"]
    assert len(greeting) >= 1
    heard = greeting[0]["content"]
    assert heard, "the caller heard the start of the greeting"
    assert LONG_GREETING.startswith(heard.rstrip(".,")) or LONG_GREETING.startswith(heard)
    assert len(heard.split()) < len(LONG_GREETING.split())
    played_words = (decided - voiced[0]) / (WORD_MS / 1000)
    assert abs(len(heard.split()) - played_words) <= 3, (heard, played_words)


async def test_a_protected_greeting_is_not_interrupted_even_between_its_sentences() -> None:
    pipeline = BARGE_IN_PIPELINE.replace("protect_greeting: false", "protect_greeting: true")
    pipeline = pipeline.replace(f"word_ms: {WORD_MS}", f"word_ms: {WORD_MS}, delay_ms: 1500")
    greeting = "Welcome to ACME. We will be with you in just a moment, please hold."
    bot = bot_yaml(pipeline, greeting=greeting)
    speech = load_wav(AUDIO / "caller_interrupt_8k.wav", 8000)
    script = [Silence(1.0), Say(speech), WaitForBot(5, quiet_s=0.5)]
    result, call, seen, _ = await converse(bot, script, rate=8000)
    assert len(result.bot_segments) >= 2, "the bot paused between the greeting's sentences"
    assert seen.barge_ins == []
    assert call.history[0] == {"role": "assistant", "content": greeting}


SILENCE_PIPELINE = """\
  - vad: {start_ms: 200, stop_ms: 400}
  - tts: {provider: tone, word_ms: 100}
  - silence_timeout: {after_s: 1.0, prompt: "Are you still there?", max_prompts: 1,
                      goodbye: "Goodbye then."}
"""


async def test_a_silent_caller_is_prompted_then_hung_up() -> None:
    bot = bot_yaml(SILENCE_PIPELINE)
    result, call, seen, _ = await converse(bot, [WaitForHangup(15)], rate=8000)
    assert result.hung_up_by == "bot"
    assert seen.silence_hangups == 1
    prompt, goodbye = result.bot_segments
    assert prompt[0] >= 0.9, "the prompt comes after the timeout, not before"
    assert prompt[1] - prompt[0] >= 0.3, "four words of tone"
    assert goodbye[0] - prompt[1] >= 0.9, "the goodbye comes a timeout after the prompt"
    assert "processing" not in seen.states, "silence is never a turn"
    assert call.state is CallState.ENDED


async def test_a_caller_who_answers_the_prompt_keeps_the_call() -> None:
    bot = bot_yaml(SILENCE_PIPELINE)
    yes = load_wav(AUDIO / "caller_yes_8k.wav", 8000)
    script = [WaitForBot(5, quiet_s=0.3), Say(yes), WaitForBot(5, quiet_s=0.3), Silence(0.5)]
    result, _call, seen, _ = await converse(bot, script, rate=8000)
    assert result.hung_up_by == "caller"
    assert seen.silence_hangups == 0
    assert len(result.bot_segments) == 2, "prompted again after answering, never the goodbye"
    first, second = result.bot_segments
    assert abs((first[1] - first[0]) - (second[1] - second[0])) < 0.1


async def test_background_noise_neither_interrupts_nor_takes_a_turn() -> None:
    pipeline = BARGE_IN_PIPELINE.replace("min_speech_ms: 300", "min_speech_ms: 100")
    bot = bot_yaml(pipeline, greeting=LONG_GREETING)
    script = [Say(noise(8000, 3.0, 60.0)), Silence(0.5), Say(noise(8000, 2.0, 150.0))]
    result, call, seen, _ = await converse(bot, script, rate=8000)
    assert seen.barge_ins == []
    assert "processing" not in seen.states
    assert [m["role"] for m in call.history] == ["assistant"]
    assert len(voice_messages(result)) > 5.0 / FRAME_S * 0.8, "the bot spoke all along"


async def test_without_barge_in_the_caller_cannot_cut_the_bot_off() -> None:
    pipeline = "".join(
        line + "\n" for line in BARGE_IN_PIPELINE.splitlines() if "barge_in" not in line
    )
    greeting = "Welcome to the ACME order desk, we will be with you in just a moment."
    bot = bot_yaml(pipeline, greeting=greeting)
    speech = load_wav(AUDIO / "caller_interrupt_16k.wav", 16000)
    script = [Silence(0.5), Say(speech), WaitForBot(5, quiet_s=0.5)]
    _result, call, seen, _ = await converse(bot, script, rate=16000)
    assert seen.barge_ins == []
    assert call.history[0] == {"role": "assistant", "content": greeting}


LONG_REPLY = " ".join(
    [
        "Sure, I can help with that. Orders usually leave the warehouse within two working days,",
        "then the carrier takes one to three days depending on where you live and how busy the",
        "network is, and you get a message with a tracking link as soon as the parcel is on its",
        "way, so you can follow every step until it reaches your door or the pick up point.",
    ]
)


async def test_caller_cuts_off_a_long_answer_and_history_keeps_what_was_heard() -> None:
    pipeline = f"""\
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - stt: {{provider: pocketsphinx}}
  - barge_in: {{min_speech_ms: 300}}
  - llm:
      provider: scripted
      intents:
        - {{keywords: [order, status], reply: {LONG_REPLY!r}}}
      fallback: "Sure, go ahead."
  - tts: {{provider: tone, word_ms: {WORD_MS}}}
"""
    bot = bot_yaml(pipeline)
    question = load_wav(AUDIO / "caller_order_status_16k.wav", 16000)
    interruption = load_wav(AUDIO / "caller_interrupt_16k.wav", 16000)
    script = [Silence(0.3), Say(question), Silence(4.0), Say(interruption), Silence(1.0)]
    result, call, seen, t0 = await converse(bot, script, rate=16000)

    assert len(seen.barge_ins) == 1
    decided = seen.barge_ins[0] - t0
    voiced = voice_messages(result)
    # The caller goes on talking for 2 s after the decision, so no new answer starts within 1 s.
    assert len([t for t in voiced if decided < t < decided + 1.0]) <= 2
    answers = [m["content"] for m in call.history if m["role"] == "assistant"]
    assert call.history[0]["role"] == "user"
    heard = answers[0]
    assert heard and LONG_REPLY.startswith(heard), heard
    assert len(heard.split()) < len(LONG_REPLY.split()), "only the words played are kept"
