"""What every LLM provider shares: turn-taking, the greeting, streaming, tools and failures.

A provider only implements ``LLMClient.stream``: given the dialogue and this reply's tool
rounds, yield text chunks and complete ``ToolCall``s (an ``SDKClient`` over an official SDK
implements ``request`` and ``read`` instead, and always closes the response). ``LLMProcessor``
does the rest:

* Turns: final transcripts are collected; a turn ends once the caller has stopped speaking
  (the VAD's stop) and speech-to-text has delivered the transcripts of everything they said
  (``TranscriptsPendingFrame`` counts what is still being decoded). However late a transcript
  comes, it ends its turn, or joins the next one if the caller is speaking again: the caller's
  words are never dropped. Without a VAD, each final is a turn.
* Late replies: when nothing of the answer has reached the caller ``filler_after_ms`` after
  they stopped speaking (the transcript, the model or the voice is queued on a busy machine),
  the bot says ``filler`` ("One moment."), from the voice's phrase cache, at once: at most
  once per turn, never while the caller or the bot is speaking.
* The reply streams downstream as ``LLMResponseStartFrame``, ``LLMTextFrame``s and
  ``LLMResponseEndFrame`` per round, in a call-owned task that an interruption cancels at once.
* History: the user's text once per turn; the assistant's text as the caller heard it. Text-to-
  speech records each ``Utterance`` it sends in ``call.speech``, the ledger of the reply being
  spoken; on an interruption the reply's history entry becomes the words played.
  When text-to-speech reports a lost sentence (an ``ErrorFrame`` of kind ``SPEECH_LOST``),
  it drops the rest of that reply: the entry then keeps only the sentences it made audio of,
  and leaves the history if there were none. Each tool round of a reply is kept as a ``tool``
  entry (see ``Call``) just before the reply's text, so later turns show what it looked up.
* Keys: the caller's keys are input too, written ``[pressed 1]`` (``keys_text``): each key
  pressed, or, with a ``dtmf`` step before the LLM, each input it gathered (``[pressed 12345]``).
  They join the caller's turn like a transcript (the ``dtmf`` call record turn is the
  conversation tracker's, not a ``caller`` one).
* Tools run between rounds (at most ``max_tool_rounds``); a hangup or transfer ends the reply.
* Failures: each request has an idle timeout and is retried with exponential backoff while
  nothing was spoken; then the bot speaks ``on_error.say`` and retries the turn once or says
  goodbye and hangs up. A non-fatal ``ErrorFrame`` from speech-to-text or text-to-speech is
  answered the same way (``retry`` then means: listen again). The caller hears at most one
  filler per turn, and errors that arrive while the filler or goodbye is still with the voice
  (not yet played, and no later speech made audio) are its own echo and not answered: a voice
  that keeps failing does not make the bot loop filler after filler.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from voxpipe import events
from voxpipe.events import Turn
from voxpipe.frames import (
    SPEECH_LOST,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    Direction,
    DTMFFrame,
    DTMFInputFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    HangupFrame,
    InputAudioFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    ToolCallFrame,
    TranscriptionFrame,
    TranscriptsPendingFrame,
    TTSFillerFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.processors.llm.client import LLMClient, ProviderFailed, ToolRound
from voxpipe.processors.llm.speech import Speech
from voxpipe.tools.toolbox import Toolbox, ToolCall

if TYPE_CHECKING:
    from voxpipe.processors.llm.base import LLMBaseSettings

log = logging.getLogger("voxpipe.llm")


def keys_text(digits: str) -> str:
    """How the caller's keys read in the dialogue: ``[pressed 1]``."""
    return f"[pressed {digits}]"


KEYS = re.compile(r"^\[pressed ([0-9*#A-D]+)\]$")


