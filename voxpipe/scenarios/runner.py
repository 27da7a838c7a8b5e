"""Play scenarios as simulated callers over real AudioSocket connections, and judge each step.

Each scenario is one call (``open_call``), against the bot served in this process (the default:
its calls are watched too) or one already running (``connect``). Steps run in order:

* caller steps: ``say`` (the packaged piper voice, synthesised once per text and rate), ``wav``,
  ``silence``, ``dtmf``, ``barge_in`` (waits for the bot to speak, then talks over it),
  ``hang_up``. The end of the caller's last speech (or key) is the start of the next turn.
* ``bot_says``: waits for the bot's next speech (from the start of the turn until it has been
  quiet ``QUIET_S``), transcribes what the caller heard with the offline speech-to-text
  (whisper), and matches the regex, case-insensitive, against it and, in-process, against the
  words the bot's voice played (its utterances). The turn latency is from the start of the turn
  to the bot's first audio; ``within`` bounds it.
* ``bot_silent``: no bot audio for that long. ``outcome``: waits for the end of the call and
  compares how it ended (in-process: the call's settled outcome, as the HTTP API gives it to
  the dialplan; over ``connect`` with ``api``: the same line, asked of the running bot's HTTP
  API; over ``connect`` alone: who hung up, so a transfer cannot be checked and fails).
  ``bot_stops_within``: the bot's audio stopped within that many ms of the caller's first
  voiced frame of the ``barge_in``.

A step that fails ends its scenario (the remaining steps are reported as skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxpipe.bots.call import running_bot
from voxpipe.scenarios.api import OutcomeApi
from voxpipe.scenarios.model import Scenario, Step
from voxpipe.transports.audiosocket.caller import (
    CallLine,
    Dtmf,
    Say,
    load_wav,
    open_call,
)

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot
    from voxpipe.frames import Utterance
    from voxpipe.pipelines.call import Call

# The bot's speech is over when it has been quiet this long (sentences have shorter gaps).
QUIET_S = 1.2
# Poll period of the waits, in seconds (one audio frame).
TICK_S = 0.02


# --- results -----------------------------------------------------------------------------------


@dataclass
class StepResult:
    """How one step went; ``status`` is ``passed``, ``failed``, ``done`` (a caller step) or
    ``skipped`` (after a failure)."""

    index: int
    action: str
    argument: str
    status: str
    at_s: float = 0.0
    heard: str | None = None
    said: str | None = None
    latency_ms: float | None = None
    message: str = ""

    def line(self) -> str:
        """The step as one report line."""
        mark = {"passed": "PASS", "failed": "FAIL", "done": "  ..", "skipped": "SKIP"}
        text = f"  {mark[self.status]} [{self.index + 1}] {self.action}: {self.argument}"
        details = []
        if self.heard is not None:
            details.append(f'heard "{self.heard}"')
        if self.said is not None and self.said != self.heard:
            details.append(f'bot said "{self.said}"')
        if self.latency_ms is not None:
            details.append(f"latency {self.latency_ms:.0f} ms")
        if self.message:
            details.append(self.message)
        return text + (f" -- {'; '.join(details)}" if details else "")


@dataclass
class ScenarioResult:
    """How one scenario went: its steps, the call, and how long it took."""

    name: str
    file: str
    call_id: str = ""
    steps: list[StepResult] = field(default_factory=list)
    duration_s: float = 0.0
    outcome: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.status != "failed" for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


# --- speech in and out ---------------------------------------------------------------------------


class Voice:
    """The caller's voice: the packaged piper voice, each text synthesised once per rate."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], bytes] = {}
        self._lock = threading.Lock()

    def _say(self, text: str, rate: int) -> bytes:
        with self._lock:
            pcm = self._cache.get((text, rate))
            if pcm is None:
                try:
                    from voxpipe.processors.tts.packaged import offline_say
                except ImportError as exc:  # pragma: no cover - the piper extra is missing
                    raise RuntimeError(f"`say` needs the piper voice: {exc}") from None
                pcm = self._cache[(text, rate)] = offline_say(text, rate)
            return pcm

    async def say(self, text: str, rate: int) -> bytes:
        return await asyncio.to_thread(self._say, text, rate)


