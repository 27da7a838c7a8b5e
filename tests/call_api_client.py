"""A client of the call API for the tests, as a gateway would be: it streams PCM16 at real time
(silence between utterances), keeps every event and audio message with its arrival time, and
drops its own playout queue on ``stop_audio``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from voxpipe.transports.audiosocket.resample import resample_once

FRAME_S = 0.02
# Bot audio counts as speech when a sample reaches this level (about -36 dBFS).
VOICE_PEAK = 512


def load_pcm(path: Path, rate: int) -> bytes:
    """A WAV file's PCM16 at ``rate``."""
    with wave.open(str(path)) as wav:
        pcm = wav.readframes(wav.getnframes())
        return resample_once(pcm, wav.getframerate(), rate)


@dataclass
class Received:
    """What the bot sent: events (time, name, payload) and audio (time, bytes, voiced)."""

    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    audio: list[tuple[float, int, bool]] = field(default_factory=list)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [payload for _, event, payload in self.events if event == name]

    def transcript(self, speaker: str) -> list[str]:
        return [p["text"] for p in self.named("transcript") if p["speaker"] == speaker]


class CallClient:
    """One connection to the call API; ``async with CallClient.open(url, ...) as client``."""

    def __init__(self, ws: ClientConnection, rate: int) -> None:
        self.ws = ws
        self.rate = rate
        self.got = Received()
        self.changed = asyncio.Event()
        self.queued: list[bytes] = []  # audio to speak, streamed frame by frame
        self.playout = 0  # bytes of bot audio a player would still hold
        self.dropped = 0  # bytes dropped on stop_audio
        self.last_voice = 0.0
        self.speech_ends = 0.0
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str,
        payload: dict[str, Any] | None = None,
        *,
        rate: int = 16000,
        stream: bool = True,
        **kwargs: Any,
    ) -> AsyncIterator[CallClient]:
        """Connect, send ``call_start`` (unless ``payload`` is None) and stream at real time."""
        async with connect(url, max_size=None, ping_interval=None, **kwargs) as ws:
            client = cls(ws, rate)
            client._tasks.append(asyncio.create_task(client._read()))
            if payload is not None:
                await client.send_event("call_start", payload)
                if stream:
                    client._tasks.append(asyncio.create_task(client._stream()))
            try:
                yield client
            finally:
                for task in client._tasks:
                    task.cancel()
                await asyncio.gather(*client._tasks, return_exceptions=True)

    async def send_event(self, name: str, payload: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"event": name}
        if payload is not None:
            message["payload"] = payload
        await self.ws.send(json.dumps(message))

    def say(self, pcm: bytes) -> float:
        """Queue ``pcm`` to be spoken; returns how long it lasts, in seconds."""
        self.queued.append(pcm)
        seconds = len(pcm) / 2 / self.rate
        self.speech_ends = max(self.speech_ends, time.monotonic()) + seconds
        return seconds

    async def _stream(self) -> None:
        frame = int(self.rate * FRAME_S) * 2
        pending = b""
        due = time.monotonic()
        while True:
            if not pending and self.queued:
                pending = self.queued.pop(0)
            chunk, pending = pending[:frame], pending[frame:]
            await self.ws.send(chunk.ljust(frame, b"\0"))
            due += FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            # A player plays 20 ms of what it holds every 20 ms.
            self.playout = max(0, self.playout - frame)

    @property
    def speaking(self) -> bool:
        """Whether the caller is still speaking what was queued."""
        return time.monotonic() < self.speech_ends

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    samples = np.frombuffer(message, "<i2")
                    voiced = bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) >= (
                        VOICE_PEAK
                    )
                    self.got.audio.append((now, len(message), voiced))
                    self.playout += len(message)
                    if voiced:
                        self.last_voice = now
                else:
                    data = json.loads(message)
                    name, payload = data["event"], data.get("payload", {})
                    self.got.events.append((now, name, payload))
                    if name == "stop_audio":
                        self.dropped += self.playout
                        self.playout = 0
                self.changed.set()
        except Exception:
            pass
        finally:
            self.closed.set()
            self.changed.set()

    async def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> None:
        """Wait until ``predicate()`` holds (checked at every message), or fail."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def event(self, name: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The first ``name`` event (waiting for it)."""
        await self.wait_for(lambda: bool(self.got.named(name)) or self.closed.is_set(), timeout_s)
        found = self.got.named(name)
        assert found, f"no {name} event; got {[e for _, e, _ in self.got.events]}"
        return found[0]

    async def quiet(self, quiet_s: float = 0.7, timeout_s: float = 30.0) -> None:
        """Wait until the bot has spoken and then been silent for ``quiet_s``."""
        async with asyncio.timeout(timeout_s):
            await self.wait_for(lambda: bool(self.last_voice))
            while True:
                left = self.last_voice + quiet_s - time.monotonic()
                if left <= 0:
                    return
                await asyncio.sleep(left)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason
