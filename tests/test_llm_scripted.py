"""The scripted LLM and the turn-taking, greeting, tools and history every LLM shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes.llm_chain import Conversation, Listener, converse
from helpers import AUDIO

from voxpipe.bots.bot import Bot
from voxpipe.bots.config import ConfigError
from voxpipe.frames import (
    SPEECH_LOST,
    UPSTREAM,
    Direction,
    ErrorFrame,
    Frame,
    HangupFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    ToolCallFrame,
    TranscriptionFrame,
    TranscriptsPendingFrame,
    TransferFrame,
    TTSFillerFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.llm.scripted import ScriptedClient

# Settings of the late-reply filler (a short wait, for tests), and none at all.
QUIET_AT = "tools: [hangup, transfer]"
QUIET = "tools: [hangup, transfer]\n      filler_after_ms: null"
LATE_FILLER = "tools: [hangup, transfer]\n      filler_after_ms: 300\n      filler: Just a second."

DESK = """
name: desk
greeting: "Hello, ACME order desk."
pipeline:
  - llm:
      provider: scripted
      tools: [hangup, transfer]
      intents:
        - name: order_number
          regex: '(?P<number>[a-z][0-9]{5})'
          reply: "Order {number} ships tomorrow."
        - name: status
          keywords: [order, status]
          reply: "Sure. What is your order number?"
        - name: operator
          keywords: [operator, human]
          reply: "Of course."
          tool: {name: transfer}
        - name: bye
          keywords: [goodbye, "that's all"]
          tool: {name: hangup}
      fallback: "Sorry, could you repeat that?"
tools:
  transfer: {context: operators, extension: "100", say: "Transferring you now."}
  hangup: {goodbye: "Thanks for calling ACME. Goodbye."}
