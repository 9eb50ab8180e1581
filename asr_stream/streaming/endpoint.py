"""The endpointer: where the segments of a long stream start and end (rules 1-3 of :mod:`.segment`).

It decides on 10 ms frames (a detector says which are silent: :class:`EnergyDetector`, the frame level against an
adaptive noise floor, or ``detector="silero"``, the Silero VAD network of :mod:`asr_stream.audio.vad`, which decides
a frame up to 32 ms after it arrived) and sends audio and cuts to a
:class:`Sink` (a segment driver); it knows nothing of models except what the sink answers to :meth:`Sink.wants_end`
(rule 3). Split out of ``segment.py``, which re-exports every name here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from ..audio.io import SAMPLE_RATE
from .restart import RestartRule

FRAME = 160  # samples = 10 ms at 16 kHz: the endpointer's time step
DETECTORS = ("energy", "silero")


@dataclass(frozen=True)
class EndpointConfig:
    """Endpoint rules and the energy detector behind them. Times in ms or s as named; levels in dBFS."""

    min_silence_ms: float = 300.0
    """Rule 1: silence after speech that closes a segment. Short, because the models know single sentences:
    on held-out espeak sentences joined by 0.2-1.5 s pauses, 300 ms gave one segment per sentence (the longest
    pause inside a sentence was 140 ms) and 5.6 % WER, 600 ms merged sentences and gave 16.7 %."""
    pause_after_s: float = 2.0
    """Rule 1 (``pause``): a segment that is this long (seconds of audio) closes at a pause of ``pause_ms``."""
    pause_ms: float = 100.0
    """Rule 1 (``pause``): held-out sentences joined by 100 / 200 ms pauses went from 13.8 / 16.8 % WER (restarts
    alone) to 8.9 / 7.2 % (long pauses: 4.9 %), measured with the cut 100 ms into the pause; with today's cut where
    the speech comes back, 8.2 / 8.0 % against 7.9 % on 80 sentences (README, benchmarks/results/fluent)."""
    max_segment_s: float = 20.0
    """Rule 2: longest segment, in seconds of audio (the models are trained on utterances up to ~15 s)."""
    eos_silence_ms: float = 150.0
    """Rule 3: a pause this long closes the segment once the model has asked to end it (an early EOS)."""
    min_speech_ms: float = 50.0
    """Speech (non-silent frames, gaps under 30 ms bridged) needed to start a segment."""
    pre_roll_ms: Optional[float] = None
    """Audio kept before the first frame of speech when a segment starts; None: the detector's own (energy 20 ms;
    silero 80 ms, since it calls speech up to ~60 ms after the onset: with 20 ms, 10 of 304 words of a held-out
    recording began before their segment, with 80 ms 1; benchmarks/endpointing/vad_endpoint.py)."""
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
    clean, -20 dB or white noise at 10-20 dB either way (benchmarks/endpointing/vad_endpoint.py)."""
    restart_s: Optional[float] = RestartRule.max_s
    """Rule 4: a segment restarts at its last word after reading this many seconds of audio (its model also restarts
    after an early EOS in speech; :class:`~asr_stream.streaming.restart.RestartRule`). None: no restarts."""

    def __post_init__(self) -> None:
        for name in ("min_silence_ms", "max_segment_s", "eos_silence_ms", "min_speech_ms", "pause_after_s", "pause_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"endpoint {name} must be a finite number > 0, got {v!r}")
        if self.pre_roll_ms is not None and not (math.isfinite(self.pre_roll_ms) and self.pre_roll_ms >= 0):
            raise ValueError(f"endpoint pre_roll_ms must be >= 0, got {self.pre_roll_ms!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"endpoint detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if not 0.15 < self.vad_threshold < 1.0:
            raise ValueError(f"endpoint vad_threshold must be in (0.15, 1), got {self.vad_threshold!r}")
        self.restart_rule()  # a bad restart_s fails here, with the endpoint's settings

    def restart_rule(self) -> Optional[RestartRule]:
        """Rule 4 as the sessions of a segment driver run it (None: off)."""
        return None if self.restart_s is None else RestartRule(max_s=self.restart_s)

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
        self._pause = cfg.frames(cfg.pause_ms)
        self._pause_after = int(round(cfg.pause_after_s * SAMPLE_RATE))
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
        self._count_from = 0  # rule 2 counts from here: the segment's start or its last restart (see restarted)
        self._pending: list[np.ndarray] = []  # frames of the open segment not yet fed
        self._pending_n = 0
        self._fed_to = 0  # stream sample up to which the open segment has been fed
        self._silent_run = 0  # consecutive silent frames (open segment)
        self._pause_ends = False  # rule 1's pause: this pause ends the open segment (at the speech after it)
        self._hold = -(-self._pre_roll // FRAME)  # frames of such a pause that become the next segment's pre-roll
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
            self._feed(self._held())

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
        if self.in_segment and self._pause_ends and not silent:
            self._end_at_pause(start)  # speech again after a pause that ends this segment
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
            self._feed(self._held())
        speech_end = self.pos - self._silent_run * FRAME
        if self._silent_run >= self._min_silence:
            self._close(self.pos, speech_end, "silence")
        elif self._pause_ends:
            pass  # the pause ends the segment where the speech comes back, or min_silence_ms in (rule 1)
        elif self._silent_run >= self._pause and self.pos - self.seg_start >= self._pause_after:
            self._pause_ends = True  # the segment ends where the speech comes back (_end_at_pause)
        elif self.pos - self._count_from >= self._max_segment:
            self._close(self.pos, speech_end, "max_length")
            if not silent:  # speech goes on: the next segment starts right here
                self._open_at(self.pos)
        elif self._silent_run >= self._eos_silence:
            self._feed(self._held())  # the model's EOS may be waiting on audio not fed yet
            if self.sink.wants_end():
                self._close(self.pos, speech_end, "model_eos")

    def _end_at_pause(self, start: int) -> None:
        """Rule 1's pause: speech comes back (the detector's first speech frame) at sample ``start`` after a pause of
        ``pause_ms`` to ``min_silence_ms`` in a segment ``pause_after_s`` long. The segment ends the next segment's
        pre-roll (:attr:`EndpointConfig.pre_roll`: energy 20 ms, silero 80 ms) before that frame, so it keeps the rest
        of the pause as trailing silence (the model needs it after a sentence's last word) rather than ending
        ``pause_ms`` in; the pause's last frames go back to the idle buffer, where :meth:`_open` finds them as the next
        segment's pre-roll. A pre-roll longer than the pause gives the whole pause to the next segment."""
        hold = min(self._hold, self._silent_run)  # the frames _held kept back: the next segment starts with them
        held = self._pending[len(self._pending) - hold :] if hold else []
        if hold:
            del self._pending[len(self._pending) - hold :]
            self._pending_n -= hold * FRAME
        cut = start - hold * FRAME
        self._close(cut, start - self._silent_run * FRAME, "pause")
        for j, f in enumerate(held):
            self._idle.append((cut + j * FRAME, f, True))

    def _held(self) -> int:
        """Frames at the end of the open segment that are not fed yet: the last pre-roll's worth of a pause that may
        end the segment by rule 1's pause (the segment is ``pause_after_s`` long before the pause is ``min_silence_ms``
        long), since they go to the next segment if the speech comes back. The rule is the same for every frame of
        the pause, so what is fed never depends on block sizes; the frames reach the sink at the cut."""
        if not self._silent_run or self._pause >= self._min_silence:
            return 0
        last = self.pos + (self._min_silence - 1 - self._silent_run) * FRAME  # the pause's last frame before rule 1
        if last - self.seg_start < self._pause_after:
            return 0
        return min(self._hold, self._silent_run)

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

    def restarted(self, at: int) -> None:
        """The sink restarted the open segment at stream sample ``at`` (rule 4): rule 2 counts from there. (Rule 1's
        ``pause`` part does not: it must not depend on when a batched sink notices a restart.)"""
        if self.in_segment:
            self._count_from = max(self._count_from, at)

    def _open_at(self, start: int) -> None:
        self.in_segment = True
        self.seg_start = self._count_from = start
        self._fed_to = start
        self._silent_run = 0

    def _feed(self, keep: int = 0) -> None:
        """Send the open segment's pending audio to the sink, all but its last ``keep`` frames."""
        if self._pending_n <= keep * FRAME:
            return
        kept = self._pending[len(self._pending) - keep :] if keep else []
        if keep:
            del self._pending[len(self._pending) - keep :]
        x = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_n = kept, keep * FRAME
        start = self._fed_to
        self._fed_to += x.shape[0]
        self.sink.feed(x, start)

    def _close(self, end: int, speech_end: int, rule: str) -> None:
        self._feed()
        self.in_segment = self._pause_ends = False
        self._silent_run = 0
        self.sink.cut(end, speech_end, rule)


__all__ = ["DETECTORS", "FRAME", "EndpointConfig", "EnergyDetector", "Endpointer", "Sink"]
