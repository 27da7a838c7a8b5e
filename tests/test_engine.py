"""The frame engine: order, interruption, end, cancel, upstream frames and failure isolation."""

from __future__ import annotations

import asyncio

import pytest

from voxpipe.bots.bot import Bot
from voxpipe.frames import (
    UPSTREAM,
    BotStoppedSpeakingFrame,
    CancelFrame,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    HangupFrame,
    InputAudioFrame,
    InterruptionFrame,
    OutputAudioFrame,
    StartFrame,
    TextFrame,
    UserStartedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor, QueuedProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.testing import Recorder, until


class LoggingRecorder(Recorder):
    """A ``voxpipe.testing.Recorder`` (both directions kept) that notes its stop and cancel."""

    def __init__(self, name: str = "recorder", log: list[str] | None = None) -> None:
        super().__init__(name=name)
        self.log = log if log is not None else []

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")

    async def cancel(self) -> None:
        self.log.append(f"cancel {self.name}")


class Gated(QueuedProcessor):
    """A slow processor: each text frame waits for ``gate`` before it is passed on."""

    def __init__(self, log: list[str] | None = None) -> None:
        super().__init__(name="gated")
        self.gate = asyncio.Event()
        self.handling: str | None = None
        self.log = log if log is not None else []

    async def handle_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TextFrame):
            self.handling = frame.text
            await self.gate.wait()
        await self.push_frame(frame, direction)

    async def stop(self) -> None:
        await super().stop()
        self.log.append(f"stop {self.name}")


class Raiser(FrameProcessor):
    """Raises on the text ``trigger``."""

    def __init__(self, name: str, trigger: str = "boom") -> None:
        super().__init__(name=name)
        self.trigger = trigger

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TextFrame) and frame.text == self.trigger:
            raise ValueError(self.trigger)
        await self.push_frame(frame, direction)


async def started(processors: list[FrameProcessor]) -> tuple[PipelineTask, asyncio.Task[str]]:
    """A running task over ``processors``, once the start frame has reached the last one."""
    task = PipelineTask(processors)
    runner = asyncio.create_task(task.run())
    last = processors[-1]
    assert isinstance(last, LoggingRecorder)
    await until(lambda: any(isinstance(f, StartFrame) for f in last.down))
    return task, runner


async def test_system_frames_overtake_queued_data_at_the_head() -> None:
    tail = LoggingRecorder()
    task, runner = await started([tail])
    task.queue_frame(TextFrame("a"))
    task.queue_frame(TextFrame("b"))
    task.queue_frame(UserStartedSpeakingFrame())
    await until(lambda: len(tail.down) == 4)
    assert tail.kinds()[1:] == [UserStartedSpeakingFrame, TextFrame, TextFrame]
    assert tail.texts() == ["a", "b"]
    task.cancel()
    await runner


async def test_system_frames_overtake_data_waiting_in_a_queued_processor() -> None:
    gated, tail = Gated(), LoggingRecorder()
    task, runner = await started([gated, tail])
    for text in "abc":
        await task.push_frame(TextFrame(text))
    await until(lambda: gated.handling == "a")
    await task.push_frame(UserStartedSpeakingFrame())
    assert tail.kinds()[1:] == [UserStartedSpeakingFrame]
    assert gated.queued == 2
    gated.gate.set()
    await until(lambda: len(tail.texts()) == 3)
    assert tail.texts() == ["a", "b", "c"]
    task.cancel()
    await runner


