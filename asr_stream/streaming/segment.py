"""Endpointing: one long stream -> utterances the model knows how to transcribe.

The models are trained on single utterances. A stream that never ends (a 30-minute file, a microphone left
open, a server connection) is cut into *segments*; each segment is transcribed as a fresh utterance on the
same stream (the session's caches drop back to the prompt), and word times stay absolute (ms from the start
of the stream). This is the one segmentation mechanism of the project: ``transcribe``, ``mic``, ``eval`` /
``sweep`` on long recordings and :class:`~asr_stream.streaming.batched.BatchedStreams` all use it.

The rules, in the spirit of sherpa-onnx's and WeNet's endpoint rules; 1-3 on 10 ms frames
(:class:`~asr_stream.streaming.endpoint.Endpointer`, :class:`EnergyDetector` says which frames are silent):

1. **Trailing silence.** ``min_silence_ms`` of silence after speech closes the segment; once the segment is
   ``pause_after_s`` long, a shorter pause of ``pause_ms`` does (rule ``pause``: sentences spoken with 100-200 ms
   between them are cut there instead of running on). That cut goes where the speech comes back, less the next
   segment's pre-roll, so the closing segment keeps the pause as trailing silence.
2. **Maximum length.** A segment is closed after ``max_segment_s`` of audio even without a pause (counted from
   its last restart, rule 4).
3. **The model's own end at a pause.** When the model has asked to end the utterance (it chose EOS before
   the end of the audio, see ``StreamConfig.early_eos``) and the audio is in a pause of at least
   ``eos_silence_ms``, the segment closes there. An EOS asked for in the middle of speech (the model stalls)
   is honoured at the next such pause, so the stream recovers instead of staying silent.
4. **Restarts** (:mod:`~asr_stream.streaming.restart`; ``restart_s``): a segment that has read ``restart_s`` of
   audio, or whose model asked to end in the middle of speech and then wrote nothing, is closed at the end of its
   last written word and the next one starts there, on the same audio (rule ``restart``); so is a finished segment
   whose speech goes on well after its last word. Fluent speech (no pauses) is read in pieces the model knows.

Between segments, silence is not fed to the model: a segment starts at the first frame of speech, less
``pre_roll_ms`` (the synthetic models mis-hear utterances that start with silence: 100 ms of it raises WER
from 7 % to 13 %, 200 ms to 35 %). A segment needs ``min_speech_ms`` of speech to start, so a click does
not open one. Audio is never dropped: at a cut everything before the cut belongs to the closing segment and
everything after it to the next one (or to the silence between segments); at a restart the audio after the
last word is read again by the next segment. Speech after a segment's last word that no later segment reads is
reported (:func:`unheard`).

Drivers: :class:`SegmentedSession` (one :class:`~asr_stream.streaming.session.StreamingSession`, synchronous)
and :class:`SegmentedStreams` (many streams over one :class:`~asr_stream.streaming.batched.BatchedStreams`,
one batched decoder step for all of them). Both feed an :class:`Endpointer`, which decides cuts and knows
nothing of models, and both restart at the same samples (the session decides, see :mod:`~asr_stream.streaming.restart`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE, SAMPLES_PER_MS
from .driver import Driver
from .endpoint import FRAME, EndpointConfig, EnergyDetector, Endpointer, Sink
from .restart import RestartRule, SegmentAudio
from .session import StreamingSession, Word


# ----------------------------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One utterance of a long stream. Sample indices are absolute (from the start of the stream)."""

    index: int
    start: int  # first sample fed to the model
    end: int = -1  # sample where it was closed (-1: open)
    speech_end: int = -1  # end of its speech (before the trailing silence that closed it)
    rule: str = ""  # what closed it: silence / pause / max_length / model_eos / end / restart
    words: list[Word] = field(default_factory=list)  # absolute times
    heard_end: int = -1  # where its last word ends, as far as the session can tell (start: no words; -1: open)

    @property
    def start_ms(self) -> float:
        return self.start / SAMPLES_PER_MS

    @property
    def end_ms(self) -> float:
        return self.end / SAMPLES_PER_MS

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def as_dict(self) -> dict:
        return {"index": self.index, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "speech_end_ms": self.speech_end / SAMPLES_PER_MS, "heard_end_ms": self.heard_end / SAMPLES_PER_MS,
                "rule": self.rule, "text": self.text,
                "words": [{"text": w.text, "time_ms": w.time_ms} for w in self.words]}


