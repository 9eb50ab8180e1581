"""Live transcription loop: blocks in, words out, for as long as the audio lasts.

:func:`run_live` feeds any iterable of 16 kHz mono blocks (a microphone, a paced file) into a
:class:`~asr_stream.streaming.StreamingSession` and hands every new word to a callback as soon as it is
emitted. The transcript is append-only: words already handed out are never revised.

Long sessions are cut into segments, at pauses (a :class:`~asr_stream.audio.sources.Segmenter`) or
every ``max_segment_s`` seconds of audio; at each cut the session finishes the utterance and resets, so
the decoder cache, and with it memory and per-step compute, stays bounded however long the session runs.
The text continues across segments (``session.words`` keeps every word).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Iterable, Optional

import numpy as np

from .audio.io import SAMPLE_RATE
from .audio.sources import Segmenter
from .streaming import StreamingSession, Word


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


def run_live(session: StreamingSession, blocks: Iterable[np.ndarray], on_words: Callable[[list[Word]], None],
             segmenter: Optional[Segmenter] = None, max_segment_s: Optional[float] = 30.0,
             on_segment: Optional[Callable[[StreamingSession], None]] = None) -> str:
    """Transcribe ``blocks`` live; return the final transcript (``session.text``).

    session: the session to drive; its ``words`` accumulate across segments.
    blocks: 16 kHz mono float32 arrays of any length; the loop ends when they do, or on Ctrl-C.
    on_words: called with each non-empty list of newly emitted words, in order (append-only).
    segmenter: pause detector; a pause ends the current segment. None: cut only at ``max_segment_s``.
    max_segment_s: longest segment in seconds of audio; None for no limit (one segment, as for files).
    on_segment: called with the session after each cut, once it has been reset (for monitoring).

    At a cut the session is finished (remaining words are written) and reset. On Ctrl-C
    (KeyboardInterrupt) or the end of ``blocks``, the block source is closed, the session finished, and
    the transcript returned; a second Ctrl-C during that last ``finish()`` aborts.
    """
    if max_segment_s is not None and max_segment_s <= 0:
        raise ValueError(f"max_segment_s must be > 0, got {max_segment_s}")
    max_samples = int(round(max_segment_s * SAMPLE_RATE)) if max_segment_s is not None else None
    seg_samples = 0  # samples pushed into the current segment

    def emit(words: list[Word]) -> None:
        if words:
            on_words(list(words))

    def push(piece: np.ndarray) -> None:
        nonlocal seg_samples
        if piece.size:
            with _SigintDeferred() as d:
                words = session.push(piece)
            seg_samples += piece.shape[0]
            emit(words)
            if d.hit:
                raise KeyboardInterrupt

    def cut() -> None:
        nonlocal seg_samples
        if seg_samples == 0:  # nothing since the last cut: finishing would decode an empty chunk
            return
        with _SigintDeferred() as d:
            words = session.finish()
            session.reset()
        seg_samples = 0
        emit(words)
        if on_segment is not None:
            on_segment(session)
        if d.hit:
            raise KeyboardInterrupt

    it = iter(blocks)
    try:
        for block in it:
            a = np.asarray(block, dtype=np.float32).reshape(-1)
            pauses = segmenter.push(a) if segmenter is not None else []
            pos = 0
            # split the block at every pause and at the segment-length limit, in sample order
            while pos < a.shape[0] or pauses:
                nxt_pause = pauses[0] if pauses else None
                nxt_limit = pos + (max_samples - seg_samples) if max_samples is not None else None
                ends = [e for e in (nxt_pause, nxt_limit) if e is not None and e <= a.shape[0]]
                end = min(ends) if ends else a.shape[0]
                push(a[pos:end])
                pos = end
                if nxt_pause is not None and end == nxt_pause:
                    pauses.pop(0)
                    cut()
                elif nxt_limit is not None and end == nxt_limit:
                    cut()
                elif not ends:
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C: stop listening, keep what was heard
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stop the microphone before the last decoding steps
    st = session.state
    if st.samples_in and not st.finished:  # the state, not seg_samples: right even if Ctrl-C beat the bookkeeping
        emit(session.finish())
    return session.text


__all__ = ["run_live"]
