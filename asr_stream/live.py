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

from typing import Callable, Iterable, Iterator

import numpy as np

from .audio.io import SAMPLE_RATE
from .streaming import Word
from .streaming.driver import drive
from .streaming.segment import SegmentedSession


def run_live(stream: SegmentedSession, blocks: Iterable[np.ndarray], on_words: Callable[[list[Word]], None]) -> str:
    """Transcribe ``blocks`` live; return the final transcript (``stream.text``).

    stream: a :class:`~asr_stream.streaming.segment.SegmentedSession` (its endpoint rules cut the stream into
        utterances; word times are absolute).
    blocks: 16 kHz mono float32 arrays of any length; the loop ends when they do, or on Ctrl-C.
    on_words: called with each non-empty list of newly emitted words, in order (append-only).

    On Ctrl-C (KeyboardInterrupt; SIGTERM too under :func:`~asr_stream.signals.sigterm_as_interrupt`), the end
    of ``blocks`` or an error from them, the block source is closed, the stream finished, and the transcript
    returned (the error raised); a second signal during that last ``finish()`` aborts. The loop is
    :func:`asr_stream.streaming.driver.drive`.
    """
    drive(stream, blocks, on_words, keep_on_interrupt=True)  # Ctrl-C or SIGTERM: stop listening, keep what was heard
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