def unheard(segments: Sequence[Segment], min_speech_ms: float = RestartRule.reread_ms) -> tuple[float, list[int]]:
    """Seconds of speech in closed segments after their last word (all of it when there is none), and those
    segments' indices.

    A segment counts when that speech lasted at least ``min_speech_ms`` (a cough or a click may rightly give
    nothing, and where the last word ends is an estimate). A segment closed by a restart has none: the next segment
    reads on from its last word. This is the "never lose words silently" report of long transcriptions.
    """
    rest = lambda s: s.speech_end - (max(s.start, s.heard_end) if s.words else s.start)  # noqa: E731
    bad = [s for s in segments if s.end >= 0 and s.rule != "restart" and rest(s) / SAMPLES_PER_MS >= min_speech_ms]
    return sum(rest(s) / SAMPLE_RATE for s in bad), [s.index for s in bad]


class _Segments:
    """Segment bookkeeping shared by the drivers: absolute word times, the list of segments, callbacks."""

    def __init__(self, on_segment: Optional[Callable[[Segment], None]]) -> None:
        self.segments: list[Segment] = []
        self.words: list[Word] = []
        self.on_segment = on_segment
        self.audio = SegmentAudio()  # the open segment's audio, read again from a restart point

    @property
    def current(self) -> Optional[Segment]:
        return self.segments[-1] if self.segments and self.segments[-1].end < 0 else None

    def open(self, start: int) -> Segment:
        seg = Segment(index=len(self.segments), start=start)
        self.segments.append(seg)
        self.audio.reset(start)
        return seg

    def restart(self, at: int) -> np.ndarray:
        """Rule 4: close the open segment ``at`` samples after its start (the end of its last word) and open the next
        one there; returns the audio to read again (from there to what was fed)."""
        seg = self.current
        self.closed(seg, seg.start + at, seg.start + at, "restart", at)
        tail = self.audio.restart(seg.start + at)
        self.segments.append(Segment(index=len(self.segments), start=seg.start + at))
        return tail

    def add(self, seg: Segment, words: Iterable[Word]) -> list[Word]:
        """``seg``'s new words with stream times: the time within the segment plus its start, but never before a word
        already emitted. A segment's last words, written after its audio ended (wait-k's lag), can lie after the next
        segment's first ones by that reckoning (after a restart the next segment reads audio that had already
        arrived); they were emitted first, so the next ones wait for them. Times stay independent of block sizes."""
        out = []
        last = self.words[-1].time_ms if self.words else 0.0
        for w in words:
            last = max(w.time_ms + seg.start_ms, last)
            out.append(replace(w, time_ms=last))
        seg.words += out
        self.words += out
        return out

    def closed(self, seg: Segment, end: int, speech_end: int, rule: str, heard: int) -> None:
        """Close ``seg``; its last word ends ``heard`` samples after its start."""
        seg.end, seg.speech_end, seg.rule = end, max(seg.start, speech_end), rule
        seg.heard_end = seg.start + heard
        if self.on_segment is not None:
            self.on_segment(seg)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


# --------------------------------------------------------------------------------------- one stream


