"""Restarts: a segment of fluent speech is closed at the end of its last written word and read on from there.

The models know single sentences of a few seconds. Speech without pauses gives the endpointer nothing to cut
at, and inside a long segment the model loses its way or stops writing (it asks to end the utterance before the
audio ends, then writes nothing). Measured on held-out sentences spoken back to back (``benchmarks/endpointing/fluent.py``):
without restarts, a third to half of the words never came back and nothing said so. A *restart* closes the open
segment where its last written word ends and starts the next segment right there, with fresh caches (encoder
and decoder), on the audio after that point (the driver keeps the open segment's audio), so no stretch of speech
goes unread. The session's rules (:meth:`RestartRule.due`), checked before each chunk it would read:

1. **Long segment.** The segment has read ``max_s`` seconds of audio.
2. **Stall.** The model has asked to end the utterance before the end of its audio (an early EOS) and has
   written no word for ``stall_chunks`` chunks. In a pause the endpointer closes the segment first, so this
   fires in speech.

and one more when a segment is closed: 3. **Unread tail.** The model has finished the segment but its last
word ends ``reread_ms`` or more before the segment's speech does: the rest is read again as a fresh utterance
(once; what that leaves is reported as unheard).

Once a rule fires the session reads nothing more (``state.restart_at``: where to restart, in samples from the
utterance start), so the decision depends on the audio and the model only, never on block sizes or on which
driver runs the session: :class:`~asr_stream.streaming.segment.SegmentedSession` and
:class:`~asr_stream.streaming.segment.SegmentedStreams` restart at the same samples. A rule needs a word to
restart after, so every restart moves on (no loops).

Where the last word ends (:func:`word_end`): the words the decoder wrote are aligned, character by character,
with the CTC head's greedy transcript of the segment (each character knows its frame); the cut goes halfway
between the last frame of the token that ends the last word and the first frame of the CTC's next token. On
fluent espeak-ng speech this beat counting the CTC's boundary onsets (10.6 % against 16 % WER, 0 ms pauses),
because the two transcripts often disagree on a word or two, and it beat cutting at the token's end (13 %).
Restarts need the CTC head: a session whose model has none is never restarted (when the alignment finds nothing,
the end is the audio read when the last word was written, which is late).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE


@dataclass(frozen=True)
class RestartRule:
    """When a session stops so that its driver restarts it at its last word (see the module doc)."""

    max_s: float = 4.0
    """Rule 1: seconds of audio a segment reads before it is restarted at its last word. Held-out sentences back to
    back (4 recordings of 40): 3 s gave 10.2 % WER, 4 s 10.6 %, 5 s 11.5 %, 6 s 10.6 %; with long pauses restarts
    changed WER by less than a point (mostly 0: every sentence ends at a pause first)."""
    stall_chunks: int = 2
    """Rule 2: chunks with no new word after the model asked to end early."""
    reread_ms: float = 500.0
    """Rule 3: speech after a finished segment's last word that is read again (also the least unheard speech that
    the report counts, see :func:`~asr_stream.streaming.segment.unheard`)."""

    def __post_init__(self) -> None:
        for name in ("max_s", "reread_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"restart {name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.stall_chunks, int) and self.stall_chunks >= 1):
            raise ValueError(f"restart stall_chunks must be an integer >= 1, got {self.stall_chunks!r}")

    def due(self, samples_read: int, words: int, k_extra: int, chunks_read: int, last_word_chunk: int) -> bool:
        """Rules 1 and 2 for a session that has read ``samples_read`` samples (``chunks_read`` chunks) and finished
        ``words`` words, the last one when ``last_word_chunk`` chunks were read; ``k_extra`` > 0: it asked to end."""
        if words == 0:
            return False  # nothing to restart after
        if samples_read >= self.max_s * SAMPLE_RATE:
            return True
        return k_extra > 0 and chunks_read - last_word_chunk >= self.stall_chunks


def ctc_chars(ids: Sequence[int], blank: int,
              text: Callable[[int], str]) -> tuple[str, list[int], list[tuple[int, int]]]:
    """Greedy CTC over per-frame tokens ``ids``: (transcript, the token index of each character, (first, last) frame
    of each token). ``text(t)``: token t's characters, with a space where a word ends or starts."""
    chars: list[str] = []
    owner: list[int] = []
    spans: list[tuple[int, int]] = []
    f, n = 0, len(ids)
    while f < n:
        g = f
        while g + 1 < n and ids[g + 1] == ids[f]:
            g += 1
        if ids[f] != blank:
            s = text(ids[f])
            chars.append(s)
            owner += [len(spans)] * len(s)
            spans.append((f, g))
        f = g + 1
    return "".join(chars), owner, spans


