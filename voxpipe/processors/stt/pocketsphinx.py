"""``stt: {provider: pocketsphinx}``: streaming offline speech-to-text with the packaged model.

Partial transcripts stream while the caller speaks (``InterimTranscriptionFrame``) and the final
one comes at the VAD's stop event. Free speech uses the US English model and language model
that the ``pocketsphinx`` wheel ships; for menus and digits a JSGF ``grammar`` or a
``keywords`` list constrains the search and is far more robust on phone audio.

The acoustic model is 16 kHz: audio at another pipeline rate is resampled to 16 kHz (on the
8 kHz phone band this beats decoding natively, which the packaged model's 6.8 kHz filterbank
does not allow anyway).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.stt.base import LocalSTTProcessor, LocalSTTSettings
from voxpipe.processors.tts.base import resample_pcm16

MODEL_RATE = 16000
SEARCH = "voxpipe"
# Where a call's first utterance starts its cepstral mean normalisation when the caller is on the
# 8 kHz phone band: the mean of the packaged piper voice at 8 kHz, upsampled, through this
# model's front end. The model's own default is a wideband mean, from which streaming decodes
# of phone audio start badly (WER 88 % on the recorded callers, against about 30 %).
PHONE_BAND_CMN = "44.81,32.02,-29.14,25.26,-22.19,2.97,10.06,-27.31,12.58,-5.19,-0.74,8.77,-14.28"


class DecoderPool:
    """At most ``limit`` pocketsphinx decoders for one configuration, lent one per utterance.

    A decoder holds per-utterance search state, takes a few hundred milliseconds to build and
    about 90 MB with the packaged language model, so calls borrow one for the length of an
    utterance. When all are lent, the next utterance waits for one (its audio is kept and
    decoded when it gets one): memory stays bounded however many callers speak at once.
    """

    def __init__(
        self, options: dict[str, Any], grammar: str | None, keywords: str | None, limit: int
    ) -> None:
        self._options = options
        self._grammar = grammar
        self._keywords = keywords
        self._free: list[Any] = []
        self._slots = asyncio.Semaphore(limit)

    def build(self) -> Any:
        """A new decoder with this pool's model and search (blocking)."""
        from pocketsphinx import Decoder

        decoder = Decoder(**self._options)
        if self._grammar is not None:
            decoder.add_jsgf_string(SEARCH, self._grammar)
            decoder.activate_search(SEARCH)
        elif self._keywords is not None:
            decoder.add_kws(SEARCH, self._keywords)
            decoder.activate_search(SEARCH)
        return decoder

    @property
    def idle(self) -> int:
        """How many built decoders wait for an utterance."""
        return len(self._free)

    def keep(self, decoder: Any) -> None:
        """Add an idle decoder built outside the pool (at prepare time)."""
        self._free.append(decoder)

    async def acquire(self, executor: concurrent.futures.Executor) -> Any:
        """A free decoder, a new one built in ``executor``, or the next one given back."""
        await self._slots.acquire()
        if self._free:
            return self._free.pop()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, self.build)
        except BaseException:
            self._slots.release()
            raise

    def release(self, decoder: Any | None) -> None:
        """Give a decoder back after its utterance (``None``: it was lost mid-utterance)."""
        if decoder is not None:
            self._free.append(decoder)
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
        "a third to a half of the utterance's length later (see README, Offline speech).",
    )

    @model_validator(mode="after")
    def _one_search(self) -> PocketsphinxSettings:
        if self.grammar is not None and self.keywords is not None:
            raise ValueError("give either grammar or keywords, not both")
        if self.keywords is not None and not [k for k in self.keywords if k.strip()]:
            raise ValueError("keywords must name at least one word")
        return self

    @property
    def shared_key(self) -> str:
        """Steps with the same model and search share one decoder pool."""
        per_call = {"language", "preroll_ms", "chunk_ms", "final_pass", "max_utterance_s"}
        return f"pocketsphinx:{self.model_dump_json(exclude=per_call)}"

    def _grammar_text(self) -> str | None:
        if self.grammar is None:
            return None
        if self.grammar.lstrip().startswith("#JSGF"):
            return self.grammar
        path = Path(self.grammar).expanduser()
        if not path.is_file():
            raise ProviderError(f"pocketsphinx: grammar file {path} not found")
        return path.read_text(encoding="utf-8")

    def _keyword_file(self) -> str | None:
        if self.keywords is None:
            return None
        import tempfile

        lines = "".join(
            f"{k.strip().lower()} /{self.keyword_threshold:g}/\n" for k in self.keywords
        )
        with tempfile.NamedTemporaryFile(
            "w", prefix="voxpipe-kws-", suffix=".txt", delete=False, encoding="utf-8"
        ) as handle:
            handle.write(lines)
        return handle.name

    def load(self) -> DecoderPool:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:
            raise ProviderError(
                "pocketsphinx: the package is not installed (pip install 'voxpipe[pocketsphinx]')"
            ) from exc
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
        pool = DecoderPool(options, self._grammar_text(), self._keyword_file(), self.decoders)
        try:
            pool.keep(pool.build())
        except Exception as exc:
            raise ProviderError(f"pocketsphinx: cannot load the model or search: {exc}") from exc
        return pool

    def engine(
        self, loaded: Any, sample_rate: int, executor: concurrent.futures.Executor
    ) -> LocalSTTProcessor:
        return PocketsphinxSTT(loaded, self, sample_rate=sample_rate, executor=executor)