class SegmentedSession:
    """A :class:`StreamingSession` for streams of any length: ``push(samples) -> new words``, ``finish()``.

    Words carry absolute times (ms of audio from the start of the stream); :attr:`segments` lists the
    utterances with their spans and words. ``endpoint=None`` turns segmentation off (one utterance: the
    stream is fed to the session as it is).
    """

    def __init__(self, session: StreamingSession, endpoint: Optional[EndpointConfig] = EndpointConfig(),
                 on_segment: Optional[Callable[[Segment], None]] = None) -> None:
        self.session = session
        self.endpoint = endpoint
        self._segs = _Segments(on_segment)
        self._new: list[Word] = []
        self.samples_in = 0
        self._ep = Endpointer(endpoint, self, session.model.chunk_samples) if endpoint is not None else None
        session.restart = endpoint.restart_rule() if endpoint is not None else None
        session.track_words = True  # where each segment's last word ends: unheard speech after it is reported
        self.finished = False

    # -- public API ---------------------------------------------------------------------------------------
    @property
    def words(self) -> list[Word]:
        return self._segs.words

    @property
    def segments(self) -> list[Segment]:
        return self._segs.segments

    @property
    def text(self) -> str:
        return self._segs.text

    def push(self, samples: np.ndarray) -> list[Word]:
        """Feed 16 kHz mono float32 samples; returns the words finished meanwhile (absolute times)."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        a = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.samples_in += a.shape[0]
        self._new = []
        if self._ep is None:
            if self._segs.current is None:
                self._segs.open(0)
            self._take(self.session.push(a))
        else:
            self._ep.push(a)
        return self._new

    def finish(self) -> list[Word]:
        """End of the stream: the open segment is finished; returns its last words."""
        self._new = []
        if not self.finished:
            self.finished = True
            if self._ep is None:
                if self._segs.current is not None:
                    self.cut(self.samples_in, self.samples_in, "end")
            else:
                self._ep.close()
        return self._new

    @property
    def unheard(self) -> tuple[float, list[int]]:
        return unheard(self.segments)

    # -- the sink the endpointer drives -------------------------------------------------------------------
    def feed(self, samples: np.ndarray, start: int) -> None:
        if self._segs.current is None:
            self._segs.open(start)
        self._segs.audio.add(samples)
        self._take(self.session.push(samples))
        self._restarts(finishing=False)

    def cut(self, end: int, speech_end: int, rule: str) -> None:
        if self._segs.current is None:
            return
        self._take(self.session.finish())
        self._restarts(finishing=True)
        if self.session.stop_for_reread(speech_end - self._segs.current.start):  # once: it leaves what it leaves
            self._restarts(finishing=True)
        heard = self.session.heard_to()
        if rule != "end":  # the stream goes on: a fresh utterance (at the end the final state stays readable)
            self.session.reset()
        self._segs.closed(self._segs.current, end, speech_end, rule, heard)

    def _restarts(self, finishing: bool) -> None:
        """Rule 4, as often as the session stops for it: the next segment starts at the last word and reads the
        audio after it (to its end when ``finishing``)."""
        while self.session.state.restart_at >= 0:
            tail = self._segs.restart(self.session.state.restart_at)
            self.session.reset()
            if self._ep is not None:
                self._ep.restarted(self._segs.current.start)
            self._take(self.session.push(tail))
            if finishing:
                self._take(self.session.finish())

    def wants_end(self) -> bool:
        s = self.session.state
        return s.k_extra > 0 or s.ended

    def _take(self, words: list[Word]) -> None:
        seg = self._segs.current
        self._new += self._segs.add(seg, words)


# --------------------------------------------------------------------------------------- many streams


class _Slot:
    """The sink of one stream of :class:`SegmentedStreams`. While its last segment is still being finished by
    the batched engine, new audio and cuts wait in ``carry`` (in order) and are replayed once it is done."""

    def __init__(self, owner: "SegmentedStreams", i: int, on_segment) -> None:
        self.owner, self.i = owner, i
        self.segs = _Segments(on_segment)
        self.closing: Optional[tuple[int, int, str]] = None  # (end, speech_end, rule) of the segment being finished
        self.reread = False  # the segment being finished has been read again once (restart rule 3)
        self.carry: list[tuple] = []
        self.new: list[Word] = []

    def feed(self, samples: np.ndarray, start: int) -> None:
        if self.closing is not None or self.carry:
            self.carry.append(("feed", samples, start))
            return
        if self.segs.current is None:
            self.segs.open(start)
        self.segs.audio.add(samples)
        self.owner.engine.feed(self.i, samples)

    def cut(self, end: int, speech_end: int, rule: str) -> None:
        if self.closing is not None or self.carry:
            self.carry.append(("cut", end, speech_end, rule))
            return
        if self.segs.current is None:
            return
        self.owner.engine.end(self.i)
        self.closing = (end, speech_end, rule)

    def wants_end(self) -> bool:
        s = self.owner.engine.sessions[self.i].state
        if self.closing is not None or self.carry or s.restart_at >= 0:
            return False
        return s.k_extra > 0 or s.ended

    def restart(self) -> bool:
        """Rule 4, if the engine's session has stopped for it (as SegmentedSession._restarts does at once)."""
        sess = self.owner.engine.sessions[self.i]
        if sess.state.restart_at < 0:
            return False
        closing = sess.state.closing
        self.collect()
        tail = self.segs.restart(sess.state.restart_at)
        self.owner.engine.reset(self.i)
        self.owner.endpointers[self.i].restarted(self.segs.current.start)
        self.owner.engine.feed(self.i, tail)
        if closing:
            self.owner.engine.end(self.i)
        return True

    def collect(self) -> None:
        """Words the engine wrote for this stream since the last call (they belong to the engine's segment)."""
        words = self.owner.engine.poll(self.i)
        if words:
            self.new += self.segs.add(self.segs.current, words)

    def complete(self) -> None:
        """The segment being finished is done: close it, start a fresh utterance, replay what waited."""
        end, speech_end, rule = self.closing
        self.collect()
        sess = self.owner.engine.sessions[self.i]
        if not self.reread and sess.stop_for_reread(speech_end - self.segs.current.start):
            self.reread = True
            self.restart()  # the rest is read again (once); this completes when that is done
            return
        self.reread = False
        self.closing = None
        self.segs.closed(self.segs.current, end, speech_end, rule, sess.heard_to())
        if rule != "end":
            self.owner.engine.reset(self.i)
        carry, self.carry = self.carry, []
        for item in carry:
            if item[0] == "feed":
                self.feed(item[1], item[2])
            else:
                self.cut(*item[1:])