class Ears:
    """What the caller heard, transcribed offline with the packaged whisper model (one decode
    at a time, in a thread)."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()

    def _decode(self, pcm: bytes, rate: int) -> str:
        with self._lock:
            if self._engine is None:
                from voxpipe.processors.stt.whisper import PACKAGED_MODEL, WhisperEngine

                engine = WhisperEngine(PACKAGED_MODEL, "int8", 1)
                engine.load()
                self._engine = engine
            text: str = self._engine.decode(
                pcm,
                rate,
                {"language": "en", "beam_size": 1, "condition_on_previous_text": False},
            )
        return " ".join(text.split())

    async def transcribe(self, pcm: bytes, rate: int) -> str:
        if not pcm:
            return ""
        return await asyncio.to_thread(self._decode, pcm, rate)


def _plain(text: str) -> str:
    """Lower case, punctuation out, spaces collapsed: how a regex is matched a second time."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def matches(regex: str, text: str) -> bool:
    """Whether ``regex`` (case-insensitive) is found in ``text`` as written or plain."""
    pattern = re.compile(regex, re.IGNORECASE)
    return bool(pattern.search(text) or pattern.search(_plain(text)))


# --- the bot's side, in-process ------------------------------------------------------------------


class BotSide:
    """The bot's call as it runs in this process: the words its voice played, by when first
    seen, and the call itself (for its outcome)."""

    def __init__(self) -> None:
        self.call: Call | None = None
        self.seen: list[tuple[float, Utterance]] = []
        self.ended = asyncio.Event()

    def poll(self, now: float) -> None:
        call = self.call
        if call is None:
            return
        known = {id(u) for _, u in self.seen}
        self.seen.extend((now, u) for u in call.speech.utterances if id(u) not in known)

    def words_since(self, t: float) -> str:
        return " ".join(
            text for seen_at, u in self.seen if seen_at >= t and (text := u.spoken_text())
        )


# --- one scenario --------------------------------------------------------------------------------


