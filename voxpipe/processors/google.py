"""The connection to Google Cloud's speech APIs that speech-to-text and text-to-speech share:
credentials, endpoint, timeout and retries, and how Google's errors read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import Field, model_validator

from voxpipe.pipelines.settings import ProviderError, Settings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call

T = TypeVar("T")

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GoogleConnection(Settings):
    """How to reach a Google Cloud speech API: credentials, endpoint, timeout and retries."""

    credentials_file: str | None = Field(
        None,
        description="Path to a service-account JSON key. Default: Application Default "
        "Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud login, or the metadata server).",
    )
    endpoint: str | None = Field(
        None,
        description="host:port of the API instead of Google's default (a regional endpoint, "
        "an emulator or a test server).",
    )
    insecure: bool = Field(
        False,
        description="Talk plaintext gRPC to `endpoint` with no credentials: for local "
        "emulators and test servers only.",
    )
    timeout_s: float = Field(
        5.0, gt=0, le=120, description="Seconds to wait for an answer before retrying."
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries after a timeout or a transient error."
    )
    backoff_s: float = Field(
        0.25, ge=0, le=30, description="Wait before the first retry; doubled for each next one."
    )

    @model_validator(mode="after")
    def _insecure_needs_endpoint(self) -> Self:
        if self.insecure and not self.endpoint:
            raise ValueError("insecure: true needs an endpoint (host:port of the emulator)")
        return self

    def client_key(self, kind: str) -> str:
        """The ``bot.shared`` key of the client these settings build (one per bot)."""
        return f"google.{kind}:{self.endpoint}:{self.insecure}:{self.credentials_file}"

    async def connect(self, what: str, client_cls: Any, transport_cls: Any) -> Any:
        """Build an async API client; raise ``ProviderError`` when no credentials are found.

        The channel is created lazily by gRPC, so building the client sends nothing yet.
        """
        if self.insecure:
            import grpc

            channel = grpc.aio.insecure_channel(self.endpoint or "")
            return client_cls(transport=transport_cls(channel=channel))
        credentials = await asyncio.to_thread(self._credentials, what)
        options = {"api_endpoint": self.endpoint} if self.endpoint else None
        return client_cls(credentials=credentials, client_options=options)

    def _credentials(self, what: str) -> Any:
        import google.auth
        from google.auth.exceptions import GoogleAuthError

        try:
            if self.credentials_file:
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    self.credentials_file, scopes=[SCOPE]
                )
            credentials, _project = google.auth.default(scopes=[SCOPE])
            return credentials
        except (OSError, ValueError, GoogleAuthError) as exc:
            source = self.credentials_file or "Application Default Credentials"
            raise ProviderError(
                f"{what}: no usable Google credentials from {source}: {str(exc).rstrip('.')}. Set "
                "credentials_file to a service-account key or GOOGLE_APPLICATION_CREDENTIALS."
            ) from exc

    async def with_retries(self, attempt: Callable[[], Awaitable[T]], call: Call, what: str) -> T:
        """Run ``attempt``, retrying timeouts and transient errors with exponential backoff."""
        failures = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if failures >= self.retries or not is_transient(exc):
                    raise
                delay = self.backoff_s * 2**failures
                failures += 1
                call.log.warning("%s failed (%s); retry in %.2f s", what, describe(exc), delay)
                await asyncio.sleep(delay)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed when tried again."""
    from google.api_core import exceptions

    return isinstance(
        exc,
        TimeoutError
        | exceptions.ServiceUnavailable
        | exceptions.DeadlineExceeded
        | exceptions.InternalServerError
        | exceptions.TooManyRequests
        | exceptions.Aborted,
    )


def is_provider_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the provider failing (to report and survive), not a bug of ours."""
    from google.api_core.exceptions import GoogleAPIError

    return isinstance(exc, TimeoutError | GoogleAPIError)


def describe(exc: BaseException) -> str:
    """A one-line account of a provider failure for logs and error frames."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"