class SegmentedStreams:
    """Many streams of any length over one :class:`~asr_stream.streaming.batched.BatchedStreams`: each stream has
    its own :class:`Endpointer` (the same rules as :class:`SegmentedSession`), and the decoder steps of all of
    them run batched. A closing segment is finished by the engine while the stream's next audio waits, so no
    audio is dropped and no stream holds up the others.

    Rule 3 (the model's EOS at a pause) reads the model's state as of the last batched step, so it may close a
    segment one round of audio later than :class:`SegmentedSession` would; rules 1 and 2 give the same cuts.
    """

    def __init__(self, model, n: int, cfg=None, endpoint: EndpointConfig = EndpointConfig(),
                 on_segment: Optional[Callable[[int, Segment], None]] = None, **overrides) -> None:
        from .batched import BatchedStreams

        self.engine = BatchedStreams(model, n, cfg, **overrides)
        self.endpoint = endpoint
        for sess in self.engine.sessions:
            sess.restart, sess.track_words = endpoint.restart_rule(), True
        self.on_segment = on_segment
        self.slots = [self._slot(i) for i in range(n)]
        self.endpointers = [Endpointer(endpoint, slot, model.chunk_samples) for slot in self.slots]

    def _slot(self, i: int) -> _Slot:
        return _Slot(self, i, (lambda seg, i=i: self.on_segment(i, seg)) if self.on_segment else None)

    def reset(self, i: int, k: Optional[int] = None, context: Optional[Sequence[str]] = None) -> None:
        """Make stream ``i`` a fresh stream (a new connection in that slot): engine slot, endpointer and segments
        start over, sample 0 is the new stream's first sample, and nothing of the old stream is returned.
        ``k``: wait-k for this stream (None: the engine's); ``context``: its context list (None: the engine's)."""
        self.engine.reset(i, k=self.engine.cfg.k if k is None else k,
                          context=self.engine.cfg.context if context is None else context)
        self.engine.poll(i)  # (drain collects every slot, so normally nothing is left here)
        self.slots[i] = self._slot(i)
        self.endpointers[i] = Endpointer(self.endpoint, self.slots[i], self.engine.model.chunk_samples)

    def release(self, i: int) -> None:
        """Stream ``i`` stops (its connection is gone): it leaves the batch and costs nothing until :meth:`reset`.
        Its segments so far stay readable; words not yet polled are dropped; no callback fires for its open segment."""
        self.engine.release(i)
        self.endpointers[i].closed = True
        self.slots[i].closing, self.slots[i].carry, self.slots[i].new = None, [], []

    def feed(self, i: int, samples: np.ndarray) -> None:
        """Queue samples for stream ``i`` (the endpointer runs now; the model at the next :meth:`drain`)."""
        self.endpointers[i].push(samples)

    def end(self, i: int) -> None:
        """No more audio for stream ``i``."""
        self.endpointers[i].close()

    def drain(self) -> None:
        """Batched steps until every stream waits for audio or is done; finished segments make way for the next."""
        while True:
            self.engine.drain()
            done = [slot for slot in self.slots if slot.closing is not None and self.engine.done(slot.i)]
            for slot in self.slots:
                slot.collect()
            restarted = [slot for slot in self.slots if slot.restart()]
            for slot in done:
                slot.complete()
            if not done and not restarted:
                return

    def poll(self, i: int) -> list[Word]:
        """Words of stream ``i`` (absolute times) since the last poll."""
        new, self.slots[i].new = self.slots[i].new, []
        return new

    def words(self, i: int) -> list[Word]:
        return self.slots[i].segs.words

    def segments(self, i: int) -> list[Segment]:
        return self.slots[i].segs.segments

    def text(self, i: int) -> str:
        return self.slots[i].segs.text

    def done(self, i: int) -> bool:
        return self.endpointers[i].closed and self.slots[i].closing is None and not self.slots[i].carry

    @classmethod
    def run(cls, model, waves: Sequence[np.ndarray], cfg=None, endpoint: EndpointConfig = EndpointConfig(),
            block: int = 5120, **overrides) -> "SegmentedStreams":
        """Offline throughput: all waves as concurrent streams, fed in rounds of ``block`` samples each."""
        from .batched import rounds

        eng = cls(model, len(waves), cfg, endpoint, **overrides)
        for feed in rounds(waves, block):
            for i, piece, last in feed:
                eng.feed(i, piece)
                if last:
                    eng.end(i)
            eng.drain()
        return eng