class _Player:
    """Plays one scenario on an open line and judges its steps."""

    def __init__(
        self,
        scenario: Scenario,
        base: Path,
        line: CallLine,
        voice: Voice,
        ears: Ears,
        side: BotSide | None,
        result: ScenarioResult,
        api: OutcomeApi | None = None,
    ) -> None:
        self.scenario = scenario
        self.base = base
        self.line = line
        self.voice = voice
        self.ears = ears
        self.side = side
        self.result = result
        self.api = api
        self.rate = scenario.rate
        self.turn_t = 0.0  # the start of the current turn (end of the caller's last input)
        self.turn_offset = 0  # bytes of bot audio received at that moment
        self.side_t = time.monotonic()  # the same moment on the bot side's clock
        # Whether the turn began with the caller's input or the call's start (then its
        # latency is a turn latency), rather than with the bot's own last speech.
        self.caller_turn = True
        self.barge_t: float | None = None  # the caller's first voiced frame of a barge_in
        self.hung_up = False

    def _new_turn(self, side_t: float) -> None:
        """The caller's input (begun at ``side_t`` on the bot side's clock) is over."""
        line = self.line
        caller = line.result.caller_segments
        self.turn_t = max(line.now() if not caller else caller[-1][1], self.turn_t)
        self.turn_offset = len(line.received)
        self.side_t = side_t  # the bot's words of the answer come after the input began
        self.caller_turn = True

    def _timeout(self, step: Step) -> float:
        return step.timeout_s or self.scenario.timeout_s

    async def play(self) -> None:
        steps = self.scenario.steps
        for index, step in enumerate(steps):
            action = step.action
            record = StepResult(index, action, _argument(step), "done", round(self.line.now(), 2))
            self.result.steps.append(record)
            try:
                await self._run(step, record)
            except (OSError, RuntimeError, ValueError) as exc:
                record.status, record.message = "failed", str(exc)
            if record.status == "failed":
                for later, rest in enumerate(steps[index + 1 :], start=index + 1):
                    self.result.steps.append(
                        StepResult(later, rest.action, _argument(rest), "skipped")
                    )
                return

    async def _run(self, step: Step, record: StepResult) -> None:
        line = self.line
        gone = line.bot_gone.is_set()
        began = time.monotonic()
        if step.say is not None or step.wav is not None:
            if step.say is not None:
                pcm = await self.voice.say(step.say, self.rate)
            else:
                pcm = load_wav(self._path(step.wav or ""), self.rate)
            if gone or self.hung_up:
                return self._fail(record, "the call is over: nobody to speak to")
            await line.run_step(Say(pcm))
            self._new_turn(began)
        elif step.silence is not None:
            await self._sleep(step.silence)
        elif step.dtmf is not None:
            if gone or self.hung_up:
                return self._fail(record, "the call is over: no keys to press")
            keys, offset = Dtmf(step.dtmf), len(line.received)
            await line.run_step(keys)
            self.turn_t = line.now() - keys.gap_s  # the last key was pressed then
            # A reply may begin before the last key's gap is over: hear it all.
            self.turn_offset = offset
            self.side_t = began
            self.caller_turn = True
        elif step.hang_up:
            if not gone:
                self.hung_up = line.hung_up = True
                line.note("caller", "hung up")
                line.writer.close()
        elif step.barge_in is not None:
            await self._barge_in(step, record)
        elif step.bot_says is not None or step.action == "within":
            await self._bot_says(step, record)
        elif step.bot_silent is not None:
            await self._bot_silent(step.bot_silent, record)
        elif step.outcome is not None:
            await self._outcome(step, record)
        elif step.bot_stops_within is not None:
            self._stops_within(step.bot_stops_within, record)
        return None

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.base / path

    def _fail(self, record: StepResult, message: str) -> None:
        record.status, record.message = "failed", message

    def _pass(self, record: StepResult) -> None:
        record.status = "passed"

    async def _sleep(self, seconds: float) -> None:
        deadline = self.line.now() + seconds
        while self.line.now() < deadline and not self.line.bot_gone.is_set():
            self._poll()
            await asyncio.sleep(TICK_S)

    def _poll(self) -> None:
        if self.side is not None:
            self.side.poll(time.monotonic())

    def _segments_since(self, t: float) -> list[tuple[float, float]]:
        return [s for s in self.line.result.bot_segments if s[1] > t + 0.001]

    async def _wait_reply(self, wait_s: float) -> list[tuple[float, float]]:
        """The bot's speech of this turn: wait until it has begun and then been quiet QUIET_S
        (or the bot hung up, or ``wait_s``)."""
        line = self.line
        deadline = line.now() + wait_s
        while line.now() < deadline and not line.bot_gone.is_set():
            self._poll()
            if self._segments_since(self.turn_t) and line.now() - line.last_voice >= QUIET_S:
                break
            await asyncio.sleep(TICK_S)
        self._poll()
        return self._segments_since(self.turn_t)

    async def _bot_says(self, step: Step, record: StepResult) -> None:
        if self.hung_up:
            return self._fail(record, "the caller has hung up")
        turn_start, caller_turn = self.turn_t, self.caller_turn
        segments = await self._wait_reply(self._timeout(step))
        heard_pcm = self.line.received[self.turn_offset :]
        said = self.side.words_since(self.side_t) if self.side is not None else None
        self.turn_offset = len(self.line.received)
        self.turn_t = self.line.now()
        self.side_t = time.monotonic()
        self.caller_turn = False
        if not segments:
            gone = " (the bot hung up)" if self.line.bot_gone.is_set() else ""
            return self._fail(
                record, f"the bot said nothing within {self._timeout(step):g} s{gone}"
            )
        latency = max(0.0, segments[0][0] - turn_start)
        if caller_turn:
            record.latency_ms = round(latency * 1000)
        record.heard = await self.ears.transcribe(bytes(heard_pcm), self.rate)
        record.said = said
        problems = []
        if step.bot_says is not None:
            if not matches(step.bot_says, record.heard):
                problems.append(f"/{step.bot_says}/ not in what the caller heard")
            if said is not None and not matches(step.bot_says, said):
                problems.append(f"/{step.bot_says}/ not in what the bot said")
        if step.within is not None and not caller_turn:
            problems.append("`within` needs a turn begun by the caller (or the call's start)")
        elif step.within is not None and latency > step.within:
            problems.append(f"latency {latency:.2f} s over the {step.within:g} s bound")
        if problems:
            return self._fail(record, "; ".join(problems))
        return self._pass(record)

    async def _bot_silent(self, seconds: float, record: StepResult) -> None:
        start = self.line.now()
        await self._sleep(seconds)
        spoke = self._segments_since(start)
        if spoke:
            first = spoke[0][0] - start
            return self._fail(record, f"the bot spoke {max(first, 0.0):.2f} s into the silence")
        if self.line.bot_gone.is_set() and self.line.now() - start < seconds - TICK_S:
            return self._fail(record, "the bot hung up during the silence")
        return self._pass(record)

    async def _barge_in(self, step: Step, record: StepResult) -> None:
        line = self.line
        pcm = await self.voice.say(step.barge_in or "", self.rate)
        deadline = line.now() + self._timeout(step)
        while line.now() < deadline and not line.bot_gone.is_set():
            self._poll()
            if line.now() - line.last_voice < 2 * TICK_S:
                break
            await asyncio.sleep(TICK_S / 2)
        else:
            return self._fail(record, "the bot never spoke to be interrupted")
        start, began = line.now(), time.monotonic()
        await line.run_step(Say(pcm))
        voiced = [s for s in line.result.caller_segments if s[1] > start]
        self.barge_t = voiced[0][0] if voiced else start
        self._new_turn(began)
        if step.bot_stops_within is not None:
            self._stops_within(step.bot_stops_within, record)
        return None

    def _stops_within(self, limit_ms: int, record: StepResult) -> None:
        if self.barge_t is None:
            return self._fail(record, "no barge_in before it")
        t = self.barge_t
        ongoing = [s for s in self.line.result.bot_segments if s[0] <= t < s[1] + 0.05]
        if not ongoing:
            return self._fail(record, "the bot was not speaking when the caller began")
        stopped = ongoing[-1][1]
        record.latency_ms = round(max(0.0, stopped - t) * 1000)
        if (stopped - t) * 1000 > limit_ms:
            return self._fail(
                record, f"the bot went on {record.latency_ms} ms over the caller (bound {limit_ms})"
            )
        return self._pass(record)

    async def _outcome(self, step: Step, record: StepResult) -> None:
        expected = step.outcome or ""
        line = self.line
        deadline = line.now() + self._timeout(step)
        side = self.side
        while not self.hung_up and not line.bot_gone.is_set() and line.now() < deadline:
            self._poll()
            await asyncio.sleep(TICK_S)
        if not self.hung_up and not line.bot_gone.is_set():
            return self._fail(record, f"the call was still going after {self._timeout(step):g} s")
        if side is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(side.ended.wait(), 5.0)
            from voxpipe.sessions.outcomes import outcome_of

            actual = (outcome_of(side.call) if side.call is not None else None) or "error"
        elif self.api is not None:
            actual = await self.api.outcome(self.result.call_id)
        else:
            actual = "caller" if self.hung_up else "hangup"
        self.result.outcome = actual
        record.heard = actual
        guessed = side is None and self.api is None
        wanted = expected if expected.count(",") != 2 else expected + ","
        if guessed and expected.startswith("transfer,"):
            return self._fail(
                record,
                "not checkable: over --connect a transfer cannot be told from a hang-up "
                "(give --api URL, the bot's HTTP API, or serve it in-process)",
            )
        if actual == expected or (expected.startswith("transfer,") and actual.startswith(wanted)):
            if guessed and actual == "hangup":
                record.message = "the bot closed the line (a hang-up, or a transfer: --api tells)"
            return self._pass(record)
        return self._fail(record, f"expected {expected}, the call ended with {actual}")


