"""The bot's model pool: started when its first local model is prepared, shared by its calls.

The bot provides its ``models:`` settings at ``prepare`` (``provide_models``); the pool itself
starts on first use. Bots of one process with the same ``models:`` settings share one pool
(each model is loaded once per worker), and ``Bot.close`` gives the bot's use of it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxpipe.models.engine import ModelError
from voxpipe.models.pool import ModelPool, acquire, default_workers, release
from voxpipe.models.settings import ModelsSettings
from voxpipe.pipelines.settings import ProviderError

if TYPE_CHECKING:
    from voxpipe.models.engine import Engine, SampleJob
    from voxpipe.pipelines.context import BotContext

POOL_KEY = "models"


class _Lease:
    """The bot's use of a process-wide pool, taken on first use; closing it gives the pool
    back (``Bot.close``)."""

    def __init__(self, settings: ModelsSettings) -> None:
        self.settings = settings
        self.engines: list[tuple[Engine, SampleJob]] = []
        self._pool: ModelPool | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the bot has taken its pool."""
        return self._pool is not None

    @property
    def pool(self) -> ModelPool:
        if self._pool is None:
            self._pool = acquire(worker_count(self.settings), self.settings.job_timeout_s)
        return self._pool

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._pool is not None:
                release(self._pool)


def worker_count(settings: ModelsSettings) -> int:
    """How many model workers ``models.workers`` asks for, ``auto`` resolved."""
    workers = settings.workers
    return default_workers() if workers == "auto" else workers


def provide_models(ctx: BotContext, settings: ModelsSettings) -> None:
    """Give the bot's steps a model pool run by ``settings`` (the bot does, at ``prepare``)."""
    if not isinstance(ctx.shared.get(POOL_KEY), _Lease):
        ctx.shared[POOL_KEY] = _Lease(settings)


def _lease(ctx: BotContext) -> _Lease:
    lease = ctx.shared.get(POOL_KEY)
    if not isinstance(lease, _Lease):  # a context that gave no settings: the defaults
        lease = ctx.shared[POOL_KEY] = _Lease(ModelsSettings.model_validate({}))
    return lease


def models_of(ctx: BotContext) -> ModelPool:
    """The bot's model pool (started on first use)."""
    return _lease(ctx).pool


def models_settings(ctx: BotContext) -> ModelsSettings:
    """The ``models:`` settings the bot's pool runs by."""
    return _lease(ctx).settings


def pool_started(ctx: BotContext) -> ModelPool | None:
    """The bot's model pool, if it has taken one (for ``/health``); never starts one."""
    lease = ctx.shared.get(POOL_KEY)
    return lease.pool if isinstance(lease, _Lease) and lease.started else None


async def load_model(ctx: BotContext, engine: Engine, sample: SampleJob) -> None:
    """Have every model worker of the bot load ``engine`` (``ProviderError`` if one cannot);
    ``sample`` is how the step runs it, for ``max_calls: auto`` to time."""
    pool = models_of(ctx)
    try:
        await pool.load(engine)
    except ModelError as exc:
        raise ProviderError(str(exc)) from exc
    _lease(ctx).engines.append((engine, sample))


def model_engines(ctx: BotContext) -> list[tuple[Engine, SampleJob]]:
    """The engines the bot's steps loaded into its model pool (after ``prepare``), each with
    the job its step runs on a sample."""
    lease = ctx.shared.get(POOL_KEY)
    return list(lease.engines) if isinstance(lease, _Lease) else []
