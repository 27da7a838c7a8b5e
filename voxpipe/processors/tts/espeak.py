"""``tts: {provider: espeak}``: the espeak-ng binary, when the machine has it.

Robotic but tiny, instant and available in most distributions (``apt-get install espeak-ng``).
Each sentence runs the binary as an asyncio subprocess (no thread needed); the text goes in on
standard input, so it can never be taken for an option.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.tts.base import CachedTTSSettings, TTSProcessor
from voxpipe.processors.tts.cache import PhraseCache

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """PCM16 mono samples and rate of espeak-ng's WAV output (its sizes are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not produce a WAV file")
    rate = 0
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"fmt ":
            rate = struct.unpack_from("<I", data, pos + 12)[0]
        elif chunk == b"data":
            audio = data[pos + 8 :]
            return audio[: len(audio) - len(audio) % 2], rate
        pos += 8 + size
    raise ValueError("espeak-ng's WAV output has no audio")


async def run_espeak(binary: str, args: list[str], text: str) -> tuple[bytes, int]:
    """Speak ``text`` with espeak-ng: PCM16 mono and its sample rate."""
    process = await asyncio.create_subprocess_exec(
        binary,
        "--stdout",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate(text.encode("utf-8"))
    except asyncio.CancelledError:
        if process.returncode is None:
            process.kill()
        raise
    if process.returncode != 0:
        raise ProviderError(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
    return parse_wav(out)


class EspeakSettings(CachedTTSSettings):
    """Offline text-to-speech with the espeak-ng binary (when installed)."""

    provider: Literal["espeak"] = Field(description="Text-to-speech engine.")
    voice: str = Field("en-us", description="espeak-ng voice (espeak-ng --voices lists them).")
    rate_wpm: int = Field(165, ge=80, le=450, description="Speaking rate in words per minute.")
    pitch: int = Field(50, ge=0, le=99, description="Pitch, 0 to 99.")
    binary: str = Field("espeak-ng", description="The espeak-ng executable (name or path).")

    def _args(self) -> list[str]:
        return ["-v", self.voice, "-s", str(self.rate_wpm), "-p", str(self.pitch)]

    async def prepare_engine(self, ctx: BotContext) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise ProviderError(
                f"espeak: the {self.binary!r} binary is not installed "
                "(apt-get install espeak-ng), or use the piper provider"
            )
        audio, _rate = await run_espeak(binary, self._args(), "ready")
        if not audio:
            raise ProviderError(f"espeak: voice {self.voice!r} produced no audio")
        ctx.shared[f"espeak:{self.binary}"] = binary

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return EspeakTTS(
            ctx.shared[f"espeak:{self.binary}"],
            self._args(),
            sample_rate=call.sample_rate,
            cache=self.phrase_cache(ctx),
        )


class EspeakTTS(TTSProcessor):
    """Synthesises each sentence with an espeak-ng subprocess."""

    provider: ClassVar[str] = "espeak"

    __slots__ = ("_args", "_binary")

    def __init__(
        self, binary: str, args: list[str], *, sample_rate: int, cache: PhraseCache | None = None
    ) -> None:
        super().__init__(sample_rate=sample_rate, cache=cache)
        self._binary = binary
        self._args = args

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        return await run_espeak(self._binary, self._args, text)
