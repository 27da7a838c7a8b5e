"""The settings models of a bot file's top level: transports, session store, HTTP API, ARI,
logging, models, call records, tools, and ``BotConfig`` that holds them; ``ProcessorEntry`` is
one validated pipeline step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from voxpipe.models.settings import ModelsSettings
from voxpipe.pipelines.settings import ProcessorSettings, Settings
from voxpipe.records.settings import CallerSettings, CallRecordsSettings, HooksSettings
from voxpipe.tools.settings import ToolSettings
from voxpipe.transports.audiosocket.settings import TransportSettings

# --- the top-level document --------------------------------------------------------------------


class RedisStoreSettings(Settings):
    """Keep call state in Redis at ``call_session:<uuid>``."""

    url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (may hold a password)."
    )
    ttl_s: int = Field(1800, gt=0, description="Key lifetime, refreshed on activity, in seconds.")


class MemoryStoreSettings(Settings):
    """Keep call state in this process only."""


class SessionStoreSettings(Settings):
    """Where call state lives. Give exactly one of ``redis`` or ``memory`` (the default)."""

    redis: RedisStoreSettings | None = Field(None, description="Store call state in Redis.")
    memory: MemoryStoreSettings | None = Field(None, description="Store call state in memory.")


class HttpSettings(Settings):
    """The health and metrics API."""

    listen: str = Field("127.0.0.1:8080", description="host:port of the HTTP API.")
    token: SecretStr | None = Field(None, description="Bearer token required on every request.")
    web: bool = Field(
        False,
        description="Serve a page at / to talk to the bot from a browser (over the call API, "
        "transport.websocket).",
    )


class AriSettings(Settings):
    """Asterisk REST Interface: answer calls in a Stasis app and bridge them to this bot."""

    url: str = Field(description="Base URL of Asterisk's HTTP server, e.g. http://127.0.0.1:8088.")
    username: str = Field(description="ARI user (ari.conf).")
    password: SecretStr = Field(description="ARI password (ari.conf).")
    app: str = Field("voxpipe", description="Stasis application name.")
    external_host: str | None = Field(
        None, description="host:port Asterisk should connect to for this bot's AudioSocket."
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of every ARI REST request.")
    media_timeout_s: float = Field(
        3.0,
        gt=0,
        description="How long to wait for the bot's externalMedia channel to enter the Stasis "
        "app; after that the set-up is given up and the caller sent back to the dialplan.",
    )
    reconnect_step_s: float = Field(
        5.0, gt=0, description="Events WebSocket lost: wait this, then twice this, ... to retry."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnections.")
    ping_interval_s: float = Field(
        20.0, gt=0, description="Keepalive ping on the events WebSocket, in seconds."
    )
    media_format: Literal["slin16", "slin", "slin24", "slin48", "ulaw", "alaw"] = Field(
        "slin16",
        description="externalMedia audio format: slin16 (AudioSocket 0x12, Asterisk 20.17, "
        "21.12, 22.7, 23.1 or later) or slin (8 kHz, 0x10, any Asterisk with AudioSocket); "
        "with media_transport websocket also slin24, slin48, ulaw or alaw.",
    )
    media_transport: Literal["audiosocket", "websocket"] = Field(
        "audiosocket",
        description="How the externalMedia channel reaches the bot: audiosocket (TCP, "
        "transport.audiosocket) or websocket (chan_websocket, needs "
        "transport.asterisk_websocket).",
    )
    websocket_connection: str | None = Field(
        None,
        description="media_transport websocket: the websocket_client.conf connection Asterisk "
        "dials to reach the bot (its uri is transport.asterisk_websocket.listen). Unset: the "
        "bot connects to Asterisk's /media/<connection id> itself (connection_type server).",
    )

    @model_validator(mode="after")
    def _check_media(self) -> AriSettings:
        if self.media_transport == "audiosocket" and self.media_format not in ("slin16", "slin"):
            raise ValueError(
                f"media_format {self.media_format!r} needs media_transport: websocket "
                "(AudioSocket carries slin and slin16 only)"
            )
        return self


class LoggingSettings(Settings):
    """Log format and level for this bot's calls."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="Human-readable or JSON lines.")


class BotConfig(Settings):
    """A voice bot: how calls arrive, the chain of processors each call gets, and its tools."""

    name: str = Field(description="The bot's name, shown in logs and metrics.")
    description: str = Field("", description="What the bot is for.")
    greeting: str | None = Field(None, description="What the bot says when a call starts.")
    transport: TransportSettings = Field(
        default_factory=TransportSettings,  # type: ignore[arg-type]
        description="How calls reach the bot.",
    )
    pipeline: list[Any] = Field(
        min_length=1,
        description="The processors each call flows through, in order: a list of one-key "
        "mappings, `- type: {settings}`.",
    )
    tools: dict[str, ToolSettings] = Field(
        default_factory=dict, description="Tools the LLM may call, by name."
    )
    session_store: SessionStoreSettings = Field(
        default_factory=SessionStoreSettings,  # type: ignore[arg-type]
        description="Where call state is kept.",
    )
    models: ModelsSettings = Field(
        default_factory=ModelsSettings,  # type: ignore[arg-type]
        description="Worker processes for the local speech models.",
    )
    http: HttpSettings | None = Field(None, description="Health and metrics HTTP API.")
    ari: AriSettings | None = Field(None, description="ARI call control.")
    logging: LoggingSettings = Field(
        default_factory=LoggingSettings,  # type: ignore[arg-type]
        description="Logging.",
    )
    call_records: CallRecordsSettings | None = Field(
        None, description="Keep every call and its transcript in a database."
    )
    hooks: HooksSettings = Field(
        default_factory=HooksSettings,  # type: ignore[arg-type]
        description="HTTP callbacks on call events.",
    )
    caller: CallerSettings = Field(
        default_factory=CallerSettings,  # type: ignore[arg-type]
        description="What the bot learns about the caller when a call starts.",
    )


@dataclass(frozen=True)
class ProcessorEntry:
    """One validated step of the pipeline."""

    type_name: str
    settings: ProcessorSettings
    index: int
