"""``run-pipeline call`` and ``running_bot``: a bot served in this process for the simulated
caller (``voxpipe.transports.audiosocket.caller``) to call, from the command line or a test."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxpipe.bots.bot import Bot
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Dtmf,
    Hangup,
    Say,
    Silence,
    Step,
    WaitForBot,
    load_wav,
    place_call,
    write_wav,
)

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.transports.audiosocket.server import AudioSocketServer


@contextlib.asynccontextmanager
async def running_bot(
    bot_or_path: Bot | str | os.PathLike[str], **transport_overrides: Any
) -> AsyncIterator[AudioSocketServer]:
    """Run a bot's AudioSocket server on 127.0.0.1 (a free port) in this process.

    ``transport_overrides`` replace keys of the bot's ``transport.audiosocket`` block
    (``max_calls=1``, ``keepalive_s=0.2``, ...); the pipeline's ``sample_rate`` stays the bot's.
    """
    from voxpipe.transports.audiosocket.server import AudioSocketServer
    from voxpipe.transports.audiosocket.settings import AudioSocketSettings

    if "sample_rate" in transport_overrides:
        raise ValueError("sample_rate belongs to the bot: set it in its YAML")
    bot = bot_or_path if isinstance(bot_or_path, Bot) else Bot.load(bot_or_path)
    await bot.prepare()
    fields = bot.config.transport.audiosocket.model_dump()
    fields.update(transport_overrides, listen="127.0.0.1:0")
    server = AudioSocketServer(bot, AudioSocketSettings.model_validate(fields))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.0)


# --- run-pipeline call -------------------------------------------------------------------------


def _turns(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The caller's turns, ``(say|wav, value)`` in order: ``args.turns`` as the parser gives it,
    or one turn from ``say``/``wav`` (a namespace built by hand)."""
    if hasattr(args, "turns"):
        return list(args.turns)
    single = [("say", getattr(args, "say", None)), ("wav", getattr(args, "wav", None))]
    return [(kind, str(value)) for kind, value in single if value]


def _caller_audio(args: argparse.Namespace, rate: int) -> list[bytes]:
    """The caller's turns as PCM16 at ``rate``, in the order given."""
    turns = _turns(args)
    out: list[bytes] = []
    for kind, value in turns:
        if kind == "wav":
            out.append(load_wav(value, rate))
            continue
        try:
            from voxpipe.processors.tts import offline_say  # type: ignore[attr-defined,unused-ignore]
        except ImportError as exc:
            raise RuntimeError(
                f"--say needs the offline text-to-speech ({exc}); use --wav FILE instead"
            ) from None
        pcm: bytes = offline_say(value, rate)
        out.append(pcm)
    return out


def _script(args: argparse.Namespace, turns: list[bytes], greets: bool | None) -> list[Step]:
    """Listen to a greeting first; then each turn, listening to the bot's answer after it;
    press keys and listen; hang up."""
    script: list[Step] = [WaitForBot(10.0) if greets else Silence(0.3)]
    if greets is None:  # a bot served elsewhere: listen to a greeting if one starts within 2 s
        script = [WaitForBot(10.0, start_s=2.0)]
    for pcm in turns:
        script += [Say(pcm), WaitForBot(15.0)]
    if args.dtmf:
        script += [Dtmf(args.dtmf), WaitForBot(15.0)]
    script.append(Hangup())
    return script


def _caller_words(args: argparse.Namespace) -> list[str]:
    """What the caller says in each turn: the --say text, or the transcript next to the --wav
    file (``""`` when there is none)."""
    words: list[str] = []
    for kind, value in _turns(args):
        if kind == "say":
            words.append(str(value))
            continue
        wav, said = Path(value), ""
        for name in (wav.stem, wav.stem.rsplit("_", 1)[0]):  # caller_yes_8k.wav -> caller_yes.txt
            transcript = wav.with_name(f"{name}.txt")
            if transcript.is_file():
                said = " ".join(transcript.read_text().split())
                break
        words.append(said)
    return words


def _print_timeline(result: CallResult, args: argparse.Namespace) -> None:
    print(f"call {result.call_id} at {result.rate} Hz")
    words = iter(_caller_words(args))
    for event in result.timeline:
        what = event.what
        if event.who == "caller" and what.startswith("speaks"):
            said = next(words, "")
            what = f'{what}: "{said}"' if said else what
        print(f"{event.t:8.2f} s  {event.who:<6}  {what}")
    if result.transcript:
        print("transcript:")
        for turn in result.transcript:
            who = "caller" if turn["role"] == "user" else "bot"
            print(f"  {who:<6}  {turn['content']}")
    print(f"hung up by: {result.hung_up_by}; bot audio received: {result.bot_audio_s():.2f} s")


def _dialogue(calls: list[Call]) -> list[dict[str, str]]:
    return [
        {"role": str(turn["role"]), "content": turn["content"]}
        for call in calls
        for turn in call.history
        if turn.get("role") in ("user", "assistant") and isinstance(turn.get("content"), str)
    ]


async def _call(args: argparse.Namespace) -> CallResult:
    rate = int(args.rate or 8000)
    turns = _caller_audio(args, rate)
    longest = 60.0 + 20.0 * len(turns)  # each turn: its words, the bot's answer
    if args.connect:
        host, _, port = str(args.connect).rpartition(":")
        return await place_call(
            host.strip("[]") or "127.0.0.1",
            int(port),
            _script(args, turns, None),
            rate=rate,
            max_duration_s=longest,
        )

    bot = Bot.load(args.bot)
    calls: list[Call] = []

    async def keep(call: Call) -> None:
        calls.append(call)

    try:
        # One simulated call: no need to measure the bot's capacity for max_calls: auto.
        async with running_bot(bot, max_calls=1) as server:
            server.on_call_start.append(keep)
            script = _script(args, turns, bool(bot.config.greeting))
            result = await place_call(
                "127.0.0.1", server.port, script, rate=rate, max_duration_s=longest
            )
            for _ in range(100):  # let the bot's side of the call finish its history
                if not server.calls:
                    break
                await asyncio.sleep(0.02)
    finally:
        await bot.close()  # writes what the bot still holds (its call records)
    result.transcript = _dialogue(calls)
    return result


def run_call_command(args: argparse.Namespace) -> int:
    """``run-pipeline call``: place one simulated call and print what happened."""
    try:
        if args.record:  # a place it cannot write to fails now, not after the call
            Path(args.record).open("ab").close()
        result = asyncio.run(_call(args))
        if args.record:
            write_wav(Path(args.record), result.received, result.rate)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"run-pipeline call: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        _print_timeline(result, args)
        if args.record:
            print(f"bot audio written to {args.record}")
    return 0
