"""Live transcription loop: blocks in, words out, for as long as the audio lasts.

:func:`run_live` feeds any iterable of 16 kHz mono blocks (a microphone, a paced file) into a
:class:`~asr_stream.streaming.StreamingSession` and hands every new word to a callback as soon as it is
emitted. The transcript is append-only: words already handed out are never revised.

Long sessions are cut into segments by the endpoint rules of :mod:`asr_stream.streaming.segment` (the
one segmentation mechanism that files, evaluation and batched streams use too); at each cut the session
finishes the utterance and resets, so the decoder cache, and with it memory and per-step compute, stays
bounded however long the session runs. The text continues across segments.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Iterable, Iterator

import numpy as np

from .audio.io import SAMPLE_RATE
from .streaming import Word
from .streaming.segment import SegmentedSession


class _SigintDeferred:
    """Hold Ctrl-C while a session step runs, so the step is never left half done.

    An interrupt in the middle of a decoder step could leave some layers' caches extended and others
    not; ``finish()`` on that state would fail. After the block, :attr:`hit` tells whether Ctrl-C came,
    and the caller raises KeyboardInterrupt once its bookkeeping is done. A SIGINT handler other than
    Python's default is called at exit instead. Signals can only be handled in the main thread, so
    elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.hit = False
        self._pending = False
        self._installed = False
        self._old = None  # previous handler; None when it was not installed from Python

    def __enter__(self) -> "_SigintDeferred":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def _handler(self, signum, frame) -> None:
        self._pending = True

    def __exit__(self, *exc) -> None:
        if not self._installed:
            return
        signal.signal(signal.SIGINT, self._old if self._old is not None else signal.SIG_DFL)
        if not self._pending:
            return
        if self._old is signal.default_int_handler:
            self.hit = True
        elif callable(self._old):
            self._old(signal.SIGINT, None)
        elif self._old == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)  # what would have happened without us: terminate


def run_live(stream: SegmentedSession, blocks: Iterable[np.ndarray], on_words: Callable[[list[Word]], None]) -> str:
    """Transcribe ``blocks`` live; return the final transcript (``stream.text``).

    stream: a :class:`~asr_stream.streaming.segment.SegmentedSession` (its endpoint rules cut the stream into
        utterances; word times are absolute).
    blocks: 16 kHz mono float32 arrays of any length; the loop ends when they do, or on Ctrl-C.
    on_words: called with each non-empty list of newly emitted words, in order (append-only).

    On Ctrl-C (KeyboardInterrupt) or the end of ``blocks``, the block source is closed, the stream finished,
    and the transcript returned; a second Ctrl-C during that last ``finish()`` aborts.
    """

    def emit(words: list[Word]) -> None:
        if words:
            on_words(list(words))

    it = iter(blocks)
    try:
        for block in it:
            a = np.asarray(block, dtype=np.float32).reshape(-1)
            if not a.size:
                continue
            with _SigintDeferred() as d:
                words = stream.push(a)
            emit(words)
            if d.hit:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass  # Ctrl-C: stop listening, keep what was heard
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stop the microphone before the last decoding steps
    emit(stream.finish())
    return stream.text


def watch_level(blocks: Iterable[np.ndarray], check, on_quiet: Callable[[str], None],
                quiet_after_s: float = 10.0) -> Iterator[np.ndarray]:
    """Pass ``blocks`` through unchanged, feeding each to ``check`` (an :class:`~asr_stream.audio.io.LevelCheck`).

    Once ``quiet_after_s`` seconds have gone by with no second louder than ``check.quiet_db`` dBFS, call
    ``on_quiet`` once with a message: a muted microphone or a low input gain is otherwise an empty transcript
    with no word of why. Closing the returned iterator closes ``blocks`` (a microphone stops recording).
    """
    warned = False
    try:
        for block in blocks:
            check.push(block)
            if not warned and check.samples >= quiet_after_s * SAMPLE_RATE and check.loudest_db < check.quiet_db:
                warned = True
                on_quiet(f"quiet: nothing louder than {check.loudest_db:.0f} dBFS in "
                         f"{check.samples / SAMPLE_RATE:.0f} s (the bundled model hears speech at about -18 dBFS); "
                         f"is the microphone muted or its input gain low?")
            yield block
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


__all__ = ["run_live", "watch_level"]
