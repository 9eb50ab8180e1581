"""A robustness test set: the same test utterances as a new user's recordings would differ from them, plus
non-speech that must transcribe to nothing.

From the utterances of a test corpus (e.g. ``librispeech:data/synthetic:test``, the training voices'
held-out sentences), :func:`make_robustness_set` writes one JSONL manifest per condition under ``out/``:

=================== =================================================================================
``lead-silence``    0.4 s of digital silence before the speech (the issue's failing case; see below)
``gain-20db``       the speech 20 dB quieter
``8khz``            the file stored at 8 kHz (the loader resamples it to 16 kHz: nothing above 4 kHz)
``noise-snr10``     white noise at 10 dB SNR (over the speech's mean power)
``nonspeech``       silence (digital zero, and -70 dBFS hiss) and white / pink noise at -40 to -10 dBFS,
                    3 and 10 s long; empty transcripts: every word output is an insertion
=================== =================================================================================

The manifests carry no word timings (the JSONL format has none), so latency percentiles (PR50/PR90) are not
measured on this set; WER and words output are what it is for. Noise is seeded from ``seed`` and the utterance index: the set is reproducible.
The WER of a condition compares with the same utterances clean (``clean`` holds them unchanged).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE, load_audio
from ..audio.noise import nonspeech_clips
from ..data.corpus import Utterance, WordTiming, write_manifest

LEAD_SILENCE_S = 0.4
CONDITIONS = ("clean", "lead-silence", "gain-20db", "8khz", "noise-snr10", "nonspeech")


def _shift(words: tuple[WordTiming, ...] | None, s: float) -> tuple[WordTiming, ...] | None:
    return None if words is None else tuple(WordTiming(w.word, round(w.start + s, 3), round(w.end + s, 3)) for w in words)


def make_robustness_set(utts: Sequence[Utterance], out: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write every condition's audio and manifest (``out/<condition>.jsonl``); returns condition -> manifest.
    Refuses a non-empty ``out`` (never overwrites)."""
    import soundfile as sf

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; choose a new folder")
    if not utts:
        raise ValueError("no source utterances")
    rows: dict[str, list[Utterance]] = {c: [] for c in CONDITIONS}

    def write(cond: str, name: str, x: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
        p = out / cond / f"{name}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        sf.write(str(p), x / peak * 0.99 if peak > 0.99 else x, rate, subtype="PCM_16")
        return p

    for i, u in enumerate(utts):
        x = load_audio(u.audio_path)
        dur = len(x) / SAMPLE_RATE
        power = float(np.mean(x.astype(np.float64) ** 2))
        noise = np.random.default_rng([seed, i]).standard_normal(len(x)) * np.sqrt(power / 10.0)  # 10 dB SNR
        lead = np.concatenate([np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE), np.float32), x])
        import librosa

        narrow = librosa.resample(x, orig_sr=SAMPLE_RATE, target_sr=8000, res_type="soxr_hq")
        for cond, audio, rate, words, d in (
            ("clean", x, SAMPLE_RATE, u.words, dur),
            ("lead-silence", lead, SAMPLE_RATE, _shift(u.words, LEAD_SILENCE_S), dur + LEAD_SILENCE_S),
            ("gain-20db", x * 0.1, SAMPLE_RATE, u.words, dur),
            ("8khz", narrow, 8000, u.words, len(narrow) / 8000),
            ("noise-snr10", x + noise, SAMPLE_RATE, u.words, dur),
        ):
            p = write(cond, u.id, np.asarray(audio, np.float32), rate)
            rows[cond].append(replace(u, id=f"{u.id}-{cond}", audio_path=p, duration=round(d, 4), words=words))
    for name, x in nonspeech_clips(seed):
        p = write("nonspeech", name, x)
        rows["nonspeech"].append(Utterance(f"nonspeech-{name}", p, "", len(x) / SAMPLE_RATE, "nonspeech"))
    return {c: write_manifest(r, out / f"{c}.jsonl") for c, r in rows.items()}
