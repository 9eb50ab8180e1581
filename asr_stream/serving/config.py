"""The limits of one ``asr-stream serve`` (:class:`ServerConfig`): checked once, at start, with one-line errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ServerConfig:
    """Limits of one server. Times in seconds, sizes in bytes."""

    max_clients: int = 8
    """Concurrent streams (engine slots); one more gets a ``busy`` error at once."""
    max_session_s: float = 3600.0
    """Audio per connection, in seconds; at the limit the server stops reading, finishes decoding and closes."""
    idle_timeout_s: float = 30.0
    """The idle rule's window: a connection that sent less than ``min_audio_s`` of audio in the last this many seconds
    gets an error and is closed (time the server is not reading it, under back-pressure, does not count)."""
    min_audio_s: float = 1.0
    """Least audio per ``idle_timeout_s`` window, in seconds (a trickle of bytes does not hold a slot)."""
    max_backlog_s: float = 5.0
    """Audio received from one connection and not yet taken by the engine, in seconds. Above it the server stops
    reading that connection (TCP pushes back on the client) until the engine has taken enough: a client that sends
    faster than real time waits for its own audio and nobody else's, and its memory stays bounded."""
    max_per_address: int = 8
    """Open connections from one remote address (0: no limit); one more gets a ``busy`` error at once."""
    share_ms: Optional[float] = None
    """Most audio one stream gives each engine tick, in ms (None: two ticks' worth, at least two chunks). A stream
    with more waiting is decoded a share per tick beside the others, so a backlog delays nobody else by more than
    the cost of one share; the engine ticks again at once while any stream has audio waiting."""
    max_frame_bytes: int = 1 << 20
    """Largest binary frame accepted (1 MiB = 16 s of 16 kHz int16); larger: error, closed."""
    send_queue: int = 256
    """Events waiting for one client's socket; a client that lets more pile up (a slow reader) is disconnected."""
    start_timeout_s: float = 10.0
    """Time a new connection has to send its request head (else 408, :mod:`asr_stream.serving.gate`), and a WebSocket
    its start message."""
    tick_ms: Optional[float] = None
    """Least time between the starts of two engine ticks (None: the model's chunk length). Audio that arrives
    meanwhile waits, so streams whose chunks complete at different moments step together: one batched step for
    all of them, and cache columns shared instead of one stream's slots padded into every other row. The price is
    up to one tick of added latency when the server is idle. 0: tick as soon as anything arrives."""
    threads: int = 1
    """CPU threads for the encoder's call of a tick (every stream's next chunk at once)."""
    decoder_threads: int = 1
    """CPU threads for the decoder's steps (set in the engine thread at every tick: OpenMP counts are per thread)."""
    max_upload_mb: float = 25.0
    """Largest file accepted by ``POST /v1/audio/transcriptions``, in MB (10^6 bytes; OpenAI's limit is 25 MB).
    A larger body is refused with 413 as soon as the limit is passed (or at once, from its Content-Length)."""
    max_uploads: int = 2
    """Uploads decoded at once (each holds one engine slot, of ``max_clients``); one more gets 429 at once."""
    drain_s: float = 30.0
    """On SIGTERM: how long open streams may go on to the end of their current utterance before they are ended (what
    was received is still decoded and sent); uploads still running then get 503."""

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise ValueError(f"--max-clients must be >= 1, got {self.max_clients}")
        for name in ("max_session_s", "idle_timeout_s", "start_timeout_s", "min_audio_s", "max_backlog_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v!r}")
        if self.min_audio_s > self.idle_timeout_s:
            raise ValueError(f"--min-audio-s ({self.min_audio_s:g}) must be at most --idle-timeout-s ({self.idle_timeout_s:g})")
        if isinstance(self.max_per_address, bool) or not isinstance(self.max_per_address, int) or self.max_per_address < 0:
            raise ValueError(f"--max-per-address must be a whole number >= 0 (0: no limit), got {self.max_per_address!r}")
        if self.share_ms is not None and not (math.isfinite(self.share_ms) and self.share_ms > 0):
            raise ValueError(f"share_ms must be a finite number > 0, got {self.share_ms!r}")
        if self.tick_ms is not None and not (math.isfinite(self.tick_ms) and 0 <= self.tick_ms <= 10_000):
            raise ValueError(f"tick_ms must be from 0 to 10000, got {self.tick_ms!r}")
        for name in ("threads", "decoder_threads"):
            v = getattr(self, name)
            if not (isinstance(v, int) and 1 <= v <= 1024):
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(f"--max-upload-mb must be a finite number > 0, got {self.max_upload_mb!r}")
        if isinstance(self.max_uploads, bool) or not isinstance(self.max_uploads, int) or self.max_uploads < 0:
            raise ValueError(f"--max-uploads must be a whole number >= 0 (0: no uploads), got {self.max_uploads!r}")
        if not (math.isfinite(self.drain_s) and self.drain_s >= 0):
            raise ValueError(f"--drain-s must be a finite number >= 0, got {self.drain_s!r}")
        if self.max_frame_bytes < 1024 or self.send_queue < 1:
            raise ValueError("max_frame_bytes must be >= 1024 and send_queue >= 1")


__all__ = ["ServerConfig"]
