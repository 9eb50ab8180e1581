"""What ``asr-stream serve`` counts, for ``GET /metrics`` in the Prometheus text format (``prometheus_client``).

One registry per server (a process may run several, as the tests do). Names and labels are in docs/protocol.md
("Health and metrics"). Counters are updated on the event loop, the tick histogram from it too; the gauges of
streams are read from the server when scraped.
"""

from __future__ import annotations

from typing import Callable

REFUSALS = ("unauthorized", "per_address", "request_timeout", "busy", "start_timeout", "protocol", "frame_too_big", "idle",
            "slow_reader", "internal", "draining")
"""Why the server refused or closed a WebSocket connection, or a connection before its first request (``per_address``,
``request_timeout``: :mod:`asr_stream.serving.gate`); every reason is exported, from 0."""
KINDS = ("live", "upload")
TICK_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.32, 0.5, 1.0, 2.0, 5.0, 10.0)
LAG_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    """The server's Prometheus metrics, in their own registry."""

    def __init__(self, streams: Callable[[str], int]) -> None:
        """``streams(kind)``: engine slots in use by live connections or uploads, read at each scrape."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.connections = Gauge("asr_stream_connections", "Open WebSocket connections.", registry=r)
        self.streams = Gauge("asr_stream_streams", "Engine slots in use (kind: live WebSocket streams or uploads).",
                             ["kind"], registry=r)
        self.audio = Counter("asr_stream_audio_seconds", "Seconds of audio received (at 16 kHz), by kind.", ["kind"],
                             registry=r)
        self.words = Counter("asr_stream_words", "Words sent to clients (partial events; uploads: in answers), by kind.",
                             ["kind"], registry=r)
        self.tick = Histogram("asr_stream_tick_seconds", "Wall time of one engine tick (one batched drain).",
                              buckets=TICK_BUCKETS, registry=r)
        self.lag = Histogram("asr_stream_lag_seconds", "lag_ms of live streams' partial and final events: the wall time "
                             "from the arrival of the audio an event needed to the event.", buckets=LAG_BUCKETS, registry=r)
        self.refusals = Counter("asr_stream_refusals", "WebSocket connections refused or closed by the server (and "
                                "requests without a valid key, connections refused or timed out before their first "
                                "request), by reason.", ["reason"], registry=r)
        self.requests = Counter("asr_stream_rest_requests", "POST /v1/audio/transcriptions answers, by HTTP status.",
                                ["status"], registry=r)
        for kind in KINDS:
            self.streams.labels(kind).set_function(lambda kind=kind: streams(kind))
            self.audio.labels(kind)
            self.words.labels(kind)
        for reason in REFUSALS:
            self.refusals.labels(reason)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format the scraper's Accept header asks for (Prometheus text, or OpenMetrics) and
        its content type (prometheus_client's own negotiation)."""
        from prometheus_client.exposition import choose_encoder

        encode, ctype = choose_encoder(accept)
        return encode(self.registry), ctype


__all__ = ["KINDS", "Metrics", "REFUSALS"]
