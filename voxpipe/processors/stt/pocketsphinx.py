"""``stt: {provider: pocketsphinx}``: streaming offline speech-to-text with the packaged model.

Partial transcripts stream while the caller speaks (``InterimTranscriptionFrame``) and the final
one comes at the VAD's stop event. Free speech uses the US English model and language model
that the ``pocketsphinx`` wheel ships; for menus and digits a JSGF ``grammar`` or a
``keywords`` list constrains the search and is far more robust on phone audio.

The acoustic model is 16 kHz: audio at another pipeline rate is resampled to 16 kHz (on the
8 kHz phone band this beats decoding natively, which the packaged model's 6.8 kHz filterbank
does not allow anyway).

The decoders live in the bot's model workers (``PocketsphinxEngine``). A decoder holds one
utterance's search, so the utterance is a session: all of its jobs go to the worker holding its
decoder. If that worker dies mid-utterance, the whole utterance (its audio is kept) is decoded
again in one job on another worker when the caller stops; only a second failure loses it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from voxpipe.models.engine import ModelError, STTEngine, WorkerLost
from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.audio import resample_pcm16
from voxpipe.processors.stt.base import LocalSTTProcessor, LocalSTTSettings

if TYPE_CHECKING:
    from voxpipe.models.pool import ModelPool
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext

MODEL_RATE = 16000
SEARCH = "voxpipe"
# Where a call's first utterance starts its cepstral mean normalisation when the caller is on the
# 8 kHz phone band: the mean of the packaged piper voice at 8 kHz, upsampled, through this
# model's front end. The model's own default is a wideband mean, from which streaming decodes
# of phone audio start badly (WER 88 % on the recorded callers, against about 30 %).
PHONE_BAND_CMN = "44.81,32.02,-29.14,25.26,-22.19,2.97,10.06,-27.31,12.58,-5.19,-0.74,8.77,-14.28"


class _Utterance:
    """One utterance being decoded in a worker: its decoder and how audio is cut for it."""

    def __init__(self, decoder: Any, sample_rate: int, chunk_ms: int) -> None:
        self.decoder = decoder
        self.resampler: Any = None
        if sample_rate != MODEL_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(sample_rate, MODEL_RATE, 1, dtype="float32")
        self.block = MODEL_RATE * 2 * chunk_ms // 1000
        self.in_block = sample_rate * self.block // MODEL_RATE // 2 * 2
        self.unresampled = bytearray()
        self.unfed = bytearray()
        self.last = ""

    def feed(self, audio: bytes, last: bool = False) -> None:
        """Resample and decode in blocks of exactly ``chunk_ms``.

        Both the resampler's output and the decoder's running normalisation depend on how the
        audio is cut, so fixed blocks make the transcript independent of how it was batched.
        """
        self.unresampled += audio
        size = self.in_block
        while len(self.unresampled) >= size or (last and self.unresampled):
            block = bytes(self.unresampled[:size])
            del self.unresampled[:size]
            self.unfed += self._resample(block)
        if last:
            self.unfed += self._resample(b"", last=True)
        size = self.block
        while len(self.unfed) >= size or (last and self.unfed):
            block = bytes(self.unfed[:size])
            del self.unfed[:size]
            self.decoder.process_raw(block, False, False)

    def _resample(self, audio: bytes, last: bool = False) -> bytes:
        if self.resampler is None:
            return audio
        import numpy as np

        # soxr dithers (randomly) when it writes int16 itself: resample floats, round here.
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        out = self.resampler.resample_chunk(samples, last=last) * 32768.0
        return bytes(np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes())

    def hypothesis(self) -> str:
        hyp = self.decoder.hyp()
        return " ".join(hyp.hypstr.split()) if hyp is not None else ""


class PocketsphinxEngine(STTEngine):
    """pocketsphinx decoders for one model and search, in a model worker.

    A decoder takes a few hundred milliseconds to build and about 90 MB with the packaged
    language model: idle ones are kept for the next utterance. Each utterance is a session
    (``begin`` ... ``accept`` ... ``finish``, or ``drop``), decoded on its own decoder.
    """

    def __init__(self, options: dict[str, Any], grammar: str | None, keywords: str | None) -> None:
        self.options = options
        self.grammar = grammar
        self.keywords = keywords
        self._idle: list[Any] = []
        self._sessions: dict[str, _Utterance] = {}
        self._kws_file: str | None = None

    @property
    def key(self) -> str:
        search = json.dumps([self.options, self.grammar, self.keywords], sort_keys=True)
        return f"pocketsphinx:{search}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_idle": [], "_sessions": {}, "_kws_file": None}

    def build(self) -> Any:
        """A new decoder with this engine's model and search."""
        from pocketsphinx import Decoder

        decoder = Decoder(**self.options)
        if self.grammar is not None:
            decoder.add_jsgf_string(SEARCH, self.grammar)
            decoder.activate_search(SEARCH)
        elif self.keywords is not None:
            decoder.add_kws(SEARCH, self._keyword_file())
            decoder.activate_search(SEARCH)
        return decoder

    def _keyword_file(self) -> str:
        """The keyword list as the file pocketsphinx reads (written once per worker)."""
        if self._kws_file is None:
            import tempfile

            with tempfile.NamedTemporaryFile(
                "w", prefix="voxpipe-kws-", suffix=".txt", delete=False, encoding="utf-8"
            ) as handle:
                handle.write(self.keywords or "")
            self._kws_file = handle.name
        return self._kws_file

    def load(self) -> None:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:
            raise ProviderError(
                "pocketsphinx: the package is not installed (pip install 'voxpipe[pocketsphinx]')"
            ) from exc
        try:
            self._idle.append(self.build())
        except Exception as exc:
            raise ProviderError(f"pocketsphinx: cannot load the model or search: {exc}") from exc

    def begin(self, session: str, sample_rate: int, cmn: str, chunk_ms: int) -> None:
        """Start decoding an utterance at ``sample_rate`` from the caller's normalisation."""
        decoder = self._idle.pop() if self._idle else self.build()
        utterance = _Utterance(decoder, sample_rate, chunk_ms)
        # Each utterance starts from this caller's channel normalisation, never from whatever
        # call used the decoder before.
        decoder.reinit_feat()
        prior = cmn or (PHONE_BAND_CMN if sample_rate <= 8000 else "")
        if prior:
            decoder.set_cmn(prior)
        decoder.start_utt()
        self._sessions[session] = utterance

    def accept(self, session: str, audio: bytes) -> str | None:
        """Decode more audio; the new partial transcript, if it changed."""
        utterance = self._sessions[session]
        utterance.feed(audio)
        text = utterance.hypothesis()
        if text == utterance.last:
            return None
        utterance.last = text
        return text

    def finish(
        self, session: str, audio: bytes, sample_rate: int, final_pass: bool
    ) -> tuple[str, str]:
        """End the utterance: its final transcript and the caller's normalisation after it.
        With ``final_pass``, ``audio`` (the whole utterance) is decoded once more."""
        utterance = self._sessions.pop(session)
        decoder = utterance.decoder
        try:
            utterance.feed(b"", last=True)
            decoder.end_utt()
            if final_pass and audio:
                if sample_rate != MODEL_RATE:
                    audio = resample_pcm16(audio, sample_rate, MODEL_RATE)
                decoder.reinit_feat()
                decoder.start_utt()
                decoder.process_raw(audio, False, True)
                decoder.end_utt()
            return utterance.hypothesis(), str(decoder.get_cmn())
        finally:
            self._idle.append(decoder)

    def drop(self, session: str) -> None:
        """The call ended mid-utterance: the decoder goes back to the idle ones."""
        utterance = self._sessions.pop(session, None)
        if utterance is not None:
            utterance.decoder.end_utt()
            self._idle.append(utterance.decoder)

    def decode(
        self, audio: bytes, sample_rate: int, cmn: str, chunk_ms: int, final_pass: bool
    ) -> tuple[str, str]:
        """A whole utterance in one job: begin, feed it all, finish."""
        session = "whole"
        self.begin(session, sample_rate, cmn, chunk_ms)
        self._sessions[session].feed(audio)
        return self.finish(session, audio, sample_rate, final_pass)


