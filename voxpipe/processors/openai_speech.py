"""What the OpenAI-compatible speech providers share: the connection, retries and failures.

``stt: {provider: openai_compatible}`` (``/v1/audio/transcriptions``) and ``tts: {provider:
openai_compatible}`` (``/v1/audio/speech``) talk to OpenAI or to a self-hosted server speaking
the same API (speaches, vLLM, LocalAI, a Kokoro or Whisper server on another machine) through
the official ``openai`` SDK. One client per bot and server; the SDK's own retries are off, so
that ``retries`` and ``timeout_s`` mean what they say.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import Field, SecretStr

from voxpipe.pipelines.settings import ProviderError, Settings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext

T = TypeVar("T")


class OpenAISpeechConnection(Settings):
    """How to reach an OpenAI-compatible speech server: address, key, timeout and retries."""

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="API base URL: OpenAI's, or a self-hosted server's, e.g. "
        "http://10.0.0.7:8000/v1.",
    )
    api_key: SecretStr = Field(
        SecretStr("not-needed"),
        description="API key (use ${OPENAI_API_KEY}); self-hosted servers accept any value.",
    )
    model: str = Field(description="Model name as the server knows it.")
    timeout_s: float = Field(
        5.0, gt=0, le=120, description="Seconds to wait for an answer before retrying."
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries after a timeout, a 5xx or a lost connection."
    )
    backoff_s: float = Field(
        0.25, ge=0, le=30, description="Wait before the first retry; doubled for each next one."
    )

    def client_key(self) -> str:
        """The ``bot.shared`` key of the client (one per bot, server and key)."""
        return f"openai-speech:{self.base_url}:{hash(self.api_key.get_secret_value())}"

    def connect(self, ctx: BotContext, what: str) -> Any:
        """The bot's SDK client for this server, built once; ``ProviderError`` without the SDK."""
        key = self.client_key()
        client = ctx.shared.get(key)
        if client is not None:
            return client
        try:
            import openai
        except ImportError as exc:
            raise ProviderError(
                f"{what}: the openai package is missing; pip install 'voxpipe[openai]'"
            ) from exc
        secret = self.api_key.get_secret_value()
        if not secret:
            raise ProviderError(f"{what}: api_key is empty")
        client = openai.AsyncOpenAI(
            api_key=secret, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        ctx.shared[key] = client
        return client

    async def with_retries(
        self, attempt: Callable[[Progress], Awaitable[T]], call: Call, what: str
    ) -> T:
        """Run ``attempt``, retrying transient failures with backoff. An attempt fails when the
        server sends nothing for ``timeout_s``; it calls its ``Progress`` as data arrives."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout_s) as deadline:
                    return await attempt(Progress(deadline, self.timeout_s))
            except Exception as exc:
                if failures >= self.retries or not is_transient(exc):
                    raise
                delay = self.backoff_s * 2**failures
                failures += 1
                call.log.warning("%s failed (%s); retry in %.2f s", what, describe(exc), delay)
                await asyncio.sleep(delay)


class Progress:
    """Pushes an attempt's deadline back each time the server sends something."""

    __slots__ = ("_deadline", "_timeout_s")

    def __init__(self, deadline: asyncio.Timeout, timeout_s: float) -> None:
        self._deadline = deadline
        self._timeout_s = timeout_s

    def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline.reschedule(loop.time() + self._timeout_s)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed when tried again (a timeout, 408, 409, 429, 5xx,
    a lost connection); a 400, 401 or 404 will not."""
    import openai

    if isinstance(exc, TimeoutError | openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def is_provider_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the server failing (to report and survive), not a bug of ours."""
    import openai

    return isinstance(exc, TimeoutError | openai.OpenAIError)


def describe(exc: BaseException) -> str:
    """A one-line account of a provider failure for logs and error frames."""
    import openai

    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
