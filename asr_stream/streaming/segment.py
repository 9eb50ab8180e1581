"""Endpointing: one long stream -> utterances the model knows how to transcribe.

The models are trained on single utterances. A stream that never ends (a 30-minute file, a microphone left
open, a server connection) is cut into *segments*; each segment is transcribed as a fresh utterance on the
same stream (the session's caches drop back to the prompt), and word times stay absolute (ms from the start
of the stream). This is the one segmentation mechanism of the project: ``transcribe``, ``mic``, ``eval`` /
``sweep`` on long recordings and :class:`~asr_stream.streaming.batched.BatchedStreams` all use it.

The rules, in the spirit of sherpa-onnx's and WeNet's endpoint rules, on 10 ms frames (a detector says which frames
are silent: :class:`EnergyDetector`, the frame level against an adaptive noise floor, or ``detector="silero"``, the
Silero VAD network of :mod:`asr_stream.audio.vad`, which decides a frame up to 32 ms after it arrived):

1. **Trailing silence.** ``min_silence_ms`` of silence after speech closes the segment.
2. **Maximum length.** A segment is closed after ``max_segment_s`` of audio even without a pause.
3. **The model's own end at a pause.** When the model has asked to end the utterance (it chose EOS before
   the end of the audio, see ``StreamConfig.early_eos``) and the audio is in a pause of at least
   ``eos_silence_ms``, the segment closes there. An EOS asked for in the middle of speech (the model stalls)
   is honoured at the next such pause, so the stream recovers instead of staying silent.

Between segments, silence is not fed to the model: a segment starts at the first frame of speech, less
``pre_roll_ms`` (the synthetic models mis-hear utterances that start with silence: 100 ms of it raises WER
from 7 % to 13 %, 200 ms to 35 %). A segment needs ``min_speech_ms`` of speech to start, so a click does
not open one. Audio is never dropped: at a cut everything before the cut belongs to the closing segment and
everything after it to the next one (or to the silence between segments).

Drivers: :class:`SegmentedSession` (one :class:`~asr_stream.streaming.session.StreamingSession`, synchronous)
and :class:`SegmentedStreams` (many streams over one :class:`~asr_stream.streaming.batched.BatchedStreams`,
one batched decoder step for all of them). Both feed an :class:`Endpointer`, which decides cuts and knows
nothing of models.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional, Protocol, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE
from .session import StreamingSession, Word

FRAME = 160  # samples = 10 ms at 16 kHz: the endpointer's time step


@dataclass(frozen=True)
class EndpointConfig:
    """Endpoint rules and the energy detector behind them. Times in ms or s as named; levels in dBFS."""

    min_silence_ms: float = 300.0
    """Rule 1: silence after speech that closes a segment. Short, because the models know single sentences:
    on held-out espeak sentences joined by 0.2-1.5 s pauses, 300 ms gave one segment per sentence (the longest
    pause inside a sentence was 140 ms) and 5.6 % WER, 600 ms merged sentences and gave 16.7 %."""
    max_segment_s: float = 20.0
    """Rule 2: longest segment, in seconds of audio (the models are trained on utterances up to ~15 s)."""
    eos_silence_ms: float = 150.0
    """Rule 3: a pause this long closes the segment once the model has asked to end it (an early EOS)."""
    min_speech_ms: float = 50.0
    """Speech (non-silent frames, gaps under 30 ms bridged) needed to start a segment."""
    pre_roll_ms: Optional[float] = None
    """Audio kept before the first frame of speech when a segment starts; None: the detector's own (energy 20 ms;
    silero 80 ms, since it calls speech up to ~60 ms after the onset: with 20 ms, 10 of 304 words of a held-out
    recording began before their segment, with 80 ms 1; benchmarks/vad_endpoint.py)."""
    threshold_db: Optional[float] = None
    """Fixed silence threshold (frame RMS level); None: adaptive (noise floor + margin_db)."""
    margin_db: float = 12.0
    """Adaptive threshold: a frame is speech when it is this far above the noise floor."""
    speech_min_db: float = -60.0
    """Adaptive threshold: never below this level."""
    floor_min_db: float = -90.0
    """The noise floor never goes below this level (digital silence)."""
    floor_rise_db_per_s: float = 3.0
    """The noise floor follows a rising background this fast; it drops at once to any quieter frame."""
    detector: str = "energy"
    """Which frames are silent: ``energy`` (the settings above) or ``silero`` (the Silero VAD network; needs the
    silero-vad package, see requirements/silero-vad.txt)."""
    vad_threshold: float = 0.7
    """``silero``: speech probability that starts speech (it lasts while above threshold - 0.15). 0.7, not Silero's
    own 0.5: in babble at 20 dB SNR 0.5 merged 40 sentences into 15 segments, 0.7 into 30, with no word lost in
    clean, -20 dB or white noise at 10-20 dB either way (benchmarks/vad_endpoint.py)."""

    def __post_init__(self) -> None:
        for name in ("min_silence_ms", "max_segment_s", "eos_silence_ms", "min_speech_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"endpoint {name} must be a finite number > 0, got {v!r}")
        if self.pre_roll_ms is not None and not (math.isfinite(self.pre_roll_ms) and self.pre_roll_ms >= 0):
            raise ValueError(f"endpoint pre_roll_ms must be >= 0, got {self.pre_roll_ms!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"endpoint detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if not 0.15 < self.vad_threshold < 1.0:
            raise ValueError(f"endpoint vad_threshold must be in (0.15, 1), got {self.vad_threshold!r}")

    @property
    def pre_roll(self) -> float:
        """The pre-roll in ms (the detector's own when ``pre_roll_ms`` is None)."""
        if self.pre_roll_ms is not None:
            return self.pre_roll_ms
        return 80.0 if self.detector == "silero" else 20.0

    def frames(self, ms: float) -> int:
        return max(1, int(round(ms / 10.0)))


class EnergyDetector:
    """Frame RMS level against a fixed or adaptive threshold: :meth:`silent` per 10 ms frame.

    ``level`` = 20·log10 RMS in dBFS. Adaptive: a noise floor starts at ``floor_min_db``, drops at once to any
    quieter frame (never below ``floor_min_db``) and otherwise rises by ``floor_rise_db_per_s``; a frame is
    silent when ``level < max(floor + margin_db, speech_min_db)``. Starting low means a stream that begins with
    speech is heard from its first frame (a floor started at the first frame's level would call that speech
    silence); the price is that a loud steady background counts as speech until the floor has risen to it.
    """

    def __init__(self, cfg: EndpointConfig) -> None:
        self.cfg = cfg
        self.rise = cfg.floor_rise_db_per_s * FRAME / SAMPLE_RATE  # dB per frame
        self.floor: Optional[float] = None

    @staticmethod
    def levels(frames: np.ndarray) -> np.ndarray:
        """(n, FRAME) samples -> (n,) dBFS."""
        f = frames.astype(np.float64)
        return 10.0 * np.log10(np.mean(f * f, axis=1) + 1e-20)

    def push(self, frames: np.ndarray) -> np.ndarray:
        """(n, FRAME) samples -> n silence decisions (each frame is decided as it comes)."""
        return np.fromiter((self.silent(v) for v in self.levels(frames)), dtype=bool, count=frames.shape[0])

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=bool)

    def silent(self, level: float) -> bool:
        c = self.cfg
        if c.threshold_db is not None:
            return level < c.threshold_db
        if self.floor is None:
            self.floor = c.floor_min_db
        if level < self.floor:
            self.floor = max(level, c.floor_min_db)
        else:
            self.floor += self.rise
        return level < max(self.floor + c.margin_db, c.speech_min_db)


