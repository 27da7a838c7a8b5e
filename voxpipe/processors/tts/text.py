"""Text as a voice speaks it: complete sentences, and whether there is anything to say."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (with closing quotes or brackets) followed by a space, or at a newline.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n+")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e"})


def split_sentences(text: str) -> tuple[list[str], str]:
    """Cut ``text`` into its complete sentences and the unfinished rest."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        words = text[start : match.start()].split()
        if words and words[-1].lower().rstrip(".") in _ABBREVIATIONS and "\n" not in match.group():
            continue
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    return sentences, text[start:]


def speakable(text: str) -> bool:
    """Whether ``text`` has anything to pronounce (not only punctuation or spaces)."""
    return any(ch.isalnum() for ch in text)