"""


async def test_greets_then_answers_each_turn_once() -> None:
    async with await converse(DESK) as c:
        assert await c.replies(1) == ["Hello, ACME order desk."]
        await c.say("I want to check my order status")
        said = await c.replies(2)
        assert said[1] == "Sure. What is your order number?"
        await c.say("it is A12345")
        said = await c.replies(3)
        assert said[2] == "Order A12345 ships tomorrow."
        await c.say("blue elephants")
        assert (await c.replies(4))[3] == "Sorry, could you repeat that?"
        assert c.call.history == [
            {"role": "assistant", "content": "Hello, ACME order desk."},
            {"role": "user", "content": "I want to check my order status"},
            {"role": "assistant", "content": "Sure. What is your order number?"},
            {"role": "user", "content": "it is A12345"},
            {"role": "assistant", "content": "Order A12345 ships tomorrow."},
            {"role": "user", "content": "blue elephants"},
            {"role": "assistant", "content": "Sorry, could you repeat that?"},
        ]
        assert len(c.listener.of(LLMResponseStartFrame)) == 3
        assert len(c.listener.of(LLMResponseEndFrame)) == 3


async def test_transfer_says_its_line_then_asks_for_the_transfer() -> None:
    async with await converse(DESK) as c:
        await c.say("can I talk to an operator please")
        said = await c.replies(3)
        assert said[1:] == ["Of course.", "Transferring you now."]
        await c.listener.wait_for(lambda: bool(c.listener.of(TransferFrame)))
        frames = c.listener.frames
        transfer = c.listener.of(TransferFrame)[0]
        assert (transfer.context, transfer.extension) == ("operators", "100")
        assert frames.index(transfer) > frames.index(c.listener.of(ToolCallFrame)[0])
        assert c.listener.of(ToolCallFrame)[0].name == "transfer"
        assert c.call.history[-1] == {
            "role": "assistant",
            "content": "Of course. Transferring you now.",
        }


async def test_hangup_says_goodbye_before_the_hangup() -> None:
    async with await converse(DESK) as c:
        await c.say("that's all, goodbye")
        await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
        assert c.listener.spoken()[-1] == "Thanks for calling ACME. Goodbye."
        await asyncio.wait_for(c.runner, 5)  # type: ignore[arg-type]
        assert c.task.end_reason == "hangup tool"


async def test_a_final_transcript_shortly_after_the_stop_still_makes_the_turn() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await asyncio.sleep(0.05)
        await c.task.push_frame(TranscriptionFrame("order status please"))
        assert (await c.replies(2))[1] == "Sure. What is your order number?"


async def test_a_final_transcript_long_after_the_stop_still_makes_the_turn() -> None:
    async with await converse(DESK.replace("tools: [hangup, transfer]", QUIET)) as c:
        await c.replies(1)
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await asyncio.sleep(6.0)  # a decode queued behind a burst of callers
        await c.task.push_frame(TranscriptionFrame("order status please"))
        await c.task.push_frame(TranscriptsPendingFrame(0))
        assert (await c.replies(2))[1] == "Sure. What is your order number?"
        assert c.call.history[1] == {"role": "user", "content": "order status please"}


async def test_the_turn_waits_for_every_transcript_of_what_the_caller_said() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        # Two utterances with a pause between: the first one's transcript comes while the
        # caller is saying the second, whose own transcript is still being decoded at the stop.
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptionFrame("I would like to know"))
        await c.task.push_frame(TranscriptsPendingFrame(0))
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await asyncio.sleep(0.2)
        assert len(c.listener.spoken()) == 1
        await c.task.push_frame(TranscriptionFrame("the status of my order"))
        await c.task.push_frame(TranscriptsPendingFrame(0))
        assert (await c.replies(2))[1] == "Sure. What is your order number?"
        await asyncio.sleep(0.1)
        assert len(c.listener.spoken()) == 2
        assert c.call.history[1] == {
            "role": "user",
            "content": "I would like to know the status of my order",
        }


async def test_a_late_reply_gets_the_filler_once_and_then_the_answer() -> None:
    async with await converse(DESK.replace(QUIET_AT, LATE_FILLER)) as c:
        await c.replies(1)
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.listener.wait_for(lambda: bool(c.listener.of(TTSFillerFrame)), timeout_s=2)
        assert c.listener.of(TTSFillerFrame)[0].text == "Just a second."
        await asyncio.sleep(0.5)
        await c.task.push_frame(TranscriptionFrame("order status please"))
        await c.task.push_frame(TranscriptsPendingFrame(0))
        assert (await c.replies(2))[1] == "Sure. What is your order number?"
        assert len(c.listener.of(TTSFillerFrame)) == 1
        assert [m["content"] for m in c.call.history if m["role"] == "assistant"] == [
            "Hello, ACME order desk.",
            "Sure. What is your order number?",
        ]


async def test_no_filler_over_the_caller_or_when_nothing_is_on_its_way() -> None:
    async with await converse(DESK.replace(QUIET_AT, LATE_FILLER)) as c:
        await c.replies(1)
        # Noise: the VAD fired, speech-to-text found no words.
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(0))
        # Then a late transcript while the caller speaks again.
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.task.push_frame(UserStartedSpeakingFrame())
        await asyncio.sleep(0.6)
        assert c.listener.of(TTSFillerFrame) == []


async def test_finals_within_one_utterance_make_one_turn() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(TranscriptionFrame("I would like"))
        await c.task.push_frame(TranscriptionFrame("my order status"))
        await asyncio.sleep(0.05)
        assert len(c.listener.spoken()) == 1
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.replies(2)
        await asyncio.sleep(0.1)
        assert len(c.listener.spoken()) == 2
        assert c.call.history[1] == {"role": "user", "content": "I would like my order status"}


async def test_without_a_vad_each_final_transcript_is_a_turn() -> None:
    async with await converse(DESK) as c:
        await c.task.push_frame(TranscriptionFrame("order status"))
        assert (await c.replies(2))[1] == "Sure. What is your order number?"


async def test_interrupted_reply_keeps_only_what_was_heard() -> None:
    long_reply = DESK.replace(
        'reply: "Sure. What is your order number?"',
        'reply: "one two three four five six seven eight nine ten"',
    )
    async with await converse(long_reply, play_fraction=0.4) as c:
        await c.replies(1)
        await c.say("order status")
        await c.replies(2)
        c.task.interrupt()
        await asyncio.sleep(0.05)
        assert c.call.history[-1] == {"role": "assistant", "content": "one two three four"}


def test_intent_tools_must_be_listed() -> None:
    with pytest.raises(ConfigError, match="not in `tools`"):
        from voxpipe.bots.bot import Bot

        Bot.from_yaml(DESK.replace("tools: [hangup, transfer]", "tools: [hangup]"))


def test_regex_groups_fill_tool_arguments() -> None:
    from voxpipe.processors.llm.scripted import Intent

    intent = Intent.model_validate(
        {"regex": r"order (\w+)", "tool": {"name": "lookup", "arguments": {"id": "{1}"}}}
    )
    client = ScriptedClient([intent], "fallback")
    found, values = client.match("Order XY12 please")
    assert found is intent and values["1"] == "XY12"


async def test_a_speech_provider_error_gets_the_filler_once() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        for _ in range(3):
            await c.task.push_frame(
                ErrorFrame("google text-to-speech failed", source="tts.google", kind=SPEECH_LOST),
                UPSTREAM,
            )
        said = await c.replies(2)
        await asyncio.sleep(0.1)
        assert said[1:] == ["Sorry, I'm having a technical problem."]
        assert len(c.listener.spoken()) == 2
        assert not c.listener.of(HangupFrame)
        await c.say("order status")
        assert (await c.replies(3))[2] == "Sure. What is your order number?"


async def test_a_speech_provider_error_can_end_the_call() -> None:
    bot = DESK.replace(
        "tools: [hangup, transfer]", "tools: [hangup, transfer]\n      on_error: {then: hangup}"
    )
    async with await converse(bot) as c:
        await c.replies(1)
        await c.task.push_frame(ErrorFrame("recognition failed", source="stt.google"), UPSTREAM)
        await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
        assert c.listener.spoken()[1:] == [
            "Sorry, I'm having a technical problem.",
            "Please call again later. Goodbye.",
        ]


async def test_an_error_from_speech_to_text_before_the_llm_gets_the_filler() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        llm = c.task.processors[0]
        # Speech-to-text sits before the LLM: its error goes up to the head, never past the LLM,
        # and comes back down the chain to it.
        await llm.push_frame(ErrorFrame("recognition failed", source="stt.google"), UPSTREAM)
        said = await c.replies(2)
        assert said[1:] == ["Sorry, I'm having a technical problem."]


async def test_fatal_errors_and_own_errors_are_not_answered() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        await c.task.push_frame(ErrorFrame("no source"), UPSTREAM)
        await c.task.push_frame(ErrorFrame("mine", source="llm.scripted"), UPSTREAM)
        await asyncio.sleep(0.1)
        assert len(c.listener.spoken()) == 1


DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.parametrize(
    ("recording", "misheard", "intent"),
    [
        ("caller_order_status", "oh i would like to check the status of my order", "order_status"),
        ("caller_order_number", "my war numbers one two three four five", "order_number"),
        ("caller_operator", "please transfer me to an operator", "operator"),
        ("caller_goodbye", "no that is all they keep the bike", "goodbye"),
        ("caller_interrupt", "wait stop i have a different question", "new_question"),
    ],
)
def test_the_demo_desk_understands_the_recorded_callers(
    recording: str, misheard: str, intent: str
) -> None:
    """The demo's intents match what each caller says, as written and as pocketsphinx hears it."""
    from voxpipe.bots.bot import Bot
    from voxpipe.processors.llm.scripted import ScriptedSettings

    (llm,) = [s.settings for s in Bot.load(DEMO).steps if s.type_name == "llm"]
    assert isinstance(llm, ScriptedSettings)
    client = ScriptedClient(llm.intents, llm.fallback)
    said = (AUDIO / f"{recording}.txt").read_text(encoding="utf-8").strip()
    for text in (said, misheard):
        found, _ = client.match(text)
        assert found is not None and found.name == intent, text