class Detector(Protocol):
    """Silence decisions per 10 ms frame, in order; a detector may decide a frame later than it arrives."""

    def push(self, frames: np.ndarray) -> np.ndarray:
        """(n, FRAME) samples -> the silence decisions (bool) of the next frames it can decide."""

    def flush(self) -> np.ndarray:
        """The end of the stream: decisions for every frame still waiting."""


DETECTORS = ("energy", "silero")


def make_detector(cfg: EndpointConfig) -> Detector:
    if cfg.detector == "silero":
        from ..audio.vad import SileroDetector, shared_model

        return SileroDetector(shared_model(), cfg.vad_threshold, FRAME)
    return EnergyDetector(cfg)


class Sink(Protocol):
    """Where an :class:`Endpointer` sends audio and cuts (a driver implements it)."""

    def feed(self, samples: np.ndarray, start: int) -> None:
        """Samples of the open segment; ``start`` = their first sample's index in the stream."""

    def cut(self, end: int, speech_end: int, rule: str) -> None:
        """Close the open segment at stream sample ``end`` (speech ended at ``speech_end``), by ``rule``."""

    def wants_end(self) -> bool:
        """Has the model asked to end the open segment (rule 3)?"""


class Endpointer:
    """Decides where segments start and end; sends audio and cuts to a :class:`Sink` as frames come in.

    Feed any block size with :meth:`push`; :meth:`close` ends the stream (the open segment is closed there).
    Decisions are made per 10 ms frame in stream order, and the sink sees audio of the open segment at least
    once per ``feed_samples`` (so the model keeps reading while the endpointer waits for a pause).
    """

    def __init__(self, cfg: EndpointConfig, sink: Sink, feed_samples: int = 5120) -> None:
        self.cfg = cfg
        self.sink = sink
        self.detector = make_detector(cfg)
        self._waiting: deque[np.ndarray] = deque()  # frames the detector has not decided yet
        self.feed_samples = feed_samples
        self._min_silence = cfg.frames(cfg.min_silence_ms)
        self._eos_silence = cfg.frames(cfg.eos_silence_ms)
        self._min_speech = cfg.frames(cfg.min_speech_ms)
        self._pre_roll = int(round(cfg.pre_roll * SAMPLE_RATE / 1000.0))
        self._max_segment = int(round(cfg.max_segment_s * SAMPLE_RATE))
        self.pos = 0  # stream samples consumed into frames
        self._rest = np.zeros(0, np.float32)  # samples short of a frame
        # idle (between segments): recent audio, so a segment can start at the first frame of speech
        self._idle: deque[tuple[int, np.ndarray, bool]] = deque()  # (start sample, frame, silent)
        self._idle_keep = self._pre_roll // FRAME + 2 * self._min_speech + 8  # frames kept
        self.in_segment = False
        self.seg_start = 0  # first sample of the open segment
        self._pending: list[np.ndarray] = []  # frames of the open segment not yet fed
        self._pending_n = 0
        self._fed_to = 0  # stream sample up to which the open segment has been fed
        self._silent_run = 0  # consecutive silent frames (open segment)
        self._run, self._first, self._gap = 0, None, 0  # speech run between segments (see _idle_frame)
        self.closed = False

    # -- input --------------------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> None:
        if self.closed:
            raise RuntimeError("push() after close()")
        a = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._rest, a]) if self._rest.size else a
        n = buf.shape[0] // FRAME
        self._rest = buf[n * FRAME :].copy()
        if n == 0:
            return
        frames = buf[: n * FRAME].reshape(n, FRAME)
        self._waiting.extend(frames)
        self._decided(self.detector.push(frames))
        if self.in_segment:
            self._feed()

    def close(self) -> None:
        """End of the stream: the partial last frame joins the open segment, which is closed."""
        if self.closed:
            return
        self.closed = True
        self._decided(self.detector.flush())
        if self.in_segment:
            if self._rest.size:
                self._pending.append(self._rest)
                self._pending_n += self._rest.shape[0]
            end = self.pos + self._rest.shape[0]
            self._close(end, end - self._silent_run * FRAME, "end")
        self._rest = np.zeros(0, np.float32)

    # -- the rules ----------------------------------------------------------------------------------------
    def _decided(self, silent: np.ndarray) -> None:
        for s in silent:
            self._frame(self._waiting.popleft(), bool(s))

    def _frame(self, frame: np.ndarray, silent: bool) -> None:
        start = self.pos
        self.pos += FRAME
        if not self.in_segment:
            self._idle.append((start, frame, silent))
            while len(self._idle) > self._idle_keep:
                self._idle.popleft()
            onset = self._idle_frame(start, silent)
            if onset is not None:
                self._open(onset)
            return
        self._pending.append(frame)
        self._pending_n += FRAME
        self._silent_run = self._silent_run + 1 if silent else 0
        if self._pending_n >= self.feed_samples:
            self._feed()
        speech_end = self.pos - self._silent_run * FRAME
        if self._silent_run >= self._min_silence:
            self._close(self.pos, speech_end, "silence")
        elif self.pos - self.seg_start >= self._max_segment:
            self._close(self.pos, speech_end, "max_length")
            if not silent:  # speech goes on: the next segment starts right here
                self._open_at(self.pos)
        elif self._silent_run >= self._eos_silence:
            self._feed()  # the model's EOS may be waiting on audio not fed yet
            if self.sink.wants_end():
                self._close(self.pos, speech_end, "model_eos")

    def _idle_frame(self, start: int, silent: bool) -> Optional[int]:
        """Track the current run of speech between segments (gaps under 30 ms bridged); its first sample once it
        has lasted min_speech_ms, else None."""
        if silent:
            self._gap += 1
            if self._gap >= 3:
                self._run, self._first = 0, None
            return None
        self._gap = 0
        self._run += 1
        if self._first is None:
            self._first = start
        return self._first if self._run >= self._min_speech else None

    def _open(self, onset: int) -> None:
        """Open a segment at ``onset`` less the pre-roll (as far as the idle buffer reaches)."""
        keep = [(s, f) for s, f, _ in self._idle if s + FRAME > onset - self._pre_roll]
        self._idle.clear()
        self._run, self._first, self._gap = 0, None, 0
        self._open_at(keep[0][0])
        for _, f in keep:
            self._pending.append(f)
            self._pending_n += FRAME

    def _open_at(self, start: int) -> None:
        self.in_segment = True
        self.seg_start = start
        self._fed_to = start
        self._silent_run = 0

    def _feed(self) -> None:
        if not self._pending_n:
            return
        x = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_n = [], 0
        start = self._fed_to
        self._fed_to += x.shape[0]
        self.sink.feed(x, start)

    def _close(self, end: int, speech_end: int, rule: str) -> None:
        self._feed()
        self.in_segment = False
        self._silent_run = 0
        self.sink.cut(end, speech_end, rule)


