"""The bot file's ``call_records:``, ``hooks:`` and ``caller:`` blocks."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from voxpipe.pipelines.settings import Settings

DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class AudioRecordingSettings(Settings):
    """Record each call as a stereo WAV file: the caller on the left, the bot on the right."""

    dir: str = Field(
        "recordings",
        description="Directory of the recordings (made when missing): one file per call, "
        "`<dir>/<YYYY-MM-DD>/<uuid>.wav`.",
    )
    format: Literal["wav"] = Field(
        "wav",
        description="wav: 16-bit PCM, stereo, at the pipeline's rate, written as the call goes "
        "(a crash leaves a playable file).",
    )


class CallRecordsSettings(Settings):
    """Keep every call, its transcript and its tool calls in a database (SQLite or PostgreSQL)."""

    url: SecretStr = Field(
        SecretStr("sqlite+aiosqlite:///calls.db"),
        description="Database URL: sqlite+aiosqlite:///calls.db (a file, no server) or "
        "postgresql+asyncpg://user:password@host/db (may hold a password).",
    )
    migrate: bool = Field(
        False,
        description="Bring the database's tables up to date when the bot starts (else: "
        "`run-pipeline db upgrade BOT.yaml`).",
    )
    keep_days: int = Field(
        90,
        ge=1,
        description="Keep calls this many days; older ones are deleted (PostgreSQL: their "
        "monthly partitions dropped once wholly older).",
    )
    months_ahead: int = Field(
        2,
        ge=1,
        le=24,
        description="PostgreSQL: monthly partitions made ahead of the current month.",
    )
    queue_size: int = Field(
        20000,
        ge=100,
        description="Records held in memory while the database is slow or down; beyond "
        "that they are dropped, counted and logged.",
    )
    batch_size: int = Field(500, ge=1, description="Most records written in one transaction.")
    flush_interval_s: float = Field(
        0.5, gt=0, description="How long records wait to be written with others, at most."
    )
    timeout_s: float = Field(
        5.0, gt=0, description="A write (or a connection) that takes longer has failed."
    )
    lookup_timeout_s: float = Field(
        0.5,
        gt=0,
        description="Longest wait for the customer lookup when a call starts; the call "
        "goes on without it after that.",
    )
    audio: AudioRecordingSettings | None = Field(
        None, description="Record the calls' audio (unset: no recordings)."
    )

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: SecretStr) -> SecretStr:
        scheme = url.get_secret_value().partition("://")[0]
        if scheme not in DRIVERS:
            raise ValueError(
                f"unsupported database {scheme!r}; use sqlite+aiosqlite:///FILE or "
                "postgresql+asyncpg://USER:PASSWORD@HOST/DB"
            )
        return url


class WebhookSettings(Settings):
    """An HTTP POST of a JSON document, signed with HMAC-SHA256, retried with backoff."""

    url: str = Field(description="Where to POST (http:// or https://).")
    secret: SecretStr = Field(
        description="Key of the HMAC-SHA256 signature in the X-Voxpipe-Signature header."
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one attempt, in seconds.")
    retries: int = Field(
        5, ge=0, le=20, description="Retries after a failed attempt (error, timeout, non-2xx)."
    )
    backoff_s: float = Field(
        1.0, ge=0, description="Wait before the first retry; doubled for each further one."
    )

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a hook URL starts with http:// or https:// (got {url!r})")
        return url


class HooksSettings(Settings):
    """HTTP callbacks on call events, sent in the background: they never hold up a call."""

    call_ended: WebhookSettings | None = Field(
        None, description="POST each call's record (with its transcript) when it ends."
    )


class CallerSettings(Settings):
    """What the bot learns about the caller when a call starts (docs/bots.md, Caller context)."""

    variables: list[str] = Field(
        default_factory=list,
        description="Channel variables to keep, e.g. [ACCOUNT, LANGUAGE]: from the ARI "
        "channel (list them in ari.conf's channelvars too) or the dialplan's context POST; "
        "templates read them as {caller.NAME}.",
    )
    customers: bool = Field(
        True,
        description="Look the caller's number up in the `customers` table of call_records "
        "({customer.name}, {customer.KEY}).",
    )

    @field_validator("variables")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _VARIABLE.fullmatch(name):
                raise ValueError(f"{name!r} is not a channel variable name (letters, digits, _)")
            if name in ("number", "name"):
                raise ValueError(f"{name!r} is the caller's own; it cannot be a variable")
        return names
