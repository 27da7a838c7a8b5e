"""The bot's model pool: started when its first local model is prepared, shared by its calls.

Bots of one process with the same ``models:`` settings share one pool (each model is loaded
once per worker), and ``Bot.close`` gives the bot's use of it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxpipe.models.engine import ModelError
from voxpipe.models.pool import ModelPool, acquire, default_workers, release
from voxpipe.pipelines.settings import ProviderError

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot
    from voxpipe.models.engine import Engine, SampleJob

POOL_KEY = "models"


class _Lease:
    """The bot's use of a process-wide pool; closing it gives the pool back (``Bot.close``)."""

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool
        self.engines: list[tuple[Engine, SampleJob]] = []
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            release(self.pool)


def worker_count(bot: Bot) -> int:
    """How many model workers the bot's ``models.workers`` asks for, ``auto`` resolved."""
    workers = bot.config.models.workers
    return default_workers() if workers == "auto" else workers


def models_of(bot: Bot) -> ModelPool:
    """The bot's model pool (started on first use)."""
    lease = bot.shared.get(POOL_KEY)
    if not isinstance(lease, _Lease):
        lease = bot.shared[POOL_KEY] = _Lease(
            acquire(worker_count(bot), bot.config.models.job_timeout_s)
        )
    return lease.pool


async def load_model(bot: Bot, engine: Engine, sample: SampleJob) -> None:
    """Have every model worker of the bot load ``engine`` (``ProviderError`` if one cannot);
    ``sample`` is how the step runs it, for ``max_calls: auto`` to time."""
    pool = models_of(bot)
    try:
        await pool.load(engine)
    except ModelError as exc:
        raise ProviderError(str(exc)) from exc
    lease = bot.shared[POOL_KEY]
    lease.engines.append((engine, sample))


def model_engines(bot: Bot) -> list[tuple[Engine, SampleJob]]:
    """The engines the bot's steps loaded into its model pool (after ``prepare``), each with
    the job its step runs on a sample."""
    lease = bot.shared.get(POOL_KEY)
    return list(lease.engines) if isinstance(lease, _Lease) else []