class PocketsphinxSTT(LocalSTTProcessor):
    """Streams the caller's utterance through a pocketsphinx decoder borrowed from the pool."""

    provider: ClassVar[str] = "pocketsphinx"
    streaming: ClassVar[bool] = True

    __slots__ = (
        "_block",
        "_cmn",
        "_decoder",
        "_final_pass",
        "_in_block",
        "_last",
        "_pool",
        "_resampler",
        "_unfed",
        "_unresampled",
    )

    def __init__(
        self,
        pool: DecoderPool,
        settings: PocketsphinxSettings,
        *,
        sample_rate: int,
        executor: concurrent.futures.Executor,
    ) -> None:
        super().__init__(
            settings, sample_rate=sample_rate, executor=executor, chunk_ms=settings.chunk_ms
        )
        self._final_pass = settings.final_pass
        self._block = MODEL_RATE * 2 * settings.chunk_ms // 1000
        self._in_block = self._block
        self._unresampled = bytearray()
        self._unfed = bytearray()
        self._cmn = ""
        self._pool = pool
        self._decoder: Any = None
        self._resampler: Any = None
        self._last = ""

    async def open_utterance(self) -> None:
        self._decoder = await self._pool.acquire(self._executor)

    async def close_utterance(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            self._pool.release(decoder)

    async def stop(self) -> None:
        # The call ended mid-utterance: a decode may still run on the decoder, so it is not
        # given back for reuse, only its place in the pool.
        if self._decoder is not None:
            self._decoder = None
            self._pool.release(None)

    def begin(self, sample_rate: int) -> None:
        self._resampler = None
        if sample_rate != MODEL_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, MODEL_RATE, 1, dtype="float32")
        self._last = ""
        self._in_block = sample_rate * self._block // MODEL_RATE // 2 * 2
        self._unresampled = bytearray()
        self._unfed = bytearray()
        # Each utterance starts from this caller's channel normalisation, never from whatever
        # call used the pooled decoder before.
        self._decoder.reinit_feat()
        prior = self._cmn or (PHONE_BAND_CMN if sample_rate <= 8000 else "")
        if prior:
            self._decoder.set_cmn(prior)
        self._decoder.start_utt()

    def _feed(self, audio: bytes, last: bool = False) -> None:
        """Resample and decode in blocks of exactly ``chunk_ms``.

        Both the resampler's output and the decoder's running normalisation depend on how the
        audio is cut, so fixed blocks make the transcript independent of how it was batched.
        """
        self._unresampled += audio
        size = self._in_block
        while len(self._unresampled) >= size or (last and self._unresampled):
            block = bytes(self._unresampled[:size])
            del self._unresampled[:size]
            self._unfed += self._resample(block)
        if last:
            self._unfed += self._resample(b"", last=True)
        size = self._block
        while len(self._unfed) >= size or (last and self._unfed):
            block = bytes(self._unfed[:size])
            del self._unfed[:size]
            self._decoder.process_raw(block, False, False)

    def _resample(self, audio: bytes, last: bool = False) -> bytes:
        if self._resampler is None:
            return audio
        import numpy as np

        # soxr dithers (randomly) when it writes int16 itself: resample floats, round here.
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        out = self._resampler.resample_chunk(samples, last=last) * 32768.0
        return bytes(np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes())

    def _hypothesis(self) -> str:
        hyp = self._decoder.hyp()
        return " ".join(hyp.hypstr.split()) if hyp is not None else ""

    def accept(self, audio: bytes, sample_rate: int) -> str | None:
        if self._decoder is None:
            return None
        self._feed(audio)
        text = self._hypothesis()
        if text == self._last:
            return None
        self._last = text
        return text

    def finish(self, utterance: bytes, sample_rate: int) -> str:
        decoder = self._decoder
        if decoder is None:
            return ""
        self._feed(b"", last=True)
        decoder.end_utt()
        if self._final_pass and utterance:
            if sample_rate != MODEL_RATE:
                utterance = resample_pcm16(utterance, sample_rate, MODEL_RATE)
            decoder.reinit_feat()
            decoder.start_utt()
            decoder.process_raw(utterance, False, True)
            decoder.end_utt()
        self._cmn = decoder.get_cmn()
        return self._hypothesis()