class PerClientStreams:
    """One :class:`SegmentedSession` per slot, with the :class:`SegmentedStreams` API that ``asr-stream serve`` uses
    (``--scheduler per-client``, the baseline: every stream runs its own decoder calls, one after the other)."""

    def __init__(self, model, n: int, cfg, endpoint, on_segment: Optional[Callable] = None) -> None:
        self.model, self.n, self.cfg, self.endpoint, self.on_segment = model, n, cfg, endpoint, on_segment
        self.sessions: list = [None] * n
        self.drivers: list = [None] * n  # each session's steps (streaming.driver; no signal guard: the event loop's)
        self.inbox: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.ending = [False] * n
        self.new: list[list] = [[] for _ in range(n)]

    def reset(self, i: int, k: Optional[int] = None, context: Optional[Sequence[str]] = None) -> None:
        from dataclasses import replace

        from .defaults import with_k

        cb = (lambda seg, i=i: self.on_segment(i, seg)) if self.on_segment else None
        cfg = with_k(self.cfg, k) if k is not None else self.cfg
        if context is not None:
            cfg = replace(cfg, context=tuple(context))
        self.sessions[i] = SegmentedSession(StreamingSession(self.model, cfg), self.endpoint, cb)
        self.drivers[i] = Driver(self.sessions[i], guard=False)
        self.inbox[i], self.ending[i], self.new[i] = [], False, []

    def release(self, i: int) -> None:
        self.sessions[i] = self.drivers[i] = None
        self.inbox[i], self.ending[i], self.new[i] = [], False, []

    def feed(self, i: int, samples: np.ndarray) -> None:
        self.inbox[i].append(samples)

    def end(self, i: int) -> None:
        self.ending[i] = True

    def drain(self) -> None:
        for i, s in enumerate(self.sessions):
            if s is None or s.finished:
                continue
            if self.inbox[i]:
                x = np.concatenate(self.inbox[i])
                self.inbox[i] = []
                self.new[i] += self.drivers[i].push(x)
            if self.ending[i]:
                self.new[i] += self.drivers[i].finish()

    def poll(self, i: int) -> list:
        new, self.new[i] = self.new[i], []
        return new

    def segments(self, i: int) -> list:
        return self.sessions[i].segments

    def done(self, i: int) -> bool:
        return self.sessions[i] is not None and self.sessions[i].finished


__all__ = ["FRAME", "EndpointConfig", "EnergyDetector", "Endpointer", "PerClientStreams", "Segment", "SegmentedSession", "SegmentedStreams", "Sink",
           "unheard"]