def shipping_date(order_id: str) -> str:
    """A Python tool for the scripted desk."""
    return {"A12345": "tomorrow"}.get(order_id.upper(), "unknown")


LOOKUP_DESK = """
name: lookup-desk
pipeline:
  - llm:
      provider: scripted
      tools: [shipping]
      intents:
        - regex: '(?P<number>[a-z][0-9]{5})'
          tool: {name: shipping, arguments: {order_id: "{number}"}}
          after_tool: "Order {number} ships {result}."
tools:
  shipping:
    description: When an order ships.
    parameters: {order_id: {type: string}}
    python: "test_llm_scripted:shipping_date"
    say: "Let me look that up."
"""


async def test_a_tool_is_announced_and_its_result_read_back() -> None:
    async with await converse(LOOKUP_DESK) as c:
        await c.say("it is a12345")
        said = await c.replies(2)
        assert said == ["Let me look that up.", "Order a12345 ships tomorrow."]
        (tool_frame,) = c.listener.of(ToolCallFrame)
        assert (tool_frame.arguments, tool_frame.result) == ({"order_id": "a12345"}, "tomorrow")
        assert c.call.history[-1] == {
            "role": "assistant",
            "content": "Let me look that up. Order a12345 ships tomorrow.",
        }


class VoiceLosesReplies(Listener):
    """A voice that, while ``failing``, speaks the fixed lines (its standby clips) but loses every
    LLM reply at its first sentence, reporting it upstream like a TTS and making no audio."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self._losing = False
        self._reported = False

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMResponseStartFrame):
            self._losing = self.failing
            self._reported = False
        if self._losing and isinstance(frame, LLMTextFrame | LLMResponseEndFrame):
            self.frames.append(frame)
            if isinstance(frame, LLMTextFrame) and not self._reported:
                self._reported = True
                error = ErrorFrame(
                    "tts.voice failed: unavailable", source="tts.voice", kind=SPEECH_LOST
                )
                await self.push_frame(error, UPSTREAM)
            self.arrived.set()
            return
        await super().process_frame(frame, direction)


async def test_a_reply_the_voice_lost_is_not_kept_as_said() -> None:
    voice = VoiceLosesReplies()
    async with Conversation(Bot.from_yaml(DESK), voice) as c:
        await c.replies(1)
        await c.say("I want to check my order status")
        await voice.wait_for(lambda: "Sorry, I'm having a technical problem." in voice.spoken())
        await asyncio.sleep(0.05)
        assert c.call.history == [
            {"role": "assistant", "content": "Hello, ACME order desk."},
            {"role": "user", "content": "I want to check my order status"},
        ]
        voice.failing = False
        await c.say("it is A12345")
        await voice.wait_for(lambda: voice.spoken()[-1] == "Order A12345 ships tomorrow.")
        await asyncio.sleep(0.05)
        assert c.call.history[1:] == [
            {"role": "user", "content": "I want to check my order status"},
            {"role": "user", "content": "it is A12345"},
            {"role": "assistant", "content": "Order A12345 ships tomorrow."},
        ]


async def test_a_first_reply_the_voice_lost_is_forgotten_even_without_a_greeting() -> None:
    voice = VoiceLosesReplies()
    async with Conversation(Bot.from_yaml(DESK.replace("greeting:", "# greeting:")), voice) as c:
        await c.say("I want to check my order status")
        await voice.wait_for(lambda: "Sorry, I'm having a technical problem." in voice.spoken())
        await asyncio.sleep(0.05)
        assert c.call.history == [{"role": "user", "content": "I want to check my order status"}]


FILLER = "Sorry, I'm having a technical problem."
FAIL_AFTER_S = 0.1


class VoiceKeepsFailing(Listener):
    """A voice that is down: each sentence it is asked for fails ``FAIL_AFTER_S`` later, one
    after another as a TTS works, reported upstream; it never makes audio."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self._busy = asyncio.Lock()

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        self.frames.append(frame)
        self.arrived.set()
        if isinstance(frame, TTSSpeakFrame):
            self._fail(frame.text)
        elif isinstance(frame, LLMTextFrame):
            self._pending += frame.text
        elif isinstance(frame, LLMResponseEndFrame):
            self._fail(self._pending)
            self._pending = ""
        await self.push_frame(frame, direction)

    def _fail(self, text: str) -> None:
        self.asked.append(text)
        self.create_task(self._report(text))

    async def _report(self, text: str) -> None:
        async with self._busy:
            await asyncio.sleep(FAIL_AFTER_S)
            error = ErrorFrame(
                f"tts.voice failed on {text!r}", source="tts.voice", kind=SPEECH_LOST
            )
            await self.push_frame(error, UPSTREAM)


async def test_a_voice_that_keeps_failing_gets_one_filler_not_a_loop_of_them() -> None:
    voice = VoiceKeepsFailing()
    async with Conversation(Bot.from_yaml(DESK.replace("greeting:", "# greeting:")), voice) as c:
        await c.say("I want to check my order status")
        await voice.wait_for(lambda: FILLER in voice.asked)
        # The caller speaks again while the filler is still with the failing voice: its error
        # arrives in the new turn, and is the filler's own, not a new failure to answer.
        await c.say("it is A12345")
        await asyncio.sleep(8 * FAIL_AFTER_S)
        await c.say("order status")
        await asyncio.sleep(8 * FAIL_AFTER_S)
    assert voice.asked == [
        "Sure. What is your order number?",
        FILLER,
        "Order A12345 ships tomorrow.",
        "Sure. What is your order number?",
    ]
    assert c.call.history == [
        {"role": "user", "content": "I want to check my order status"},
        {"role": "user", "content": "it is A12345"},
        {"role": "user", "content": "order status"},
    ]


async def test_each_turn_that_fails_gets_its_filler_once_the_last_one_was_heard() -> None:
    async with await converse(DESK) as c:
        await c.replies(1)
        await c.task.push_frame(ErrorFrame("recognition failed", source="stt.google"), UPSTREAM)
        await c.listener.wait_for(lambda: c.listener.spoken()[1:] == [FILLER])
        await c.task.push_frame(UserStartedSpeakingFrame())
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.task.push_frame(ErrorFrame("recognition failed", source="stt.google"), UPSTREAM)
        await c.listener.wait_for(lambda: c.listener.spoken()[1:] == [FILLER, FILLER])
        await c.task.push_frame(ErrorFrame("recognition failed", source="stt.google"), UPSTREAM)
        await asyncio.sleep(0.1)
        assert c.listener.spoken()[1:] == [FILLER, FILLER]