# ----------------------------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One utterance of a long stream. Sample indices are absolute (from the start of the stream)."""

    index: int
    start: int  # first sample fed to the model
    end: int = -1  # sample where it was closed (-1: open)
    speech_end: int = -1  # end of its speech (before the trailing silence that closed it)
    rule: str = ""  # what closed it: silence / max_length / model_eos / end
    words: list[Word] = field(default_factory=list)  # absolute times

    @property
    def start_ms(self) -> float:
        return self.start / 16.0

    @property
    def end_ms(self) -> float:
        return self.end / 16.0

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def as_dict(self) -> dict:
        return {"index": self.index, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "speech_end_ms": self.speech_end / 16.0, "rule": self.rule, "text": self.text,
                "words": [{"text": w.text, "time_ms": w.time_ms} for w in self.words]}


def unheard(segments: Sequence[Segment], min_speech_ms: float = 500.0) -> tuple[float, list[int]]:
    """Seconds of speech in closed segments that produced no words, and those segments' indices.

    A segment counts when its speech lasted at least ``min_speech_ms`` (a cough or a click may rightly give
    nothing). This is the "never lose words silently" report of long transcriptions.
    """
    bad = [s for s in segments if s.end >= 0 and not s.words and (s.speech_end - s.start) / 16.0 >= min_speech_ms]
    return sum((s.speech_end - s.start) / SAMPLE_RATE for s in bad), [s.index for s in bad]