class LLMProcessor(FrameProcessor):
    """Turns final transcripts into streamed replies, with tools and failure handling."""

    __slots__ = (
        "_again",
        "_awaiting",
        "_bot_speaking",
        "_filler_timer",
        "_filler_turn",
        "_late_turn",
        "_reply",
        "_speech",
        "_speeches",
        "_standby",
        "_stt_pending",
        "_texts",
        "_tts_seen",
        "_turns",
        "_unanswered",
        "_user_speaking",
        "_vad_seen",
        "client",
        "greeting",
        "settings",
        "toolbox",
    )

    def __init__(
        self,
        settings: LLMBaseSettings,
        client: LLMClient,
        toolbox: Toolbox,
        *,
        greeting: str | None = None,
    ) -> None:
        super().__init__(name=f"llm.{client.provider}")
        self.settings = settings
        self.client = client
        self.toolbox = toolbox
        self.greeting = greeting
        self._texts: list[str] = []
        self._user_speaking = False
        self._vad_seen = False
        self._stt_pending = 0
        self._unanswered = False
        self._bot_speaking = False
        self._awaiting = False
        self._filler_timer: asyncio.TimerHandle | None = None
        self._late_turn = -1
        self._reply: asyncio.Task[Any] | None = None
        self._again = False
        self._speech: Speech | None = None
        self._tts_seen = False
        self._speeches = 0
        self._standby: Speech | None = None
        self._turns = 0
        self._filler_turn = -1

    # --- frames ------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        await self.push_frame(frame, direction)
        if type(frame) is InputAudioFrame:
            return
        if isinstance(frame, TranscriptionFrame):
            self._on_final(frame.text)
        elif isinstance(frame, DTMFInputFrame) or (
            isinstance(frame, DTMFFrame) and not frame.collected
        ):
            digits = frame.digits if isinstance(frame, DTMFInputFrame) else frame.digit
            self._on_keys(digits)
        elif isinstance(frame, TranscriptsPendingFrame):
            self._stt_pending = frame.count
            self._maybe_end_turn()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._vad_seen = True
            self._user_speaking = True
            self._awaiting = False  # what is owed now is the answer to what they are saying
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._vad_seen = True
            self._user_speaking = False
            self._turns += 1
            self._arm_filler()
            self._maybe_end_turn()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._awaiting = False
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, StartFrame) and self.greeting:
            speech = self._begin_speech()
            speech.add(self.greeting)
            await self.push_frame(TTSSpeakFrame(self.greeting))
        elif isinstance(frame, InterruptionFrame):
            self._settle()
        elif isinstance(frame, ErrorFrame):
            self._on_error_frame(frame)
        elif isinstance(frame, EndFrame | CancelFrame | HangupFrame):
            self._cancel_reply()
            self._disarm_filler()

    def interrupt(self) -> None:
        speech = self._speech
        self._cancel_reply()
        if speech is not None and speech.answers and not speech.heard():
            # Cut in before a word of the answer (a cough over the filler): still owed.
            self._unanswered = True
        self._settle()

    async def cancel(self) -> None:
        self._cancel_reply()
        self._disarm_filler()

    async def stop(self) -> None:
        self._disarm_filler()

    # --- turns -------------------------------------------------------------------------------

    def _on_final(self, text: str) -> None:
        text = text.strip()
        if text:
            self._texts.append(text)
            self._maybe_end_turn()

    def _on_keys(self, digits: str) -> None:
        self._texts.append(keys_text(digits))
        self._maybe_end_turn()

    def _maybe_end_turn(self) -> None:
        """End the caller's turn once they stopped speaking and every transcript is in."""
        if self._user_speaking or self._stt_pending > 0:
            return
        if self._texts or self._unanswered:
            self._end_turn()

    def _end_turn(self) -> None:
        if self._texts:
            text = " ".join(self._texts)
            spoken = " ".join(t for t in self._texts if not KEYS.fullmatch(t))
            self._texts.clear()
            self._turns += 1
            self.call.history.append({"role": "user", "content": text})
            if spoken:  # keys are the tracker's ``dtmf`` turns in the call records
                events.emit.turn(self.call, Turn("caller", spoken))
        self._unanswered = False
        self._awaiting = True
        if not self._vad_seen:
            self._arm_filler()
        if self._reply is not None and not self._reply.done():
            self._again = True
            return
        self._reply = self.create_task(self._respond(), name=f"{self.name}.reply")

    def _cancel_reply(self) -> None:
        # A turn that was waiting for the cancelled reply to finish is still owed an answer:
        # the caller's next stop gives it one, even if nothing new is said.
        self._unanswered = self._unanswered or self._again
        self._again = False
        self._awaiting = False
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        self._reply = None

    # --- late replies ------------------------------------------------------------------------

    def _arm_filler(self) -> None:
        """Start the wait after which a reply that has not begun playing gets the filler."""
        self._disarm_filler()
        after_ms = self.settings.filler_after_ms
        if after_ms is not None and self.settings.filler.strip():
            loop = asyncio.get_running_loop()
            self._filler_timer = loop.call_later(after_ms / 1000, self._filler_due)

    def _disarm_filler(self) -> None:
        if self._filler_timer is not None:
            self._filler_timer.cancel()
            self._filler_timer = None

    def _filler_due(self) -> None:
        self._filler_timer = None
        replying = self._reply is not None and not self._reply.done()
        coming = self._awaiting or replying or self._texts or self._stt_pending > 0
        if not coming or self._user_speaking or self._bot_speaking:
            return
        if self._late_turn == self._turns or self._filler_turn == self._turns:
            return  # this turn had its filler (or the on_error one) already
        self._late_turn = self._turns
        self.call.log.info("the reply is late: saying %r", self.settings.filler)
        events.emit.reply_late(self.call)
        self.create_task(self.push_frame(TTSFillerFrame(self.settings.filler)), name="filler")

    # --- speech and history ------------------------------------------------------------------

    def _begin_speech(self, record: bool = True) -> Speech:
        """Start a stretch of bot speech; text-to-speech appends its utterances to our list."""
        self._tts_seen = self._tts_seen or bool(self._speech and self._speech.utterances)
        self._speeches += 1
        speech = Speech({"role": "assistant", "content": ""}, seq=self._speeches)
        self.call.speech.begin(speech.utterances)
        if record:
            self.call.history.append(speech.entry)
            self._speech = speech
        return speech

    def _settle(self) -> None:
        speech = self._speech
        if speech is None:
            return
        if speech.utterances or self._tts_seen:
            speech.settle()
        if not speech.entry["content"]:
            self._forget(speech)
        self._speech = None

    def _forget(self, speech: Speech) -> None:
        """Take a stretch of speech the caller never heard out of the history."""
        history = self.call.history
        for i, message in enumerate(history):
            if message is speech.entry:
                del history[i]
                return

    def _context(self, speech: Speech) -> list[dict[str, Any]]:
        """The dialogue for the model: every message but the reply being generated (its tool
        rounds go to the client as ``rounds``)."""
        own = {id(speech.entry), *map(id, speech.tools)}
        return [
            m
            for m in self.call.history
            if id(m) not in own and (m.get("content") or m.get("calls"))
        ]

    def _record_tools(self, speech: Speech, tool_round: ToolRound) -> None:
        """Keep a tool round in the history, just before the text of the reply it belongs to."""
        entry = tool_round.message()
        speech.tools.append(entry)
        history = self.call.history
        index = next((i for i, m in enumerate(history) if m is speech.entry), len(history))
        history.insert(index, entry)

    # --- replies -----------------------------------------------------------------------------

    async def _respond(self) -> None:
        """Answer the latest turn, and any turn that ended while answering."""
        while True:
            self._again = False
            self._awaiting = True
            await self._answer(retry_allowed=self.settings.on_error.then == "retry")
            if not self._again:
                return

    async def _answer(self, *, retry_allowed: bool) -> None:
        speech = self._begin_speech()
        speech.answers = True
        rounds: list[ToolRound] = []
        try:
            for _ in range(self.settings.max_tool_rounds + 1):
                text, calls = await self._generate(speech, rounds)
                if text:
                    self.call.log.info("bot replies: %s", text)
                if not calls:
                    return
                results: list[str] = []
                for tool_call in calls:
                    announcement = self.toolbox.announcement(tool_call.name)
                    if announcement:
                        await self._say_in_reply(speech, announcement)
                    outcome = await self.toolbox.run(tool_call, self.call.caller)
                    arguments = outcome.arguments or tool_call.arguments
                    results.append(outcome.result)
                    self.call.log.info(
                        "tool %s(%s) -> %.200s", tool_call.name, arguments, outcome.result
                    )
                    await self.push_frame(
                        ToolCallFrame(
                            tool_call.name,
                            arguments,
                            outcome.result,
                            duration_ms=outcome.duration_ms,
                            error=outcome.error,
                        )
                    )
                    if outcome.say:
                        await self._say_in_reply(speech, outcome.say)
                    if outcome.frame is not None:
                        self._record_tools(speech, ToolRound(text, calls[: len(results)], results))
                        await self.push_frame(outcome.frame)
                        return
                rounds.append(ToolRound(text, calls, results))
                self._record_tools(speech, rounds[-1])
            self.call.log.warning("the model kept calling tools; reply cut after the cap")
        except ProviderFailed as exc:
            self.call.log.warning("%s failed: %s", self.client.provider, exc)
            events.emit.error(self.call, "provider")
            if not speech.entry["content"]:
                self._forget(speech)
            if self._claim_filler():
                await self._speak_filler()
            if retry_allowed:
                await self._answer(retry_allowed=False)
            else:
                await self._goodbye()

    async def _say_in_reply(self, speech: Speech, text: str) -> None:
        """Speak a fixed line as part of a reply (a tool's announcement or goodbye)."""
        speech.add((" " if speech.entry["content"] else "") + text)
        await self.push_frame(TTSSpeakFrame(text))

    async def _generate(
        self, speech: Speech, rounds: list[ToolRound]
    ) -> tuple[str, list[ToolCall]]:
        """One model request with retries; streams its text downstream as it arrives."""
        attempt = 0
        while True:
            spoken: list[str] = []
            try:
                calls = await self._stream(speech, rounds, spoken)
                return "".join(spoken), calls
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if spoken:
                    await self.push_frame(LLMResponseEndFrame())
                if spoken or attempt >= self.settings.retries:
                    raise ProviderFailed(f"{type(exc).__name__}: {exc}") from exc
                delay = self.settings.backoff_s * 2**attempt
                attempt += 1
                self.call.log.info("%s request failed (%r); retry %d", self.name, exc, attempt)
                await asyncio.sleep(delay)

    async def _stream(
        self, speech: Speech, rounds: list[ToolRound], spoken: list[str]
    ) -> list[ToolCall]:
        calls: list[ToolCall] = []
        started = time.perf_counter()
        first = True
        stream = self.client.stream(self._context(speech), rounds, self.toolbox.specs)
        timeout_s = self.settings.timeout_s
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                async for item in stream:
                    if first:
                        first = False
                        events.emit.provider_ttfb(
                            self.call, "llm", self.client.provider, time.perf_counter() - started
                        )
                    deadline.reschedule(loop.time() + timeout_s)
                    if isinstance(item, ToolCall):
                        calls.append(item)
                    elif item:
                        if not spoken:
                            if speech.entry["content"][-1:].strip():
                                speech.add(" ")  # a new round's text starts a new sentence
                            await self.push_frame(LLMResponseStartFrame())
                        spoken.append(item)
                        speech.add(item)
                        await self.push_frame(LLMTextFrame(item))
        finally:
            await _close(stream)
        if spoken:
            await self.push_frame(LLMResponseEndFrame())
        return calls

    # --- failures ----------------------------------------------------------------------------

    def _on_error_frame(self, frame: ErrorFrame) -> None:
        if frame.fatal or not frame.source or frame.source == self.name:
            return
        if frame.kind == SPEECH_LOST:
            self._lose_speech()
        if self._standby_pending() or not self._claim_filler():
            return
        self.create_task(self._recover(frame), name=f"{self.name}.recover")

    def _claim_filler(self) -> bool:
        """Whether the filler may be spoken now: once per turn of the caller, at most."""
        if self._filler_turn == self._turns:
            return False
        self._filler_turn = self._turns
        return True

    def _standby_pending(self) -> bool:
        """Whether the last filler or goodbye is still with the voice: not all of it played and
        no later speech made audio (text-to-speech works in order). An error now is likely its
        own failure, which another filler would only repeat."""
        standby = self._standby
        if standby is None:
            return False
        utterances = standby.utterances
        played = bool(utterances) and all(u.finished for u in utterances)
        later = self._speech
        moved_on = later is not None and later.seq > standby.seq and bool(later.utterances)
        return not (played or moved_on)

    def _lose_speech(self) -> None:
        """Text-to-speech could not speak part of a speech: the history keeps only what it
        turned into audio, and nothing when that is nothing. The first failure while the filler
        or goodbye is pending with no audio is its own (the voice works in order); any other is
        the current speech's."""
        self._tts_seen = True
        standby = self._standby
        if standby is not None and not standby.lost and not standby.utterances:
            speech = standby if self._standby_pending() else self._speech
        else:
            speech = self._speech
        if speech is None:
            return
        speech.lose()
        if not speech.entry["content"]:
            self._forget(speech)

    async def _recover(self, frame: ErrorFrame) -> None:
        self.call.log.warning("recovering from an error in %s: %s", frame.source, frame.error)
        await self._speak_filler()
        if self.settings.on_error.then == "hangup":
            await self._goodbye()

    async def _speak_filler(self) -> None:
        self._standby = self._begin_speech(record=False)
        await self.push_frame(TTSSpeakFrame(self.settings.on_error.say))

    async def _goodbye(self) -> None:
        goodbye = self.settings.on_error.goodbye
        self._standby = self._begin_speech()
        self._standby.add(goodbye)
        await self.push_frame(TTSSpeakFrame(goodbye))
        await self.push_frame(HangupFrame(reason=f"{self.client.provider} failed"))


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
