"""``tts``: text-to-speech. One settings model per provider, chosen by the ``provider`` key.

To add a provider, add its settings model (a ``provider: Literal["name"]`` field) to the union.
``offline_say`` speaks text with the packaged piper voice, for tools like the simulated caller.
"""

from typing import Annotated

from pydantic import Field

from voxpipe.processors.tts.espeak import EspeakSettings
from voxpipe.processors.tts.google import GoogleTTSSettings
from voxpipe.processors.tts.openai_compatible import OpenAICompatibleTTSSettings
from voxpipe.processors.tts.packaged import offline_say
from voxpipe.processors.tts.piper import PiperSettings
from voxpipe.processors.tts.tone import ToneSettings

TTSSettings = Annotated[
    PiperSettings | EspeakSettings | ToneSettings | GoogleTTSSettings | OpenAICompatibleTTSSettings,
    Field(discriminator="provider"),
    "Text-to-speech: speaks the bot's replies, sentence by sentence.",
]

__all__ = [
    "EspeakSettings",
    "GoogleTTSSettings",
    "OpenAICompatibleTTSSettings",
    "PiperSettings",
    "TTSSettings",
    "ToneSettings",
    "offline_say",
]
