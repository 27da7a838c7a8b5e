"""Settings of the call API (``transport: {websocket: {...}}``), served on the bot's HTTP server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from voxpipe.pipelines.settings import Settings

# The rates a client may declare in ``call_start``.
CALL_RATES = (8000, 12000, 16000, 24000, 32000, 44100, 48000)
# The HTTP server's own WebSocket layer closes the connection (1009) on a message larger than
# this before the call API sees it; ``max_message_bytes`` stays below it.
SERVER_MAX_MESSAGE_BYTES = 1024 * 1024


class WebSocketSettings(Settings):
    """The call API: a gateway or a browser sends ``call_start``, then PCM16 both ways."""

    path: str = Field(
        "/api/v1/call",
        description="Path of the call API's WebSocket on the bot's HTTP server (http.listen).",
    )
    sample_rate: Literal[8000, 12000, 16000, 24000, 32000, 44100, 48000] = Field(
        16000,
        description="Rate of the PCM16 audio both ways when call_start names none; a client "
        "may declare another (payload.sample_rate).",
    )
    max_calls: int = Field(
        50, ge=1, description="Concurrent calls over the call API; more get call_failed."
    )
    max_call_s: float = Field(3600.0, gt=0, description="Longest a call may last, in seconds.")
    start_timeout_s: float = Field(
        5.0, gt=0, description="How long a new connection may take to send call_start."
    )
    max_message_bytes: int = Field(
        65536,
        ge=1024,
        le=SERVER_MAX_MESSAGE_BYTES,
        description="Largest message a client may send (an audio message of 2 s at 16 kHz "
        "is 64000 bytes); a larger one ends the call with an error event.",
    )
    resample_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = Field(
        "LQ",
        description="Filter for resampling between the client's rate and the pipeline's "
        "(as transport.audiosocket.resample_quality).",
    )
    drain_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running calls may go on before hang-up."
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or any(ch in value for ch in "?#{} "):
            raise ValueError("expected a plain absolute path, for example '/api/v1/call'")
        if value == "/":
            raise ValueError("'/' is the page of http.web; give the call API a path of its own")
        return value
