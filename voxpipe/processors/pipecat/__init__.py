"""``pipecat``: a Pipecat processor or service as a step of a voxpipe bot.

```yaml
- pipecat:
    class: pipecat.services.deepgram.stt.DeepgramSTTService
    role: stt
    args: {api_key: "${DEEPGRAM_API_KEY}", sample_rate: 16000}
```

The class is imported and its arguments are checked against its constructor's signature when
the bot loads (unknown names with a did-you-mean, missing ones, wrong types), so a mistake is a
``file:line:col`` problem before anything runs. Each call gets its own instance, started with
the call's audio rates. What the step does depends on ``role``:

* ``stt`` and ``processor``: every frame goes through the Pipecat processor, translated both
  ways (``bridge``): caller audio, the VAD's events, transcriptions, text, DTMF, interruptions;
  frames with no Pipecat equivalent pass through it in a carrier of their family, so they keep
  their order. An end frame drains it (a Pipecat ``EndFrame``) before the call ends.
* ``tts``: voxpipe's text-to-speech (sentence splitting, phrase cache, standby clips, one
  ``Utterance`` per sentence so barge-in history stays exact); each sentence is a Pipecat
  ``TTSSpeakFrame`` and its ``TTSAudioRawFrame``s, resampled to the pipeline rate.
* ``llm``: voxpipe's turn-taking, history, tools and failure handling (the keys of an ``llm``
  step: ``tools``, ``on_error``, ``timeout_s``...); each request is a Pipecat ``LLMContext``
  with the dialogue and the tools declared in the bot file as its function schemas. The
  service's function calls come back to voxpipe's toolbox, and their results go back to the
  model in the next request's context.

A Pipecat ``ErrorFrame`` becomes a non-fatal voxpipe ``ErrorFrame``, so the LLM's ``on_error``
filler is spoken and the call recovers or ends politely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.llm.base import LLMBaseSettings
from voxpipe.processors.tts.base import CachedTTSSettings
from voxpipe.processors.tts.standby import standby_clips

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor

Role = Literal["stt", "llm", "tts", "processor"]

# The Pipecat base class each role needs, and the role a base class implies.
ROLE_BASES: dict[str, str] = {
    "stt": "pipecat.services.stt_service.STTService",
    "tts": "pipecat.services.tts_service.TTSService",
    "llm": "pipecat.services.llm_service.LLMService",
}

# Keys that only an ``llm`` role uses (the rest of an ``llm`` step's settings).
LLM_KEYS = (
    "tools",
    "system",
    "retries",
    "backoff_s",
    "max_tool_rounds",
    "tool_timeout_s",
    "final_timeout_s",
    "on_error",
)


class PipecatSettings(LLMBaseSettings, CachedTTSSettings):
    """A Pipecat processor or service (any of Pipecat's integrations) as a step of the bot."""

    class_name: str = Field(
        alias="class",
        description="The Pipecat class, e.g. pipecat.services.deepgram.stt.DeepgramSTTService.",
    )
    role: Role | None = Field(
        None,
        description="What the step is to the bot: stt, llm, tts, or processor (anything else: "
        "frames pass through it). Default: from the class's Pipecat base class.",
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the class, checked against its signature; secrets "
        "through ${VAR}. A mapping for `settings` builds the class's Settings; a string for an "
        "enum (language: en) becomes the enum.",
    )
    system: str = Field("", description="llm role: the system prompt.")
    start_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="How long the Pipecat processor may take to start for a call (a "
        "connection to its provider) before the call fails.",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        description="llm and tts roles: give up on a request when the service sends nothing "
        "this long.",
    )
    cache_phrases: int = Field(
        64,
        ge=0,
        le=10000,
        description="tts role: sentences kept synthesised per bot, so that greetings, prompts "
        "and fillers play at once (the `on_error` lines are kept regardless).",
    )

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _check_class_and_arguments(self) -> Self:
        from voxpipe.processors.pipecat.args import ArgumentProblem, check_arguments, import_class

        try:
            cls = import_class(self.class_name)
        except ValueError as exc:
            raise _problems([(("class",), str(exc))]) from None
        role = self.role or _role_of(cls)
        if role is None:
            raise _problems([(("class",), f"{cls.__name__} is not a Pipecat FrameProcessor")])
        base = ROLE_BASES.get(role)
        if base is not None and not _is_subclass(cls, base):
            raise _problems(
                [(("role",), f"{cls.__name__} is not a Pipecat {base.rsplit('.', 1)[1]}")]
            )
        given_llm_keys = [key for key in LLM_KEYS if key in self.model_fields_set]
        if role != "llm" and given_llm_keys:
            raise _problems(
                [((key,), f"only a step with role: llm takes {key!r}") for key in given_llm_keys]
            )
        try:
            check_arguments(cls, dict(self.args))
        except ExceptionGroup as group:
            found = [p for p in group.exceptions if isinstance(p, ArgumentProblem)]
            raise _problems(
                [(("args", p.name) if p.name else ("args",), p.message) for p in found]
            ) from None
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "args", _mask_secrets(self.args))
        return self

    @property
    def kind(self) -> str:
        """The role, known once the settings are valid."""
        return self.role or "processor"

    def pipecat_class(self) -> type[Any]:
        """The Pipecat class (imported when the bot loaded)."""
        from voxpipe.processors.pipecat.args import import_class

        return import_class(self.class_name)

    def build(self) -> Any:
        """A new instance of the Pipecat class for one call."""
        from voxpipe.processors.pipecat.args import check_arguments

        cls = self.pipecat_class()
        return cls(**check_arguments(cls, dict(self.args)))

    async def prepare(self, ctx: BotContext) -> None:
        try:
            self.build()  # a constructor that fails (a missing key) stops serve before calls
        except Exception as exc:
            raise ProviderError(f"pipecat {self.class_name}: {exc}") from exc
        if self.kind == "llm":
            await LLMBaseSettings.prepare(self, ctx)
        elif self.kind == "tts":
            await standby_clips(self, ctx)

    def make_client(self, ctx: BotContext) -> Any:
        from voxpipe.processors.pipecat.processors import PipecatLLMClient

        return PipecatLLMClient(self)

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        from voxpipe.processors.pipecat import processors

        if self.kind == "llm":
            shared = ctx.shared.get(f"llm:{id(self)}")
            if shared is None:
                raise ProviderError("the LLM was not prepared (call bot.prepare() first)")
            _client, toolbox = shared
            return processors.PipecatLLM(self, toolbox, greeting=ctx.greeting)
        if self.kind == "tts":
            return processors.PipecatTTS(
                self, sample_rate=call.sample_rate, cache=self.phrase_cache(ctx)
            )
        return processors.PipecatProcessor(self, sample_rate=call.sample_rate)


def _role_of(cls: type[Any]) -> str | None:
    for role, base in ROLE_BASES.items():
        if _is_subclass(cls, base):
            return role
    if _is_subclass(cls, "pipecat.processors.frame_processor.FrameProcessor"):
        return "processor"
    return None


def _is_subclass(cls: type[Any], path: str) -> bool:
    from voxpipe.processors.pipecat.args import import_class

    try:
        base = import_class(path)
    except ValueError:
        return False
    return issubclass(cls, base)


def _mask_secrets(args: dict[str, Any]) -> dict[str, Any]:
    from voxpipe.processors.pipecat.args import is_secret

    return {
        name: SecretStr(value) if is_secret(name) and isinstance(value, str) else value
        for name, value in args.items()
    }


def _problems(found: list[tuple[tuple[str, ...], str]]) -> ValidationError:
    """Problems at paths inside the step, as the bot file's loader reports them (each at its
    own line, the argument's name in the path)."""
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError("pipecat", "{message}", {"message": message}),
            "loc": loc,
            "input": None,
        }
        for loc, message in found
    ]
    return ValidationError.from_exception_data("PipecatSettings", details)