async def test_interruption_drops_queued_data_but_keeps_end_and_system_frames() -> None:
    log: list[str] = []
    gated, tail = Gated(log), LoggingRecorder(log=log)
    task, runner = await started([gated, tail])
    await task.push_frame(TextFrame("in hand"))
    await task.push_frame(TextFrame("queued"))
    await task.push_frame(BotStoppedSpeakingFrame())
    await until(lambda: gated.handling == "in hand")
    # Waiting at the head: data, a system frame and the end.
    task.queue_frame(TextFrame("at the head"))
    task.queue_frame(UserStartedSpeakingFrame())
    task.end("done")
    task.interrupt()  # synchronous: every queue is already cleared when it returns
    assert gated.queued == 1
    assert not any(isinstance(f, TextFrame) for f in task._queue)

    assert await runner == "done"
    assert tail.texts() == []
    kinds = tail.kinds()
    assert kinds.index(InterruptionFrame) < kinds.index(EndFrame)
    assert UserStartedSpeakingFrame in kinds
    assert BotStoppedSpeakingFrame in kinds
    assert kinds[-1] is EndFrame
    assert log == ["stop gated", "stop recorder"]


async def test_an_interruption_pushed_upstream_flushes_the_chain() -> None:
    head, gated, tail = LoggingRecorder("head"), Gated(), LoggingRecorder()
    task, runner = await started([head, gated, tail])
    for text in ("one", "two", "three"):
        await task.push_frame(TextFrame(text))
    await until(lambda: gated.handling == "one")
    await tail.push_frame(InterruptionFrame(), UPSTREAM)  # what barge-in does
    assert gated.queued == 0
    assert InterruptionFrame in [type(f) for f in head.up]
    await until(lambda: InterruptionFrame in tail.kinds())
    gated.gate.set()
    await task.push_frame(TextFrame("after"))
    await until(lambda: tail.texts() == ["after"])
    task.cancel()
    await runner


async def test_end_drains_in_order_then_stops_each_processor_in_order() -> None:
    log: list[str] = []
    first, gated, tail = LoggingRecorder("first", log), Gated(log), LoggingRecorder("tail", log)
    task, runner = await started([first, gated, tail])
    for i in range(20):
        task.queue_frame(TextFrame(str(i)))
    task.end()
    await until(lambda: gated.queued > 0)
    assert log == []  # nothing stops while frames are still queued
    gated.gate.set()
    assert await runner == "end"
    assert tail.texts() == [str(i) for i in range(20)]
    assert tail.kinds()[-1] is EndFrame
    assert log == ["stop first", "stop gated", "stop tail"]
    assert task.done


async def test_cancel_stops_at_once_and_drops_what_is_queued() -> None:
    log: list[str] = []
    first, gated, tail = LoggingRecorder("first", log), Gated(log), LoggingRecorder("tail", log)
    task, runner = await started([first, gated, tail])
    for text in "abc":
        await task.push_frame(TextFrame(text))
    await until(lambda: gated.handling == "a")
    task.cancel("caller hung up")
    assert await runner == "cancel: caller hung up"
    assert tail.texts() == []
    assert CancelFrame in tail.kinds()
    assert log == ["cancel first", "stop gated", "cancel tail"]
    await task.push_frame(TextFrame("late"))  # ignored once the call is over
    assert tail.texts() == []


async def test_upstream_frames_reach_the_first_processor() -> None:
    head, middle, tail = LoggingRecorder("head"), LoggingRecorder("middle"), LoggingRecorder("tail")
    task, runner = await started([head, middle, tail])
    await tail.push_error("tts hiccup")
    await task.push_frame(TextFrame("from the transport out"), UPSTREAM)
    assert [type(f) for f in head.up] == [ErrorFrame, TextFrame]
    error = head.up[0]
    assert isinstance(error, ErrorFrame)
    assert (error.error, error.fatal, error.source) == ("tts hiccup", False, "tail")
    assert not task.done  # a non-fatal error is survived
    task.cancel()
    assert await runner == "cancel: "


async def test_a_non_fatal_error_also_travels_down_to_the_processors_after_its_source() -> None:
    stt, llm = LoggingRecorder("stt"), LoggingRecorder("llm")
    task, runner = await started([stt, llm])
    await stt.push_error("speech-to-text unavailable")
    await until(lambda: any(isinstance(f, ErrorFrame) for f in llm.down))
    error = next(f for f in llm.down if isinstance(f, ErrorFrame))
    assert (error.source, error.fatal) == ("stt", False)
    assert not task.done
    task.cancel()
    await runner


