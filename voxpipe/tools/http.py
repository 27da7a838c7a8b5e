"""``http`` tools: a request built from a URL template and the model's arguments.

Safety rails, because the model chooses the arguments: arguments are validated against the
declared schema first, placed in the URL percent-encoded, the final host must be allowed
(by default only the template's own host), redirects are not followed, the whole request has
a timeout, and a response larger than ``max_response_bytes`` is refused.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

from voxpipe.tools.settings import ToolSettings
from voxpipe.tools.toolbox import Tool, ToolOutcome, as_text

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class HttpTool(Tool):
    """Calls an HTTP endpoint; GET/DELETE send unused arguments as the query, others as JSON."""

    def __init__(self, name: str, settings: ToolSettings) -> None:
        super().__init__(name, settings)
        assert settings.http is not None
        self.request = settings.http
        self.allowed_hosts = set(self.request.allowed_hosts or ())
        if not self.allowed_hosts:
            host = urlsplit(self.request.url).hostname or ""
            if "{" in host or not host:
                raise ValueError(
                    f"tool {name!r}: a URL whose host is templated needs allowed_hosts"
                )
            self.allowed_hosts.add(host)

    def url_for(self, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The request URL and the arguments the template did not use."""
        used: set[str] = set()

        def fill(match: re.Match[str]) -> str:
            used.add(match.group(1))
            return quote(str(arguments.get(match.group(1), "")), safe="")

        url = _PLACEHOLDER.sub(fill, self.request.url)
        return url, {k: v for k, v in arguments.items() if k not in used}

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        import httpx

        url, rest = self.url_for(arguments)
        host = urlsplit(url).hostname or ""
        if host not in self.allowed_hosts:
            return ToolOutcome(f"error: host {host!r} is not allowed", error=True)
        method = self.request.method
        query = rest if method in ("GET", "DELETE") else None
        body = rest if method not in ("GET", "DELETE") else None
        limit = self.request.max_response_bytes
        timeout = httpx.Timeout(self.request.timeout_s)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream(
                method, url, params=query, json=body, headers=self.request.headers
            ) as response,
        ):
            declared = int(response.headers.get("content-length") or 0)
            if declared > limit:
                return ToolOutcome(
                    f"error: the response is too large ({declared} bytes)", error=True
                )
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    return ToolOutcome(
                        f"error: the response is larger than {limit} bytes", error=True
                    )
        text = as_text(bytes(data))
        if response.status_code >= 400:
            return ToolOutcome(f"error: HTTP {response.status_code}: {text[:200]}", error=True)
        return ToolOutcome(text)
