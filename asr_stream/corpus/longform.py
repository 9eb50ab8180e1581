"""Long-form test recordings: held-out utterances joined with random pauses into one recording.

A long recording is what the models were never trained on (they learn single sentences); these are the
test material for endpointing (:mod:`asr_stream.streaming.segment`). Each recording comes with its
reference transcript and the span of every utterance in it, so long-form WER can be set against the WER of
the same utterances one by one, and each utterance's words can be looked for near its span.

``tools/corpus/make_longform.py`` writes them from a corpus split (LibriSpeech layout, e.g. the synthetic test set)
or from the held-out list ``tests/data/heldout.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE


@dataclass(frozen=True)
class Piece:
    """One utterance inside a long recording; times in seconds from the start of the recording."""

    id: str
    text: str
    start: float
    end: float


@dataclass
class LongRecording:
    audio: np.ndarray  # 16 kHz mono float32
    pieces: list[Piece]

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.pieces)

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE


def trim_silence(wave: np.ndarray, below_peak_db: float = 40.0) -> np.ndarray:
    """``wave`` without its leading and trailing silence: from the first to the last 10 ms frame whose level is
    within ``below_peak_db`` of the loudest frame's (espeak-ng ends its sentences with 0.1-0.5 s of silence, so a
    "0 ms pause" between untrimmed sentences is not fluent speech)."""
    n = wave.shape[0] // 160
    if n == 0:
        return wave
    level = 10.0 * np.log10(np.mean(wave[: n * 160].astype(np.float64).reshape(n, 160) ** 2, axis=1) + 1e-20)
    loud = np.nonzero(level >= level.max() - below_peak_db)[0]
    return wave[loud[0] * 160 : (loud[-1] + 1) * 160]


def join_utterances(items: Sequence[tuple[str, str]], load: Callable[[int], np.ndarray], seconds: float,
                    pause_range: tuple[float, float] = (0.2, 1.5), seed: int = 0, trim: bool = False) -> LongRecording:
    """Join utterances (``items[i]`` = (id, text), audio ``load(i)``) with uniform random pauses until the
    recording is ``seconds`` long (the last utterance completes it). Utterances are taken in a seeded random
    order, and the list is gone through again (in a new order) when a long recording needs more than it has.
    Pauses are digital silence, one before the first utterance too. ``trim``: each utterance's own leading and
    trailing silence is cut off first (:func:`trim_silence`), so the pauses are exactly the pauses drawn.
    """
    if not items:
        raise ValueError("no utterances to join")
    lo, hi = pause_range
    if not (0 <= lo <= hi):
        raise ValueError(f"pause_range must be 0 <= lo <= hi, got {pause_range}")
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    n = 0
    order: list[int] = []
    cache: dict[int, np.ndarray] = {}
    while n < seconds * SAMPLE_RATE:
        if not order:
            order = list(rng.permutation(len(items)))
        i = int(order.pop(0))
        pause = np.zeros(int(round(rng.uniform(lo, hi) * SAMPLE_RATE)), np.float32)
        if i not in cache:
            cache[i] = np.asarray(load(i), dtype=np.float32)
            cache[i] = trim_silence(cache[i]) if trim else cache[i]
        wave = cache[i]
        parts += [pause, wave]
        start = n + pause.shape[0]
        n = start + wave.shape[0]
        pieces.append(Piece(items[i][0], items[i][1], start / SAMPLE_RATE, n / SAMPLE_RATE))
    return LongRecording(np.concatenate(parts), pieces)


def write_recording(rec: LongRecording, path: str | os.PathLike) -> Path:
    """``path`` (.flac or .wav) plus ``<path>.pieces.json``; written under temporary names and renamed."""
    import soundfile as sf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), rec.audio, SAMPLE_RATE, format=path.suffix[1:].upper() or "FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    meta = path.with_name(path.name + ".pieces.json")
    tmp = meta.with_name(f".{meta.name}.tmp")
    tmp.write_text(json.dumps([p.__dict__ for p in rec.pieces], indent=0) + "\n")
    os.replace(tmp, meta)
    return path


def read_pieces(path: str | os.PathLike) -> list[Piece]:
    """The pieces written beside a recording by :func:`write_recording`."""
    return [Piece(**d) for d in json.loads(Path(str(path) + ".pieces.json").read_text())]


__all__ = ["LongRecording", "Piece", "join_utterances", "read_pieces", "trim_silence", "write_recording"]
