"""Prometheus metrics, fed by the process-wide call events (``voxpipe.events``).

``Metrics`` is an ``Observer``: subscribe it and every call event updates a counter, gauge or
histogram. Each instance owns its ``CollectorRegistry`` (not prometheus-client's global one), so
tests, several bots and several workers never collide. With ``serve --workers N`` each worker
exports its own figures on its own HTTP port; Prometheus sums them across scrape targets.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from voxpipe.events import Observer

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call

CONTENT_TYPE = CONTENT_TYPE_LATEST

CALL_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

_LABEL = re.compile(r"[^a-z0-9_]+")
# Refusals of callers the bot could not take (rather than connections it must not take).
REFUSED = frozenset({"max_calls", "draining"})


def label(text: str) -> str:
    """A bounded label from a free-form reason: ``"error: tts: timeout"`` -> ``error``.

    Reasons may carry details after a colon (the failing processor, a count); only the part
    before it becomes a label, so the number of time series stays small.
    """
    head = re.split(r"[:(]", text.strip().lower(), maxsplit=1)[0]
    return _LABEL.sub("_", head).strip("_")[:40] or "unknown"


class Metrics(Observer):
    """Counts calls, turns, provider latency and failures for the ``/metrics`` endpoint."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter("voxpipe_calls", "Calls accepted.", ["bot"], registry=r)
        self.active = Gauge("voxpipe_calls_active", "Calls in progress.", ["bot"], registry=r)
        self.rejected = Counter(
            "voxpipe_calls_rejected", "Connections refused, by reason.", ["reason"], registry=r
        )
        self.refused = Counter(
            "voxpipe_calls_refused",
            "Calls turned away because the bot was full (max_calls) or draining.",
            ["reason"],
            registry=r,
        )
        self.ended = Counter(
            "voxpipe_calls_ended", "Calls ended, by reason.", ["bot", "reason"], registry=r
        )
        self.call_seconds = Histogram(
            "voxpipe_call_duration_seconds",
            "Call duration.",
            ["bot"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.turn_seconds = Histogram(
            "voxpipe_turn_latency_seconds",
            "From the end of the caller's speech to the bot's first audio.",
            ["bot"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "voxpipe_provider_ttfb_seconds",
            "Time to first byte of a speech-to-text, LLM or text-to-speech request.",
            ["kind", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turns_lost = Counter(
            "voxpipe_turns_lost",
            "Caller utterances that will never be answered (a failed speech-to-text).",
            ["bot", "reason"],
            registry=r,
        )
        self.late_replies = Counter(
            "voxpipe_late_replies",
            "Turns whose reply was late, so the bot said its filler.",
            ["bot"],
            registry=r,
        )
        self.barge_ins = Counter(
            "voxpipe_barge_ins", "Times the caller interrupted the bot.", ["bot"], registry=r
        )
        self.silence_hangups = Counter(
            "voxpipe_silence_hangups",
            "Calls the bot ended on a silent caller.",
            ["bot"],
            registry=r,
        )
        self.errors = Counter("voxpipe_errors", "Failures, by kind.", ["kind"], registry=r)
        self.records_dropped_total = Counter(
            "voxpipe_records_dropped",
            "Call records dropped: the database was away longer than the buffer lasted.",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # --- events ------------------------------------------------------------------------------

    def call_started(self, call: Call) -> None:
        self.calls.labels(call.bot).inc()
        self.active.labels(call.bot).inc()
        # Shown at 0 from the first call, so that an alert on them has a series to watch.
        self.turns_lost.labels(call.bot, "stt")
        self.late_replies.labels(call.bot)

    def call_ended(self, call: Call, reason: str) -> None:
        self.active.labels(call.bot).dec()
        self.ended.labels(call.bot, label(reason)).inc()
        self.call_seconds.labels(call.bot).observe(call.duration_s)

    def call_rejected(self, reason: str) -> None:
        reason = label(reason)
        self.rejected.labels(reason).inc()
        if reason in REFUSED:
            self.refused.labels(reason).inc()

    def turn_latency(self, call: Call, seconds: float) -> None:
        self.turn_seconds.labels(call.bot).observe(seconds)

    def turn_lost(self, call: Call, reason: str) -> None:
        self.turns_lost.labels(call.bot, label(reason)).inc()

    def reply_late(self, call: Call) -> None:
        self.late_replies.labels(call.bot).inc()

    def provider_ttfb(self, call: Call, kind: str, provider: str, seconds: float) -> None:
        self.ttfb.labels(kind, provider).observe(seconds)

    def barge_in(self, call: Call) -> None:
        self.barge_ins.labels(call.bot).inc()

    def silence_hangup(self, call: Call) -> None:
        self.silence_hangups.labels(call.bot).inc()

    def error(self, call: Call | None, kind: str) -> None:
        self.errors.labels(label(kind)).inc()

    def records_dropped(self, count: int) -> None:
        self.records_dropped_total.inc(count)
