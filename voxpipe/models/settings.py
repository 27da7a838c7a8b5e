"""The bot file's ``models:`` block: the worker processes that run its local speech models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from voxpipe.pipelines.settings import Settings


class ModelsSettings(Settings):
    """The worker processes that run the bot's local speech models (whisper, pocketsphinx,
    piper), each loading every model once."""

    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="Model worker processes: auto is one per core (shared among the "
        "processes of `serve --workers`). Each holds every local model of the bot.",
    )
    job_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A model job that runs longer than this is taken for a hung worker: "
        "the worker is restarted and the job tried once more.",
    )
    turn_latency_s: float = Field(
        2.0,
        gt=0,
        le=30,
        description="The turn latency (end of the caller's speech to the bot's answer) that "
        "`transport.audiosocket.max_calls: auto` sizes the call limit for.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: object) -> object:
        # One clear message for either mistake, rather than one per member of the union.
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError(f"expected a number of processes (at least 1) or 'auto' (got {value!r})")
