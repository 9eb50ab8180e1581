"""What keeps one connection of ``asr-stream serve`` from costing the others (docs/protocol.md, "Fairness").

- :func:`take_share`: each engine tick gives a stream at most one share of its waiting audio, so a client that
  sends faster than real time is decoded a share per tick, beside everyone else, instead of to the end of its
  backlog first.
- :class:`AudioRate`: the audio-based idle rule. A connection that sent less than ``min_audio_s`` of audio in the
  last ``window_s`` seconds is closed (frames of two bytes every few seconds keep a socket busy, not a stream).
- :class:`AddressCount`: open connections per remote address, against ``--max-per-address``.

Back-pressure (the server stops reading from a connection whose waiting audio passes ``--max-backlog-s``) lives in
the server's connection handler; these are the pieces it uses. All of them are synchronous and take the time from
the caller, so the rules are tested without waiting.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..audio.io import SAMPLE_RATE


def take_share(inbox: list[np.ndarray], n: int) -> tuple[list[np.ndarray], int]:
    """Remove up to ``n`` samples from the front of ``inbox`` (a list of arrays, in order, changed in place); return
    them (in order, the last one maybe a part of an array) and their count. The rest stays for the next tick."""
    out, got = [], 0
    while inbox and got < n:
        x = inbox[0]
        if got + x.shape[0] <= n:
            out.append(inbox.pop(0))
            got += x.shape[0]
        else:
            out.append(x[: n - got])
            inbox[0] = x[n - got :]
            got = n
    return out, got


class AudioRate:
    """The idle rule of one connection: at least ``min_audio_s`` of audio in every ``window_s`` seconds.

    Audio counts when it is received (after resampling to 16 kHz, so seconds are seconds at any rate). The window
    slides: at any moment ``t`` at least ``window_s`` after :meth:`restart`, the audio received in ``(t - window_s, t]``
    must be at least ``min_audio_s``, else :meth:`why` says so. A client that sends nothing is therefore closed
    ``window_s`` after its last audio (the old "nothing received" timeout), and one that sends a trickle is closed too.
    Arrivals are kept in ``buckets`` time slots per window (memory is bounded whatever the frame rate); audio is
    counted at the end of its slot, which errs towards keeping a connection (by at most one slot).
    """

    def __init__(self, min_audio_s: float, window_s: float, now: float, buckets: int = 64) -> None:
        if not (0 < min_audio_s <= window_s):
            raise ValueError(f"need 0 < min_audio_s <= window_s, got {min_audio_s!r} and {window_s!r}")
        self.min_samples = int(math.ceil(min_audio_s * SAMPLE_RATE))
        self.min_audio_s, self.window_s, self.slot = min_audio_s, window_s, window_s / buckets
        self.restart(now, 0)

    def restart(self, now: float, samples: int) -> None:
        """Start a fresh window at ``now`` with ``samples`` received so far (a new connection; reading resumed after
        back-pressure: time the server did not read is not the client's)."""
        self.start, self.base = now, samples  # cumulative samples as of the window's start
        self.total = samples
        self.arrivals: list[tuple[float, int]] = []  # (slot end time, cumulative samples received by then)

    def add(self, now: float, samples: int) -> None:
        """``samples``: the connection's cumulative 16 kHz samples received, as of ``now``."""
        if samples <= self.total:
            return
        self.total = samples
        t = (math.floor(now / self.slot) + 1) * self.slot
        if self.arrivals and self.arrivals[-1][0] >= t:
            self.arrivals[-1] = (self.arrivals[-1][0], samples)
        else:
            self.arrivals.append((t, samples))
        while self.arrivals and self.arrivals[0][0] <= now - self.window_s:  # out of every future window
            self.start, self.base = max(self.start, self.arrivals[0][0]), self.arrivals[0][1]
            self.arrivals.pop(0)

    def deadline(self) -> float:
        """When the rule fails if no more audio comes."""
        need = self.total - self.min_samples  # the window must begin at or after the point where this much had come
        if self.base > need:
            return self.start + self.window_s
        for t, cum in self.arrivals:
            if cum > need:
                return max(self.start, t) + self.window_s
        return math.inf  # (not reached: the last arrival's count is the total)

    def why(self, now: float) -> Optional[str]:
        """None while the rule holds at ``now``; else the one-line reason to close."""
        if now < self.deadline():
            return None
        got = (self.total - self._count_at(now - self.window_s)) / SAMPLE_RATE
        if got <= 0:
            return f"idle: no audio received for {self.window_s:g} s"
        amount = f"{got:.2f} s" if got >= 0.01 else "less than 0.01 s"
        return (f"idle: {amount} of audio received in the last {self.window_s:g} s, less than the minimum of "
                f"{self.min_audio_s:g} s (stream audio continuously, silence included)")

    def _count_at(self, t: float) -> int:
        n = self.base
        for at, cum in self.arrivals:
            if at > t:
                break
            n = cum
        return n


class AddressCount:
    """Open connections per remote address; ``limit`` 0: no limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and not counted) when it already has ``limit``."""
        n = self.open.get(address, 0)
        if self.limit and n >= self.limit:
            return False
        self.open[address] = n + 1
        return True

    def leave(self, address: str) -> None:
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)


__all__ = ["AddressCount", "AudioRate", "take_share"]
