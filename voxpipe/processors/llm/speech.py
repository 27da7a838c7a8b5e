"""Speech bookkeeping: one stretch of the bot's speech (the greeting or a reply), the sentences
text-to-speech made of it, and its history entry, which keeps what the caller heard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voxpipe.frames import Utterance


@dataclass(slots=True, eq=False)
class Speech:
    """One stretch of bot speech (the greeting or a reply) and its history entry."""

    entry: dict[str, Any]
    utterances: list[Utterance] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    lost: bool = False
    seq: int = 0
    answers: bool = False  # a reply to the caller (not the greeting or a standby line)

    def heard(self) -> bool:
        """Whether any of it has reached the caller."""
        return any(u.frames_played > 0 for u in self.utterances)

    def add(self, text: str) -> None:
        if not self.lost:
            self.entry["content"] += text

    def lose(self) -> None:
        """Text-to-speech lost a sentence and drops what follows: keep what became audio."""
        self.lost = True
        self.entry["content"] = " ".join(u.text for u in self.utterances if u.text)

    def settle(self) -> None:
        """After an interruption: keep only what the caller heard."""
        heard = (u.spoken_text() for u in self.utterances)
        self.entry["content"] = " ".join(t for t in heard if t)
