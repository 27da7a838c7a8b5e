"""What the tests of the Pipecat transports share: the example bot, a pipeline run to its end,
and a processor that answers the caller's keys."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames import frames as pf
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipecat_audiosocket.py"


def load_example() -> Any:
    """``examples/pipecat_audiosocket.py`` as a module."""
    spec = importlib.util.spec_from_file_location("pipecat_audiosocket", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def run_pipeline(processors: list[Any], rate: int = 16000) -> None:
    """Run a Pipecat pipeline of ``processors`` at ``rate`` until it ends."""
    worker = PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def tone(seconds: float, rate: int) -> bytes:
    """A 440 Hz tone, PCM16."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


class Keys(FrameProcessor):  # type: ignore[misc]
    """Notes the caller's keys; '1' says ``tone_s`` of tone (as a TTS service speaks, so that
    Pipecat's output tracks the bot speaking), '#' ends the pipeline."""

    def __init__(self, tone_s: float) -> None:
        super().__init__()
        self.tone_s = tone_s
        self.keys: list[str] = []

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, pf.InputDTMFFrame):
            self.keys.append(frame.button.value)
            if frame.button.value == "1":
                await self.push_frame(pf.TTSStartedFrame(context_id="keys"))
                for _ in range(round(self.tone_s * 10)):
                    audio = pf.TTSAudioRawFrame(tone(0.1, 16000), 16000, 1, context_id="keys")
                    await self.push_frame(audio)
                await self.push_frame(pf.TTSStoppedFrame(context_id="keys"))
            elif frame.button.value == "#":
                await self.push_frame(pf.EndWorkerFrame(), FrameDirection.UPSTREAM)
            return
        await self.push_frame(frame, direction)