async def test_history_keeps_the_sentences_a_real_voice_spoke_before_it_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voxpipe.processors.tts.tone import ToneTTS

    speak = ToneTTS.synthesize

    async def fails_on_the_question(self: ToneTTS, text: str) -> tuple[bytes, int]:
        if text == "What is your order number?":
            raise ConnectionError("voice unavailable")
        return await speak(self, text)

    monkeypatch.setattr(ToneTTS, "synthesize", fails_on_the_question)
    bot = DESK.replace(
        "tools:\n  transfer", "  - tts: {provider: tone, word_ms: 20}\ntools:\n  transfer"
    )
    async with await converse(bot) as c:
        await c.say("I want to check my order status")

        def stopped() -> list[str]:
            return [f.text for f in c.listener.of(TTSStoppedFrame)]

        await c.listener.wait_for(lambda: FILLER in stopped())
        assert stopped() == ["Hello, ACME order desk.", "Sure.", FILLER]
        assert c.call.history == [
            {"role": "assistant", "content": "Hello, ACME order desk."},
            {"role": "user", "content": "I want to check my order status"},
            {"role": "assistant", "content": "Sure."},
        ]


@pytest.mark.parametrize(
    ("intent", "message"),
    [
        (
            "{regex: 'order (\\d+)', reply: 'Order {number} ships tomorrow.'}",
            "reply uses {number}, which no group of `regex` fills (groups: 0, 1)",
        ),
        (
            "{keywords: [order], reply: 'Order {1}?'}",
            "reply uses {1}, which no group of `regex` fills (groups: none",
        ),
        (
            "{keywords: [order], regex: 'order (?P<n>\\d+)', reply: 'Order {n}.'}",
            "a match by `keywords` fills no groups",
        ),
    ],
)
def test_a_template_field_no_match_can_fill_is_a_load_error(intent: str, message: str) -> None:
    text = "name: t\npipeline:\n  - llm:\n      provider: scripted\n      intents:\n"
    text += f"        - {intent}\n"
    with pytest.raises(ConfigError) as caught:
        Bot.from_yaml(text, "bot.yaml")
    problem = caught.value.problems[0]
    assert message in problem.message
    assert problem.path.startswith("pipeline[0].llm")


def test_template_fields_filled_by_the_regex_load() -> None:
    text = (
        "name: t\npipeline:\n  - llm:\n      provider: scripted\n      intents:\n"
        "        - {regex: 'order (?P<n>\\d+)', reply: 'Order {n}, {1}, {0}.'}\n"
    )
    assert Bot.from_yaml(text).steps[0].type_name == "llm"


async def test_a_cough_over_the_filler_does_not_cost_the_caller_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    think = ScriptedClient.stream

    async def slow(self: ScriptedClient, *args: Any) -> AsyncIterator[Any]:
        await asyncio.sleep(0.8)  # a model that is slow to answer
        async for item in think(self, *args):
            yield item

    monkeypatch.setattr(ScriptedClient, "stream", slow)
    async with await converse(DESK.replace(QUIET_AT, LATE_FILLER)) as c:
        await c.replies(1)
        await c.say("order status please")
        await c.listener.wait_for(lambda: bool(c.listener.of(TTSFillerFrame)), timeout_s=2)
        # The caller coughs over "Just a second.": a barge-in, then no words.
        await c.task.push_frame(UserStartedSpeakingFrame())
        c.task.interrupt()
        await c.task.push_frame(TranscriptsPendingFrame(1))
        await c.task.push_frame(UserStoppedSpeakingFrame())
        await c.task.push_frame(TranscriptsPendingFrame(0))
        said = await c.replies(2, timeout_s=5)
        assert said[1] == "Sure. What is your order number?"
        assert [m["role"] for m in c.call.history] == ["assistant", "user", "assistant"]