class _Segments:
    """Segment bookkeeping shared by the drivers: absolute word times, the list of segments, callbacks."""

    def __init__(self, on_segment: Optional[Callable[[Segment], None]]) -> None:
        self.segments: list[Segment] = []
        self.words: list[Word] = []
        self.on_segment = on_segment

    @property
    def current(self) -> Optional[Segment]:
        return self.segments[-1] if self.segments and self.segments[-1].end < 0 else None

    def open(self, start: int) -> Segment:
        seg = Segment(index=len(self.segments), start=start)
        self.segments.append(seg)
        return seg

    def add(self, seg: Segment, words: Iterable[Word]) -> list[Word]:
        out = [replace(w, time_ms=w.time_ms + seg.start_ms) for w in words]
        seg.words += out
        self.words += out
        return out

    def closed(self, seg: Segment, end: int, speech_end: int, rule: str) -> None:
        seg.end, seg.speech_end, seg.rule = end, max(seg.start, speech_end), rule
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
        self._take(self.session.push(samples))

    def cut(self, end: int, speech_end: int, rule: str) -> None:
        seg = self._segs.current
        if seg is None:
            return
        self._take(self.session.finish())
        if rule != "end":  # the stream goes on: a fresh utterance (at the end the final state stays readable)
            self.session.reset()
        self._segs.closed(seg, end, speech_end, rule)

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
        self.carry: list[tuple] = []
        self.new: list[Word] = []

    def feed(self, samples: np.ndarray, start: int) -> None:
        if self.closing is not None or self.carry:
            self.carry.append(("feed", samples, start))
            return
        if self.segs.current is None:
            self.segs.open(start)
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
        if self.closing is not None or self.carry:
            return False
        s = self.owner.engine.sessions[self.i].state
        return s.k_extra > 0 or s.ended

    def collect(self) -> None:
        """Words the engine wrote for this stream since the last call (they belong to the engine's segment)."""
        words = self.owner.engine.poll(self.i)
        if words:
            self.new += self.segs.add(self.segs.current, words)

    def complete(self) -> None:
        """The segment being finished is done: close it, start a fresh utterance, replay what waited."""
        end, speech_end, rule = self.closing
        self.closing = None
        self.collect()
        self.segs.closed(self.segs.current, end, speech_end, rule)
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
        self.on_segment = on_segment
        self.slots = [self._slot(i) for i in range(n)]
        self.endpointers = [Endpointer(endpoint, slot, model.chunk_samples) for slot in self.slots]

    def _slot(self, i: int) -> _Slot:
        return _Slot(self, i, (lambda seg, i=i: self.on_segment(i, seg)) if self.on_segment else None)

    def reset(self, i: int, k: Optional[int] = None) -> None:
        """Make stream ``i`` a fresh stream (a new connection in that slot): engine slot, endpointer and segments
        start over, sample 0 is the new stream's first sample, and nothing of the old stream is returned.
        ``k``: wait-k for this stream (None: the engine's)."""
        self.engine.reset(i, k=self.engine.cfg.k if k is None else k)
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
            for slot in done:
                slot.complete()
            if not done:
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


__all__ = ["DETECTORS", "EndpointConfig", "EnergyDetector", "Endpointer", "Segment", "SegmentedSession", "SegmentedStreams", "unheard"]
