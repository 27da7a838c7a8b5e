"""The ``pipecat`` step: loading (the class's signature checks the arguments, with the bot
file's positions), secrets, and a Pipecat processor in the middle of a voxpipe chain (frames
translated both ways, order kept, errors and interruptions passed on)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import Recorder, RunningCalls

from voxpipe.bots.bot import Bot
from voxpipe.bots.config import ConfigError, dump_settings
from voxpipe.frames import (
    DTMFFrame,
    EndFrame,
    ErrorFrame,
    InputAudioFrame,
    InterruptionFrame,
    ToolCallFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)

STT = "pipecat.services.openai.stt.OpenAISTTService"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        Bot.from_yaml(text, file="bot.yaml")
    return [str(p) for p in error.value.problems]


def one_step(block: str) -> str:
    return f"name: x\npipeline:\n  - pipecat:\n{block}"


def test_an_unknown_argument_is_reported_at_its_line_with_a_did_you_mean() -> None:
    found = problems(
        one_step(
            f"      class: {STT}\n      args:\n        api_key: k\n        bse_url: http://x\n"
        )
    )
    assert found == [
        "bot.yaml:7:18: pipeline[0].pipecat.args.bse_url: OpenAISTTService takes no argument "
        "'bse_url' (did you mean 'base_url'?)"
    ]


def test_arguments_are_checked_against_their_types_enums_and_settings() -> None:
    found = problems(
        one_step(
            f"      class: {STT}\n"
            "      args:\n"
            "        language: klingon\n"
            "        push_empty_transcripts: maybe\n"
            "        settings: {modle: whisper-1}\n"
        )
    )
    assert len(found) == 3
    assert found[0].startswith("bot.yaml:6:19: pipeline[0].pipecat.args.language: expected one of:")
    assert "(got 'klingon')" in found[0]
    assert found[1].startswith("bot.yaml:7:33: pipeline[0].pipecat.args.push_empty_transcripts:")
    assert "(got 'maybe')" in found[1]
    assert "OpenAISTTSettings has no field 'modle' (did you mean 'model'?)" in found[2]


def test_the_class_must_exist_and_fit_its_role() -> None:
    assert problems(one_step("      class: pipecat.services.nowhere.Nothing\n"))[0].startswith(
        "bot.yaml:4:14: pipeline[0].pipecat.class: cannot import pipecat.services.nowhere"
    )
    assert problems(one_step("      class: pipecat.services.openai.stt.Nothing\n")) == [
        "bot.yaml:4:14: pipeline[0].pipecat.class: pipecat.services.openai.stt has no class "
        "'Nothing'"
    ]
    assert problems(one_step(f"      class: {STT}\n      role: tts\n")) == [
        "bot.yaml:5:13: pipeline[0].pipecat.role: OpenAISTTService is not a Pipecat TTSService"
    ]
    assert problems(one_step("      clas: x\n")) == [
        "bot.yaml:4:7: pipeline[0].pipecat.class: required key is missing",
        "bot.yaml:4:7: pipeline[0].pipecat.clas: unknown key 'clas' (did you mean 'class'?)",
    ]


def test_the_role_comes_from_the_class_and_secret_arguments_are_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_KEY_FOR_TEST", "sk-very-secret")
    bot = Bot.from_yaml(
        one_step(
            f"      class: {STT}\n"
            "      args: {api_key: '${OPENAI_KEY_FOR_TEST}', language: de, "
            "settings: {model: whisper-1}}\n"
        )
    )
    settings: Any = bot.steps[0].settings
    assert settings.role == "stt"
    assert "sk-very-secret" not in str(dump_settings(settings))
    assert "sk-very-secret" not in repr(settings)
    service = settings.build()
    assert service._settings.model == "whisper-1"
    assert service._settings.language == "de"


# --- a Pipecat processor in the chain ------------------------------------------------------------


@pytest.fixture
async def chain() -> Any:
    async with RunningCalls() as calls:

        async def start() -> tuple[Any, Recorder, Recorder]:
            bot = Bot.from_yaml(
                one_step("      class: fakes.pipecat_processors.Shout\n      args: {times: 2}\n")
            )
            chain = await calls.chain(bot)
            return chain.task, chain.up, chain.down

        yield start


async def test_frames_go_through_the_pipecat_processor_in_order(chain: Any) -> None:
    task, _up, down = await chain()
    assert task.processors[1].name == "pipecat.Shout"
    audio = InputAudioFrame(b"\x01\x00" * 160, 8000)
    keyed = DTMFFrame("5")
    tool = ToolCallFrame("lookup_order", {"order_id": "A1"}, "ships")
    await task.push_frame(audio)
    task.queue_frame(TranscriptionFrame("hello"))
    task.queue_frame(tool)
    task.queue_frame(keyed)
    task.queue_frame(DTMFFrame("D"))  # no Pipecat keypad entry: it travels as it is
    await down.wait_for(lambda: len(down.of(DTMFFrame)) == 2)
    assert down.of(InputAudioFrame)[0].audio == audio.audio
    assert [f.text for f in down.of(TranscriptionFrame)] == ["HELLO!!"]
    assert down.of(ToolCallFrame) == [tool] and down.of(ToolCallFrame)[0] is tool
    assert [f.digit for f in down.of(DTMFFrame)] == ["5", "D"]
    kinds = [type(f) for f in down.frames if isinstance(f, TranscriptionFrame | ToolCallFrame)]
    assert kinds == [TranscriptionFrame, ToolCallFrame]


async def test_the_vad_events_come_back_once(chain: Any) -> None:
    task, _up, down = await chain()
    await task.push_frame(UserStartedSpeakingFrame())
    task.queue_frame(TranscriptionFrame("x"))
    await down.wait_for(lambda: bool(down.of(TranscriptionFrame)))
    assert len(down.of(UserStartedSpeakingFrame)) == 1


async def test_a_pipecat_error_and_interruption_reach_voxpipe(chain: Any) -> None:
    task, up, down = await chain()
    task.queue_frame(TranscriptionFrame("fail"))
    await up.wait_for(lambda: bool(up.of(ErrorFrame)))
    (error,) = up.of(ErrorFrame)
    assert not error.fatal and error.source == "pipecat.Shout"
    assert "the caller said fail" in error.error
    task.queue_frame(TranscriptionFrame("stop"))
    await down.wait_for(lambda: bool(down.of(InterruptionFrame)))
    assert not task.done


async def test_the_end_of_the_call_passes_through_the_processor(chain: Any) -> None:
    task, _up, down = await chain()
    task.queue_frame(TranscriptionFrame("bye"))
    task.queue_frame(EndFrame())
    await down.wait_for(lambda: bool(down.of(EndFrame)))
    kinds = [type(f) for f in down.frames if isinstance(f, TranscriptionFrame | EndFrame)]
    assert kinds == [TranscriptionFrame, EndFrame]
