"""``stt``: speech-to-text. One settings model per provider, chosen by the ``provider`` key.

To add a provider, add its settings model (a ``provider: Literal["name"]`` field) to the union.
"""

from typing import Annotated

from pydantic import Field

from voxpipe.processors.stt.google import GoogleSTTSettings
from voxpipe.processors.stt.openai_compatible import OpenAICompatibleSTTSettings
from voxpipe.processors.stt.pocketsphinx import PocketsphinxSettings
from voxpipe.processors.stt.whisper import WhisperSettings

STTSettings = Annotated[
    WhisperSettings | PocketsphinxSettings | GoogleSTTSettings | OpenAICompatibleSTTSettings,
    Field(discriminator="provider"),
    "Speech-to-text: turns the caller's utterances into text.",
]

__all__ = [
    "GoogleSTTSettings",
    "OpenAICompatibleSTTSettings",
    "PocketsphinxSettings",
    "STTSettings",
    "WhisperSettings",
]