def _argument(step: Step) -> str:
    action = step.action
    value = step.within if action == "within" else getattr(step, action)
    text = "" if value is True else str(value)
    if step.within is not None and action == "bot_says":
        text += f" (within {step.within:g} s)"
    if step.bot_stops_within is not None and action == "barge_in":
        text += f" (bot stops within {step.bot_stops_within} ms)"
    return text


# --- many scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A scenario to play, with the file it came from."""

    scenario: Scenario
    file: str


async def play_scenario(
    job: Job,
    host: str,
    port: int,
    voice: Voice,
    ears: Ears,
    watch: Callable[[str], BotSide] | None = None,
    api: OutcomeApi | None = None,
) -> ScenarioResult:
    """Place one call and play one scenario on it."""
    import uuid

    scenario = job.scenario
    result = ScenarioResult(scenario.name, job.file, call_id=str(uuid.uuid4()))
    side = watch(result.call_id) if watch is not None else None
    started = time.monotonic()
    try:
        async with asyncio.timeout(scenario.max_duration_s):
            async with open_call(host, port, rate=scenario.rate, call_id=result.call_id) as line:
                base = Path(job.file).parent
                player = _Player(scenario, base, line, voice, ears, side, result, api)
                await player.play()
    except TimeoutError:
        result.error = f"the scenario took more than {scenario.max_duration_s:g} s"
    except OSError as exc:
        result.error = f"cannot call the bot: {exc}"
    result.duration_s = round(time.monotonic() - started, 2)
    return result


