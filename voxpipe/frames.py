"""The frame vocabulary: every message that flows through a bot's pipeline.

Three families, as in Pipecat:

* ``SystemFrame`` — handled at once, overtaking queued frames, never dropped by an interruption
  (start, cancel, interruption, caller speech events, caller audio, errors).
* ``DataFrame`` — content (bot audio, text, transcriptions, DTMF); an interruption drops every
  queued data frame.
* ``ControlFrame`` — lifecycle markers that keep their order and survive interruptions
  (end, TTS/bot started and stopped, hangup and transfer requests).

Frames are small slotted dataclasses; building one costs well under a microsecond.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Direction(enum.IntEnum):
    """Which way a frame travels: from the caller towards the bot's output, or back."""

    DOWNSTREAM = 1
    UPSTREAM = 2


DOWNSTREAM = Direction.DOWNSTREAM
UPSTREAM = Direction.UPSTREAM


class Utterance:
    """One stretch of bot speech (a sentence) and how much of it the caller has heard.

    Text-to-speech creates one per sentence and attaches it to every audio frame it produces;
    the transport counts frames as it plays them. After an interruption, ``spoken_text()`` is
    what the caller actually heard, which is what the dialogue history keeps.
    """

    __slots__ = ("frames_played", "frames_total", "text")

    def __init__(self, text: str, frames_total: int = 0) -> None:
        self.text = text
        self.frames_total = frames_total
        self.frames_played = 0

    @property
    def finished(self) -> bool:
        """Whether every frame of this utterance has been played."""
        return self.frames_total > 0 and self.frames_played >= self.frames_total

    def spoken_text(self) -> str:
        """The words the caller heard: all of them, none, or a prefix in proportion to the audio."""
        if self.frames_played <= 0:
            return ""
        if self.frames_total <= 0 or self.frames_played >= self.frames_total:
            return self.text
        words = self.text.split()
        heard = int(len(words) * self.frames_played / self.frames_total)
        return " ".join(words[:heard])


@dataclass(slots=True)
class Frame:
    """Base of every frame."""


@dataclass(slots=True)
class SystemFrame(Frame):
    """Handled first; never dropped by an interruption."""


@dataclass(slots=True)
class DataFrame(Frame):
    """Content; dropped from every queue by an interruption."""


@dataclass(slots=True)
class ControlFrame(Frame):
    """Lifecycle markers that keep their order and survive interruptions."""


# --- system frames ---------------------------------------------------------------------------


@dataclass(slots=True)
class StartFrame(SystemFrame):
    """The first frame of every call: the call's id and the pipeline's audio rate."""

    call_id: str = ""
    sample_rate: int = 16000


@dataclass(slots=True)
class CancelFrame(SystemFrame):
    """Stop at once, dropping whatever is queued (caller hung up, server shutting down)."""

    reason: str = ""


@dataclass(slots=True)
class InterruptionFrame(SystemFrame):
    """The caller barged in: everything the bot was about to say is dropped."""


@dataclass(slots=True)
class UserStartedSpeakingFrame(SystemFrame):
    """Voice activity detection heard the caller start speaking."""


@dataclass(slots=True)
class UserStoppedSpeakingFrame(SystemFrame):
    """Voice activity detection heard the caller stop speaking."""


@dataclass(slots=True)
class TranscriptsPendingFrame(SystemFrame):
    """How many of the caller's finished utterances speech-to-text has yet to deliver.

    Sent when the count changes: up as the caller stops speaking (before the VAD's stopped
    frame goes on), down once an utterance's ``TranscriptionFrame`` has gone (or the utterance
    turned out to hold no words, or was lost). A turn waits for its transcripts, however late.
    """

    count: int = 0


@dataclass(slots=True)
class TTSFillerFrame(SystemFrame):
    """Speak ``text`` at once, ahead of the sentences waiting for synthesis: a short filler
    ("One moment.") while the reply to the caller is late. Text-to-speech plays it from its
    phrase cache without waiting; a line it must synthesise first goes first in its queue."""

    text: str = ""


@dataclass(slots=True)
class InputAudioFrame(SystemFrame):
    """Caller audio: signed 16-bit little-endian PCM."""

    audio: bytes
    sample_rate: int
    channels: int = 1


