"""The one push loop: audio blocks in, a session's words out.

:class:`Driver` makes one step at a time on a session (a :class:`~asr_stream.streaming.StreamingSession` or a
:class:`~asr_stream.streaming.segment.SegmentedSession`, anything with ``push(samples)`` and ``finish()``); each
step

- takes the block as 16 kHz mono float32 (an empty block is no step),
- counts its time as compute (time inside the session only: a paced source's waits are not compute), and the
  compute so far at each word's emission (what the computation-aware latencies need),
- holds Ctrl-C and SIGTERM until the step is done and its words are handed out (:class:`~asr_stream.signals.
  StepGuard`; a decoder step is never left half done), then raises it,
- hands the new words, if any, to ``on_words``.

:func:`drive` runs the loop over an iterable of blocks, paced like a microphone if asked: at its end, on Ctrl-C or
SIGTERM, or on an error from the source, it closes the source and finishes the session, so what was heard is
decoded and kept. ``transcribe`` (files), ``mic`` (:func:`asr_stream.live.run_live`), ``eval``
(:func:`asr_stream.evaluation.runner.stream_blocks`) and the per-client server engine
(:class:`~asr_stream.streaming.segment.PerClientStreams`) all push through it.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from ..audio.io import SAMPLE_RATE
from ..signals import StepGuard


class Driver:
    """Steps on ``session``: :meth:`push` a block, :meth:`finish` the stream; see the module doc.

    guard: hold Ctrl-C and SIGTERM during a push (off where signals belong to someone else, e.g. an event loop).
    After any steps: ``words`` (every word, in order), ``compute_at_ms`` (per word: compute ms spent when it was
    emitted) and ``compute_s`` (compute seconds so far)."""

    def __init__(self, session, on_words: Optional[Callable[[list], None]] = None, guard: bool = True) -> None:
        self.session, self.on_words, self.guard = session, on_words, guard
        self.words: list = []
        self.compute_at_ms: list[float] = []
        self.compute_s = 0.0
        self.interrupted = False  # drive(keep_on_interrupt=True): the loop ended on Ctrl-C or SIGTERM

    def push(self, block) -> list:
        """Push one block (any length; empty: nothing happens); the new words."""
        a = np.asarray(block, dtype=np.float32).reshape(-1)
        if not a.size:
            return []
        return self._step(self.session.push, a, guard=self.guard)

    def finish(self) -> list:
        """Finish the stream (the last words). Not guarded: a second Ctrl-C during the last steps aborts them."""
        return self._step(self.session.finish, guard=False)

    def _step(self, fn: Callable[..., list], *args: Any, guard: bool) -> list:
        with StepGuard() if guard else nullcontext() as held:
            t0 = time.perf_counter()
            new = list(fn(*args))
            self.compute_s += time.perf_counter() - t0
        self.words += new
        self.compute_at_ms += [self.compute_s * 1000.0] * len(new)
        if new and self.on_words is not None:
            self.on_words(list(new))
        if held is not None:
            held.reraise()  # a Ctrl-C or SIGTERM that came during the step, now that its words are out
        return new


def paced(blocks: Iterable, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[np.ndarray]:
    """``blocks`` released as a microphone would: each one when its first sample would have been heard, on an
    absolute schedule from the first block (sleeping never drifts; a consumer that falls behind gets the late blocks
    at once). Blocks of any length (16 kHz); reads ``blocks`` lazily."""
    t0, heard = None, 0
    for block in blocks:
        a = np.asarray(block, dtype=np.float32).reshape(-1)
        if t0 is None:
            t0 = clock()
        else:
            wait = t0 + heard / SAMPLE_RATE - clock()
            if wait > 0:
                sleep(wait)
        heard += a.size
        yield a


def drive(session, blocks: Iterable, on_words: Optional[Callable[[list], None]] = None, *, realtime: bool = False,
          keep_on_interrupt: bool = False, guard: bool = True, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Driver:
    """Push ``blocks`` through ``session``, then finish it; the :class:`Driver` (words, compute times).

    realtime: release the blocks at the pace of a microphone (:func:`paced`; ``clock``/``sleep`` for tests).
    keep_on_interrupt: a Ctrl-C or SIGTERM ends the loop and the call returns (``interrupted`` is True), as the end
        of the audio would; otherwise it is raised again once the session is finished.
    However the loop ends (the blocks end, Ctrl-C or SIGTERM, an error from the source or a step), the source is
    closed (a microphone stops before the last steps) and the session finished, its words handed out; an error is
    raised again after that."""
    d = Driver(session, on_words, guard)
    it = iter(blocks)
    try:
        for block in paced(it, clock, sleep) if realtime else it:
            d.push(block)
    except KeyboardInterrupt:
        d.interrupted = True
        if not keep_on_interrupt:
            raise
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
        d.finish()
    return d


__all__ = ["Driver", "drive", "paced"]
