"""How tools are declared in a bot's ``tools:`` block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from voxpipe.pipelines.settings import Settings


class HttpRequestSettings(Settings):
    """The request an ``http`` tool makes; ``{name}`` in the URL takes the argument ``name``."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "GET", description="HTTP method."
    )
    url: str = Field(description="URL template, e.g. 'https://orders.example/api/{order_id}'.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers; use ${VAR} for secrets."
    )
    timeout_s: float = Field(3.0, gt=0, description="Whole-request timeout in seconds.")
    max_response_bytes: int = Field(
        65536, gt=0, description="Responses larger than this are refused."
    )
    allowed_hosts: list[str] | None = Field(
        None, description="Hosts the URL may resolve to; default: the host of the template only."
    )


class ToolSettings(Settings):
    """One tool the LLM may call. Give ``http`` or ``python``, or configure a built-in
    (``hangup``: ``goodbye``; ``transfer``: ``context``, ``extension``, ``say``)."""

    description: str = Field("", description="What the tool does, for the model.")
    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="JSON Schema of each argument, e.g. {order_id: {type: string}}.",
    )
    required: list[str] | None = Field(
        None, description="Arguments that must be given; default: all of them."
    )
    http: HttpRequestSettings | None = Field(None, description="Make an HTTP request.")
    python: str | None = Field(
        None,
        description="A Python tool: an entry point name in 'voxpipe.tools' or 'module:function'.",
    )
    context: str | None = Field(
        None, description="transfer: dialplan context to send the caller to."
    )
    extension: str | None = Field(None, description="transfer: extension in that context.")
    say: str | None = Field(None, description="A line the bot says before the tool acts.")
    goodbye: str | None = Field(None, description="hangup: what the bot says before hanging up.")