async def test_a_hangup_pushed_upstream_comes_back_down_and_ends_the_call() -> None:
    head, tail = LoggingRecorder("head"), LoggingRecorder("tail")
    _, runner = await started([head, tail])
    await tail.push_frame(HangupFrame(reason="goodbye"), UPSTREAM)
    assert await runner == "goodbye"
    assert HangupFrame in head.kinds() and HangupFrame in tail.kinds()


async def test_an_exception_ends_that_call_only() -> None:
    failing_head, failing_tail = LoggingRecorder("head"), LoggingRecorder()
    healthy_tail = LoggingRecorder()
    failing, failing_runner = await started([failing_head, Raiser(name="raiser"), failing_tail])
    healthy, healthy_runner = await started([LoggingRecorder("head"), healthy_tail])

    await failing.push_frame(TextFrame("boom"))  # the transport's reader is never hit
    reason = await failing_runner
    assert reason.startswith("error: raiser: ")
    assert failing.error is not None and "boom" in failing.error
    errors = [f for f in failing_head.up if isinstance(f, ErrorFrame)]
    assert errors and errors[0].fatal and errors[0].source == "raiser"

    await healthy.push_frame(TextFrame("still here"))
    assert healthy_tail.texts() == ["still here"]
    assert not healthy.done
    healthy.end()
    assert await healthy_runner == "end"


@pytest.mark.parametrize("where", ["head queue", "worker", "after the worker", "background task"])
async def test_failures_off_the_direct_path_end_the_call_too(where: str) -> None:
    class Worker(QueuedProcessor):
        async def handle_frame(self, frame: Frame, direction: Direction) -> None:
            if isinstance(frame, TextFrame) and frame.text == "boom":
                raise RuntimeError("worker failed")
            await self.push_frame(frame, direction)

    async def crash() -> None:
        raise RuntimeError("background failed")

    worker, tail = Worker(name="worker"), LoggingRecorder()
    late = Raiser(name="late", trigger="kaboom")
    task, runner = await started([Raiser(name="raiser"), worker, late, tail])
    if where == "head queue":
        task.queue_frame(TextFrame("boom"))
        expected = "raiser"
    elif where == "worker":
        await worker.process_frame(TextFrame("boom"), Direction.DOWNSTREAM)
        expected = "worker"
    elif where == "after the worker":  # raised by "late", called from the worker's task
        await worker.process_frame(TextFrame("kaboom"), Direction.DOWNSTREAM)
        expected = "late"
    else:
        worker.create_task(crash())
        expected = "worker"
    reason = await runner
    assert reason.startswith(f"error: {expected}: ")
    assert CancelFrame in tail.kinds()


async def test_a_processor_failing_to_start_fails_the_call() -> None:
    class Broken(FrameProcessor):
        async def start(self) -> None:
            raise OSError("device missing")

    task = PipelineTask([Broken(name="broken"), LoggingRecorder()])
    reason = await task.run()
    assert reason.startswith("error: broken: ")
    assert "device missing" in reason