class DecoderSlots:
    """At most ``limit`` utterances of a bot decoded at once (one decoder each, about 90 MB
    with the packaged language model); the next caller to speak waits for a slot (its audio
    is kept and decoded when it gets one), so memory stays bounded however many speak."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self) -> None:
        await self._slots.acquire()
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._slots.release()


class PocketsphinxSettings(LocalSTTSettings):
    """Offline streaming speech-to-text with pocketsphinx; grammars for menus and digits."""

    provider: Literal["pocketsphinx"] = Field(description="Speech-to-text engine.")
    model: str | None = Field(
        None, description="Acoustic model directory (default: the packaged US English model)."
    )
    dictionary: str | None = Field(
        None, description="Pronunciation dictionary file (default: the packaged CMUdict)."
    )
    language_model: str | None = Field(
        None, description="N-gram language model file (default: the packaged US English one)."
    )
    grammar: str | None = Field(
        None,
        description="JSGF grammar limiting what the caller can say: a .gram file path, or the "
        "grammar itself (text starting with '#JSGF').",
    )
    keywords: list[str] | None = Field(
        None, description="Spot only these words or phrases (menus), instead of free speech."
    )
    keyword_threshold: float = Field(
        1e-20, gt=0, lt=1, description="Detection threshold of each keyword (lower: more hits)."
    )
    chunk_ms: int = Field(
        100, ge=20, le=1000, description="Audio fed to the decoder per step while streaming."
    )
    decoders: int = Field(
        4,
        ge=1,
        le=256,
        description="Most utterances decoded at once across the bot's calls (one decoder each, "
        "about 90 MB with the packaged language model); more wait for a free decoder.",
    )
    final_pass: bool = Field(
        False,
        description="Decode the whole utterance again when the caller stops, normalised over "
        "itself: far fewer errors on 8 kHz phone audio, but the final transcript then comes "
        "a third to a half of the utterance's length later (see docs/benchmarks.md).",
    )

    @model_validator(mode="after")
    def _one_search(self) -> PocketsphinxSettings:
        if self.grammar is not None and self.keywords is not None:
            raise ValueError("give either grammar or keywords, not both")
        if self.keywords is not None and not [k for k in self.keywords if k.strip()]:
            raise ValueError("keywords must name at least one word")
        return self

    def _grammar_text(self) -> str | None:
        if self.grammar is None:
            return None
        if self.grammar.lstrip().startswith("#JSGF"):
            return self.grammar
        path = Path(self.grammar).expanduser()
        if not path.is_file():
            raise ProviderError(f"pocketsphinx: grammar file {path} not found")
        return path.read_text(encoding="utf-8")

    def _keyword_text(self) -> str | None:
        if self.keywords is None:
            return None
        return "".join(f"{k.strip().lower()} /{self.keyword_threshold:g}/\n" for k in self.keywords)

    def engine(self) -> PocketsphinxEngine:
        options: dict[str, Any] = {"loglevel": "ERROR", "samprate": MODEL_RATE}
        for name, value in (
            ("hmm", self.model),
            ("dict", self.dictionary),
            ("lm", self.language_model),
        ):
            if value is not None:
                path = Path(value).expanduser()
                if not path.exists():
                    raise ProviderError(f"pocketsphinx: {name} {path} not found")
                options[name] = str(path)
        return PocketsphinxEngine(options, self._grammar_text(), self._keyword_text())

    def sample_job(self, audio: bytes, sample_rate: int) -> tuple[str, tuple[Any, ...]]:
        return "decode", (audio, sample_rate, "", self.chunk_ms, self.final_pass)

    def processor(
        self, call: Call, ctx: BotContext, models: ModelPool, key: str
    ) -> LocalSTTProcessor:
        slots = ctx.shared.get(f"pocketsphinx-slots:{key}")
        if not isinstance(slots, DecoderSlots):
            slots = ctx.shared[f"pocketsphinx-slots:{key}"] = DecoderSlots(self.decoders)
        return PocketsphinxSTT(self, key, slots, sample_rate=call.sample_rate, models=models)


class PocketsphinxSTT(LocalSTTProcessor):
    """Streams the caller's utterance to a pocketsphinx decoder in a model worker."""

    provider: ClassVar[str] = "pocketsphinx"
    streaming: ClassVar[bool] = True

    __slots__ = ("_chunk", "_cmn", "_final_pass", "_key", "_lost", "_session", "_slots")

    _counter = itertools.count()

    def __init__(
        self,
        settings: PocketsphinxSettings,
        key: str,
        slots: DecoderSlots,
        *,
        sample_rate: int,
        models: ModelPool,
    ) -> None:
        super().__init__(
            settings, sample_rate=sample_rate, models=models, chunk_ms=settings.chunk_ms
        )
        self._key = key
        self._chunk = settings.chunk_ms
        self._final_pass = settings.final_pass
        self._slots = slots
        self._cmn = ""
        self._session: str | None = None
        self._lost = False

    async def open_utterance(self) -> None:
        await self._slots.acquire()
        self._session = f"{self.call.call_id}:{next(self._counter)}"
        self._lost = False

    async def close_utterance(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self.models.release(session)
            self._slots.release()

    async def stop(self) -> None:
        # The call ended mid-utterance: the worker gives the decoder back to its idle ones.
        session, self._session = self._session, None
        if session is not None:
            if not self._lost:
                self.models.submit(self._key, "drop", session, affinity=session)
            self.models.release(session)
            self._slots.release()

    async def begin(self, sample_rate: int) -> None:
        await self._session_job("begin", sample_rate, self._cmn, self._chunk)

    async def accept(self, audio: bytes, sample_rate: int) -> str | None:
        partial: str | None = await self._session_job("accept", audio)
        return partial

    async def finish(self, utterance: bytes, sample_rate: int) -> str:
        if not self._lost:
            done = await self._session_job("finish", utterance, sample_rate, self._final_pass)
            if done is not None:
                self._cmn = done[1]
                return str(done[0])
        # The worker holding the decoder died: decode the whole utterance again, elsewhere.
        self.call.log.warning("pocketsphinx: decoding the utterance again after a worker died")
        text, self._cmn = await self.models.run(
            self._key, "decode", utterance, sample_rate, self._cmn, self._chunk, self._final_pass
        )
        return str(text)

    async def _session_job(self, method: str, *args: Any) -> Any:
        """A job of the current utterance on its decoder's worker (None once that died)."""
        if self._lost or self._session is None:
            return None
        try:
            return await self.models.run(
                self._key, method, self._session, *args, affinity=self._session
            )
        except WorkerLost:
            self._lost = True
            return None
        except ModelError:
            if method == "finish":
                raise
            self._lost = True
            return None
