"""Settings of the AudioSocket transport (``transport: {audiosocket: {...}}``)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator

from voxpipe.pipelines.settings import Settings
from voxpipe.transports.asterisk_websocket.settings import AsteriskWebSocketSettings
from voxpipe.transports.websocket.settings import WebSocketSettings

PIPELINE_RATES = (8000, 12000, 16000, 24000, 32000, 44100, 48000)

DEFAULT_ALLOW_FROM = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


class AudioSocketSettings(Settings):
    """Asterisk connects here over TCP, one connection per call (AudioSocket protocol)."""

    listen: str = Field(
        "0.0.0.0:9092", description="host:port to accept Asterisk's connections on."
    )
    sample_rate: Literal[8000, 12000, 16000, 24000, 32000, 44100, 48000] = Field(
        16000,
        description="Audio rate inside the pipeline; caller audio is resampled to it and back.",
    )
    output_rate: Literal[
        "caller", 8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000
    ] = Field(
        "caller",
        description="Rate (and so message kind) of the audio sent to Asterisk; 'caller' "
        "answers at the rate the caller sends (0x10 gets 0x10, 0x12 gets 0x12).",
    )
    max_calls: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Concurrent calls; a connection beyond them is refused (closed at once). "
        "auto: as many as the bot's local models answer within `models.turn_latency_s` when "
        "all callers stop speaking at once, measured at start (200 without local models).",
    )
    allow_from: list[str] = Field(
        list(DEFAULT_ALLOW_FROM),
        description="Client networks (CIDR) allowed to connect: loopback and private ranges "
        "by default. Use ['0.0.0.0/0', '::/0'] to allow any address.",
    )
    max_call_s: float = Field(3600.0, gt=0, description="Longest a call may last, in seconds.")
    uuid_timeout_s: float = Field(
        2.0, gt=0, description="How long to wait for the UUID message after a connection opens."
    )
    read_timeout_s: float = Field(
        2.0, gt=0, description="How long a started message may take to arrive in full."
    )
    keepalive_s: float = Field(
        1.0,
        gt=0,
        description="While the bot is silent, send a frame of silence this often, so that "
        "Asterisk's AudioSocket() application (2 s inactivity limit) keeps the call.",
    )
    first_audio_wait_s: float = Field(
        1.0,
        ge=0,
        le=1.5,
        description="How long the bot holds its first words (a greeting) until the caller's "
        "first audio message shows the rate to answer in (output_rate 'caller'); then it "
        "answers at 8 kHz and re-rates what is still queued once the caller's audio comes. "
        "At most 1.5 s: the AudioSocket() application hangs up after 2 s without audio.",
    )
    resample_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = Field(
        "LQ",
        description="Filter for resampling between the caller's rate and the pipeline's "
        "(each 20 ms in gives 20 ms out at once): 'QQ' stops aliases by 40 dB, 'LQ' by 60 dB "
        "and delays the audio about 1.2 ms between 8 and 16 kHz, 'MQ' 70 dB, 'HQ' 85 dB and "
        "3.4 ms, 'VHQ' 100 dB.",
    )
    drain_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running calls may go on before hang-up."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, for example '0.0.0.0:9092'")
        return value

    @field_validator("max_calls", mode="before")
    @classmethod
    def _check_max_calls(cls, value: object) -> object:
        # One clear message for either mistake, rather than one per member of the union.
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError(f"expected a number of calls (at least 1) or 'auto' (got {value!r})")

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


class TransportSettings(Settings):
    """How calls reach the bot: AudioSocket, and the call API and chan_websocket when given.

    Every transport given listens at once: one bot takes AudioSocket and chan_websocket calls.
    """

    audiosocket: AudioSocketSettings = Field(
        default_factory=AudioSocketSettings,  # type: ignore[arg-type]
        description="Asterisk AudioSocket (dialplan application, channel driver or ARI).",
    )
    websocket: WebSocketSettings | None = Field(
        None,
        description="The call API: gateways and browsers stream calls over a WebSocket on "
        "the bot's HTTP server (needs an http: block).",
    )
    asterisk_websocket: AsteriskWebSocketSettings | None = Field(
        None,
        description="Asterisk's WebSocket channel driver (chan_websocket, Asterisk 20.16, "
        "21.11, 22.6, 23.0 or later): Dial(WebSocket/<connection>/c(slin16)) or ARI "
        "externalMedia transport=websocket; slin at any rate, ulaw, alaw.",
    )

    def served(self) -> list[str]:
        """The transports the bot listens on: those the bot file names; AudioSocket when it
        names it, or names no other (``transport: {asterisk_websocket: {}}`` alone is
        chan_websocket only)."""
        named = [n for n in ("websocket", "asterisk_websocket") if getattr(self, n) is not None]
        if "audiosocket" in self.model_fields_set or not named:
            named.insert(0, "audiosocket")
        return named