async def run_jobs(
    jobs: list[Job],
    *,
    bot: Bot | None = None,
    connect: tuple[str, int] | None = None,
    concurrency: int = 1,
    on_done: Callable[[ScenarioResult], Awaitable[None] | None] | None = None,
    api: OutcomeApi | None = None,
) -> list[ScenarioResult]:
    """Play every scenario, ``concurrency`` calls at a time, against ``bot`` served in this
    process or the bot at ``connect`` (whose HTTP API ``api``, if given, tells how its calls
    ended); results in the order of ``jobs``."""
    voice, ears = Voice(), Ears()
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(job: Job, host: str, port: int, watch: Any) -> ScenarioResult:
        async with gate:
            result = await play_scenario(job, host, port, voice, ears, watch, api)
        if on_done is not None:
            done = on_done(result)
            if done is not None:
                await done
        return result

    if connect is not None:
        host, port = connect
        return list(await asyncio.gather(*(one(job, host, port, None) for job in jobs)))
    if bot is None:
        raise ValueError("give a bot to serve or an address to connect to")
    sides: dict[str, BotSide] = {}

    def watch(call_id: str) -> BotSide:
        return sides.setdefault(call_id, BotSide())

    async def started(call: Call) -> None:
        watch(call.call_id).call = call

    from voxpipe import events

    class Ended(events.Observer):
        def call_ended(self, call: Call, reason: str) -> None:
            side = sides.get(call.call_id)
            if side is not None:
                side.ended.set()

    observer = Ended()
    events.subscribe(observer)
    try:
        async with running_bot(bot, max_calls=max(1, concurrency)) as server:
            server.on_call_start.append(started)
            return list(
                await asyncio.gather(*(one(job, "127.0.0.1", server.port, watch) for job in jobs))
            )
    finally:
        events.unsubscribe(observer)


def iter_lines(result: ScenarioResult) -> Iterator[str]:
    """The report of one scenario: a head line, then one line per step."""
    verdict = "PASS" if result.passed else "FAIL"
    took = f"{result.duration_s:.1f} s, call {result.call_id}"
    yield f"{verdict} {result.file}: {result.name} ({took})"
    for step in result.steps:
        yield step.line()
    if result.error:
        yield f"  FAIL {result.error}"
