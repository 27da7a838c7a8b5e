"""The model pool: worker processes that load each model once and run jobs from a queue.

One pool of two workers serves the whole module (starting workers takes a moment); the tests
that kill a worker leave it restarted for the next.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
from fakes.slow_models import ProbeEngine

from voxpipe.models.engine import URGENT, ModelError, WorkerLost
from voxpipe.models.pool import ModelPool
from voxpipe.models.worker import THREAD_VARIABLES
from voxpipe.testing import until

PROBE = ProbeEngine()


@pytest.fixture(scope="module")
def pool() -> Iterator[ModelPool]:
    models = ModelPool(2, job_timeout_s=20)
    models.start()
    models.add(PROBE).result(timeout=60)
    yield models
    models.close()


# Model workers start and die on a machine shared with other tests: wait long, poll gently.
LIMIT_S = 30.0


async def test_jobs_run_in_worker_processes_each_with_the_model_loaded_once(
    pool: ModelPool,
) -> None:
    pids = set(await asyncio.gather(*(pool.run(PROBE.key, "sleep", 0.3) for _ in range(4))))
    assert os.getpid() not in pids
    assert pids == set(pool.pids())
    assert len(pids) == 2
    assert await pool.run(PROBE.key, "echo", {"a": [1, b"\x00"]}) == {"a": [1, b"\x00"]}


async def test_the_event_loop_keeps_running_while_the_workers_compute(pool: ModelPool) -> None:
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    beating = asyncio.create_task(heartbeat())
    await asyncio.gather(*(pool.run(PROBE.key, "sleep", 0.5) for _ in range(4)))
    beating.cancel()
    # Two workers, four half-second jobs: about a second, during which the loop beat freely.
    assert beats >= 50


async def test_workers_are_forked_by_the_fork_server_with_one_thread_per_library(
    pool: ModelPool,
) -> None:
    assert await pool.run(PROBE.key, "parent_pid") != os.getpid()
    for name in THREAD_VARIABLES:
        assert await pool.run(PROBE.key, "environment", name) == "1"


async def test_urgent_jobs_overtake_the_queue(pool: ModelPool) -> None:
    busy = [asyncio.ensure_future(pool.run(PROBE.key, "sleep", 0.5)) for _ in range(2)]
    await until(lambda: len(pool.pids(busy=True)) == 2, LIMIT_S, every=0.05)
    normal = [asyncio.ensure_future(pool.run(PROBE.key, "stamp")) for _ in range(3)]
    urgent = asyncio.ensure_future(pool.run(PROBE.key, "stamp", priority=URGENT))
    await asyncio.gather(*busy)
    ran = await asyncio.gather(urgent, *normal)
    # Both workers free at once and take a job each: the urgent job is one of those two (in
    # arrival order it would have run third or fourth), whichever of them stamps first.
    assert sorted(ran).index(ran[0]) < 2, f"the urgent job ran after {sorted(ran).index(ran[0])}"


async def test_an_engine_that_raises_fails_its_job_only(pool: ModelPool) -> None:
    with pytest.raises(ModelError, match="ValueError: no such order"):
        await pool.run(PROBE.key, "fail", "no such order")
    assert await pool.run(PROBE.key, "echo", 7) == 7
    assert pool.stats()["restarts"] == 0


async def test_an_engine_that_cannot_load_is_reported_with_its_message(pool: ModelPool) -> None:
    with pytest.raises(ModelError, match="unloadable: probe: this model cannot be loaded"):
        await pool.load(ProbeEngine("unloadable"))


async def test_a_killed_worker_is_restarted_and_its_job_retried_once(pool: ModelPool) -> None:
    restarts = pool.stats()["restarts"]
    job = asyncio.ensure_future(pool.run(PROBE.key, "sleep", 1.0))
    await until(lambda: pool.pids(busy=True), LIMIT_S, every=0.05)
    (victim,) = pool.pids(busy=True)
    os.kill(victim, signal.SIGKILL)
    survivor = await job  # retried on a worker that lives
    assert survivor != victim
    assert pool.stats()["restarts"] == restarts + 1
    await until(lambda: pool.stats()["alive"] == 2, LIMIT_S, every=0.05)
    assert victim not in pool.pids()
    # The restarted worker has the model again.
    pids = set(await asyncio.gather(*(pool.run(PROBE.key, "sleep", 0.2) for _ in range(4))))
    assert len(pids) == 2


async def test_a_job_that_kills_two_workers_fails_and_the_pool_goes_on(pool: ModelPool) -> None:
    killed: list[int] = []
    job = asyncio.ensure_future(pool.run(PROBE.key, "sleep", 2.0))
    for _ in range(2):
        await until(
            lambda: [p for p in pool.pids(busy=True) if p not in killed], LIMIT_S, every=0.05
        )
        (victim,) = [p for p in pool.pids(busy=True) if p not in killed]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
    with pytest.raises(WorkerLost, match="died"):
        await job
    await until(lambda: pool.stats()["alive"] == 2, LIMIT_S, every=0.05)
    assert await pool.run(PROBE.key, "echo", "still here") == "still here"


async def test_a_session_stays_on_one_worker_and_is_lost_with_it(pool: ModelPool) -> None:
    first = await pool.run(PROBE.key, "remember", "call-1", "A12345", affinity="call-1")
    for _ in range(5):
        assert await pool.run(PROBE.key, "remember", "call-1", "A12345", affinity="call-1") == (
            first
        )
    assert await pool.run(PROBE.key, "recall", "call-1", affinity="call-1") == "A12345"
    os.kill(first, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        await pool.run(PROBE.key, "recall", "call-1", affinity="call-1")
    pool.release("call-1")
    await until(lambda: pool.stats()["alive"] == 2, LIMIT_S, every=0.05)
    await pool.run(PROBE.key, "remember", "call-1", "B2", affinity="call-1")
    assert await pool.run(PROBE.key, "recall", "call-1", affinity="call-1") == "B2"


async def test_a_job_cancelled_while_queued_never_runs(pool: ModelPool) -> None:
    busy = [asyncio.ensure_future(pool.run(PROBE.key, "sleep", 0.5)) for _ in range(2)]
    await until(lambda: len(pool.pids(busy=True)) == 2, LIMIT_S, every=0.05)
    waiting = asyncio.ensure_future(pool.run(PROBE.key, "remember", "gone", 1, affinity="gone"))
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.gather(*busy)
    with pytest.raises(ModelError, match="KeyError"):
        await pool.run(PROBE.key, "recall", "gone", affinity="gone")
    pool.release("gone")


def test_a_hung_job_is_killed_after_the_timeout_and_retried_once() -> None:
    models = ModelPool(1, job_timeout_s=0.5)
    try:
        models.add(PROBE).result(timeout=60)
        with pytest.raises(WorkerLost, match=r"took over 0\.5 s"):
            models.submit(PROBE.key, "sleep", 30).result(timeout=60)
        assert models.stats()["restarts"] == 2
        assert models.submit(PROBE.key, "echo", 1).result(timeout=60) == 1
    finally:
        models.close()