def word_end(words: Sequence[str], ids: Sequence[int], blank: int, text: Callable[[int], str],
             frame_samples: int) -> Optional[int]:
    """Samples from the utterance start to the end of the last of ``words`` (the decoder's words of the utterance),
    from the per-frame greedy CTC tokens ``ids``; None when nothing aligns.

    The words, and a space after them, are aligned with the CTC transcript character by character (longest common
    subsequence: no substitutions, so that words the decoder made up, or repeated in a loop, are left out instead of
    eating up the transcript), all of them against a prefix of the transcript (the CTC hears ahead of the decoder). The space marks the word's end: it
    is the last character of the token that ends the word (a suffix-style tokenizer) or the first of the token that
    starts the next one (prefix style). The end is halfway between the last frame (+1) of the token before that
    boundary and the first frame of the token after it."""
    d = " ".join(w.strip() for w in words).strip() + " "
    c, owner, spans = ctc_chars(ids, blank, text)
    if not d.strip() or not c:
        return None
    a, b = np.frombuffer(d.encode("utf-32-le"), np.uint32), np.frombuffer(c.encode("utf-32-le"), np.uint32)
    cost = np.empty((len(a) + 1, len(b) + 1), np.int32)
    cost[0] = np.arange(len(b) + 1)
    steps = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        row = np.empty(len(b) + 1, np.int32)
        row[0] = i
        row[1:] = np.minimum(cost[i - 1, :-1] + 3 * (b != a[i - 1]), cost[i - 1, 1:] + 1)  # 3: never a substitution
        cost[i] = np.minimum.accumulate(row - steps) + steps  # insertions along the row: min over l <= j of row[l] + j - l
    i, j = len(a), int(np.argmin(cost[-1]))  # the whole of d against a prefix of c
    while i > 0 and j > 0 and not (a[i - 1] == b[j - 1] and cost[i, j] == cost[i - 1, j - 1]):
        if cost[i, j] == cost[i - 1, j] + 1:
            i -= 1  # back to the last character matched: d[i - 1] == c[j - 1]
        else:
            j -= 1
    if i == 0 or j == 0:
        return None
    t = owner[j - 1]
    if j > 1 and owner[j - 2] != t or j == 1:  # the token's first character: the boundary is before it
        t -= 1
    if t < 0:
        return 0
    end = spans[t][1] + 1
    nxt = spans[t + 1][0] if t + 1 < len(spans) else end
    return (end + max(end, nxt)) // 2 * frame_samples
    return None


class SegmentAudio:
    """The open segment's audio, kept so that a restart can read it again from any point: at most one segment
    (:meth:`restart` and :meth:`reset` drop what came before)."""

    def __init__(self) -> None:
        self.start = 0  # stream sample of the first sample kept
        self.parts: list[np.ndarray] = []
        self.n = 0

    def reset(self, start: int) -> None:
        self.start, self.parts, self.n = start, [], 0

    def add(self, samples: np.ndarray) -> None:
        self.parts.append(samples)
        self.n += samples.shape[0]

    def restart(self, at: int) -> np.ndarray:
        """The audio from stream sample ``at`` on; from now on the segment starts there."""
        if not self.start <= at <= self.start + self.n:
            raise ValueError(f"restart at sample {at} is outside the segment's audio [{self.start}, {self.start + self.n}]")
        x = np.concatenate(self.parts)[at - self.start :] if self.parts else np.zeros(0, np.float32)
        self.reset(at)
        self.add(x)
        return x


__all__ = ["RestartRule", "SegmentAudio", "ctc_chars", "word_end"]
