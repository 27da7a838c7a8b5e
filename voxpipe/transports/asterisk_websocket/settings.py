"""Settings of the chan_websocket transport (``transport: {asterisk_websocket: {...}}``)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from voxpipe.pipelines.settings import Settings

DEFAULT_ALLOW_FROM = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


class AsteriskWebSocketSettings(Settings):
    """Asterisk's WebSocket channel driver: Asterisk connects here (websocket_client.conf,
    ``Dial(WebSocket/<connection>/c(slin16))``, ARI externalMedia ``transport=websocket``), or
    the bot connects to Asterisk's ``/media/<connection id>``."""

    listen: str = Field(
        "0.0.0.0:8765",
        description="host:port to accept Asterisk's WebSocket connections on (the uri of the "
        "websocket_client.conf connection: ws://bot:8765).",
    )
    max_calls: int = Field(
        200, ge=1, description="Concurrent chan_websocket calls; more are refused (HTTP 503)."
    )
    allow_from: list[str] = Field(
        list(DEFAULT_ALLOW_FROM),
        description="Client networks (CIDR) allowed to connect: loopback and private ranges "
        "by default. Use ['0.0.0.0/0', '::/0'] to allow any address.",
    )
    max_call_s: float = Field(3600.0, gt=0, description="Longest a call may last, in seconds.")
    start_timeout_s: float = Field(
        2.0, gt=0, description="How long a new connection may take to send MEDIA_START."
    )
    send_ahead_s: float = Field(
        0.2,
        ge=0,
        le=5.0,
        description="How far ahead of real time the bot sends its audio (Asterisk plays it "
        "from its own queue; FLUSH_MEDIA takes it back on barge-in).",
    )
    max_message_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest message Asterisk may send; a larger one ends the call.",
    )
    resample_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = Field(
        "LQ",
        description="Filter for resampling between the channel's rate and the pipeline's "
        "(as transport.audiosocket.resample_quality).",
    )
    drain_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running calls may go on before hang-up."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, for example '0.0.0.0:8765'")
        return value

    @field_validator("allow_from")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a network in CIDR form: {exc}") from None
        return value

    @property
    def host(self) -> str:
        """The address to bind."""
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        """The TCP port to bind."""
        return int(self.listen.rpartition(":")[2])