async def test_each_call_gets_its_own_pipeline_built_from_the_parsed_bot() -> None:
    bot = Bot.from_yaml(
        "name: echo-bot\npipeline:\n  - echo: {passthrough: false}\n  - echo:\n", "bot.yaml"
    )
    tails = [LoggingRecorder() for _ in range(3)]
    tasks = [
        bot.create_pipeline(bot.new_call(f"call-{i}"), tail=[tail]) for i, tail in enumerate(tails)
    ]
    assert len({id(t.processors[0]) for t in tasks}) == 3
    assert all(t.call.bot == "echo-bot" and t.call.sample_rate == 16000 for t in tasks)
    assert [t.call.call_id for t in tasks] == ["call-0", "call-1", "call-2"]
    assert all(isinstance(t.call.data["build_ms"], float) for t in tasks)

    runners = [asyncio.create_task(t.run()) for t in tasks]
    await until(lambda: all(StartFrame in tail.kinds() for tail in tails))
    await tasks[1].push_frame(InputAudioFrame(b"\x01\x00" * 320, 16000))
    # The first echo turns caller audio into bot audio and swallows it; the second echoes
    # nothing more, so exactly one frame of bot audio reaches this call's tail.
    assert [type(f) for f in tails[1].down].count(OutputAudioFrame) == 1
    assert tails[0].kinds() == [StartFrame] and tails[2].kinds() == [StartFrame]
    for t in tasks:
        t.end()
    assert await asyncio.gather(*runners) == ["end", "end", "end"]


async def test_cancelling_the_runner_still_cancels_every_processor() -> None:
    log: list[str] = []
    first, tail = LoggingRecorder("first", log), LoggingRecorder("tail", log)
    task, runner = await started([first, tail])
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert log == ["cancel first", "cancel tail"]
    assert task.end_reason == "cancel: pipeline task cancelled"
    assert CancelFrame in tail.kinds()


async def test_end_and_cancel_requests_pushed_upstream() -> None:
    tail = LoggingRecorder()
    _, runner = await started([LoggingRecorder("head"), tail])
    await tail.push_frame(TextFrame("last words"))
    await tail.push_frame(EndFrame(reason="bot is done"), UPSTREAM)
    assert await runner == "bot is done"
    assert tail.kinds()[-1] is EndFrame

    tail = LoggingRecorder()
    _, runner = await started([LoggingRecorder("head"), tail])
    await tail.push_frame(CancelFrame(reason="abort"), UPSTREAM)
    assert await runner == "cancel: abort"


async def test_a_queued_processor_works_even_if_start_forgets_super() -> None:
    class Forgetful(QueuedProcessor):
        async def start(self) -> None:
            self.ready = True

    forgetful, tail = Forgetful(name="forgetful"), LoggingRecorder()
    task, runner = await started([forgetful, tail])
    task.queue_frame(TextFrame("handled"))
    task.end()
    assert await runner == "end"
    assert tail.texts() == ["handled"]


async def test_frames_queued_before_the_start_never_overtake_it() -> None:
    class SlowStart(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: Direction) -> None:
            if isinstance(frame, StartFrame):
                await asyncio.sleep(0.05)  # say, opening a stream to a provider
            await self.push_frame(frame, direction)

    tail = LoggingRecorder()
    task = PipelineTask([LoggingRecorder("head"), SlowStart(name="slow"), tail])
    task.queue_frame(TextFrame("greeting"))
    runner = asyncio.create_task(task.run())
    await until(lambda: len(tail.down) == 2)
    assert tail.kinds() == [StartFrame, TextFrame]
    task.cancel()
    await runner


async def test_closing_a_bot_flushes_and_closes_its_shared_resources_once() -> None:
    import concurrent.futures

    closed: list[str] = []

    class AsyncClient:
        async def __aexit__(self, *exc: object) -> None:
            closed.append("client")

    class Store:
        async def close(self) -> None:
            closed.append("store")

    class Broken:
        def close(self) -> None:
            raise RuntimeError("stuck")

    bot = Bot.from_yaml("name: t\npipeline:\n  - echo: {}\n")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    bot.shared.update(
        {"store": Store(), "pool": pool, "broken": Broken(), "client": AsyncClient(), "name": "x"}
    )
    await bot.close()
    assert closed == ["client", "store"], "newest first, and a failure does not stop the rest"
    assert bot.shared == {}
    with pytest.raises(RuntimeError):
        pool.submit(print)
    await bot.close()
    assert closed == ["client", "store"], "closing twice closes nothing twice"