@dataclass(slots=True)
class ErrorFrame(SystemFrame):
    """Something failed. A fatal error ends the call; others are reported and survived.

    ``kind`` says what a non-fatal error cost the call, for those who answer it: ``SPEECH_LOST``
    (text-to-speech could not speak a sentence: the rest of that reply is dropped), or ``""``.
    """

    error: str
    fatal: bool = False
    source: str = ""
    kind: str = ""


# ErrorFrame.kind: a sentence the bot was to speak got no audio (text-to-speech failed on it).
SPEECH_LOST = "speech_lost"


# --- data frames -----------------------------------------------------------------------------


@dataclass(slots=True)
class OutputAudioFrame(DataFrame):
    """Bot audio for the caller: signed 16-bit little-endian PCM.

    ``utterance`` links the audio to the sentence it speaks, so that the transport can tell how
    much of that sentence the caller heard.
    """

    audio: bytes
    sample_rate: int
    channels: int = 1
    utterance: Utterance | None = None


@dataclass(slots=True)
class TextFrame(DataFrame):
    """A piece of text."""

    text: str


@dataclass(slots=True)
class LLMTextFrame(TextFrame):
    """Text streamed by an LLM; text-to-speech speaks it sentence by sentence."""


@dataclass(slots=True)
class TTSSpeakFrame(TextFrame):
    """Text to speak verbatim (greetings, prompts, fillers), bypassing the LLM."""


@dataclass(slots=True)
class InterimTranscriptionFrame(DataFrame):
    """A partial transcript of what the caller is saying; it may still change."""

    text: str
    language: str = ""


@dataclass(slots=True)
class TranscriptionFrame(DataFrame):
    """The final transcript of a caller utterance."""

    text: str
    language: str = ""


@dataclass(slots=True)
class DTMFFrame(DataFrame):
    """A key the caller pressed: one of ``0-9*#A-D``.

    ``collected`` is set by a ``dtmf`` step that gathers keys into a ``DTMFInputFrame``: the
    conversation then takes that one input rather than each key. Keys survive interruptions
    (see ``interruptible``): a caller's keys are never dropped.
    """

    digit: str
    collected: bool = False


@dataclass(slots=True)
class DTMFInputFrame(DataFrame):
    """Keys the caller entered as one input (``12345`` for "your order number, then pound"),
    gathered by a ``dtmf`` step; the LLM takes it as the caller's turn ``[pressed 12345]``."""

    digits: str


@dataclass(slots=True)
class LLMResponseStartFrame(DataFrame):
    """An LLM reply begins (used to group its text into one assistant turn)."""


@dataclass(slots=True)
class LLMResponseEndFrame(DataFrame):
    """An LLM reply is complete."""


# --- control frames --------------------------------------------------------------------------


@dataclass(slots=True)
class EndFrame(ControlFrame):
    """Finish the call after everything queued before it has been delivered."""

    reason: str = ""


@dataclass(slots=True)
class TTSStartedFrame(ControlFrame):
    """Text-to-speech begins producing audio for ``text``."""

    text: str = ""


@dataclass(slots=True)
class TTSStoppedFrame(ControlFrame):
    """Text-to-speech finished the audio for ``text``."""

    text: str = ""


@dataclass(slots=True)
class BotStartedSpeakingFrame(ControlFrame):
    """The transport began playing bot audio to the caller."""


@dataclass(slots=True)
class BotStoppedSpeakingFrame(ControlFrame):
    """The transport played the last queued bot audio (or dropped it on interruption)."""


@dataclass(slots=True)
class HangupFrame(ControlFrame):
    """Ask the transport to hang up once queued audio has been played."""

    reason: str = ""


@dataclass(slots=True)
class TransferFrame(ControlFrame):
    """Ask for a blind transfer of the caller to ``context``/``extension``."""

    context: str = ""
    extension: str = ""
    priority: int = 1


@dataclass(slots=True)
class ToolCallFrame(ControlFrame):
    """An LLM called a tool (reported for logs, metrics, call records and tests)."""

    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    result: str = ""
    duration_ms: float = 0.0
    error: bool = False


def interruptible(frame: Frame) -> bool:
    """Whether an interruption drops ``frame`` while it is queued: data frames do, except the
    caller's keys (a key press may be the very thing that interrupted)."""
    return isinstance(frame, DataFrame) and not isinstance(frame, DTMFFrame | DTMFInputFrame)
