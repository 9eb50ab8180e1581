"""Any audio file -> 16 kHz mono float32. All input validation and its errors live here.

Every failure raises :class:`AudioError` whose message is one line naming the file and the problem,
so command-line tools can print it as-is without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # Hz; everything after this module works at this rate
MIN_INPUT_RATE = 8_000  # Hz; lower rates carry too little of the speech band to be useful
MAX_INPUT_RATE = 192_000  # Hz


class AudioError(ValueError):
    """Bad audio input: missing, unreadable, unsupported, empty or non-finite."""


def _where(source: str | os.PathLike | None) -> str:
    return str(source) if source is not None else "<audio>"


def to_mono_16k(samples: np.ndarray, sample_rate: int, source: str | os.PathLike | None = None) -> np.ndarray:
    """Validate decoded samples and convert them to 16 kHz mono float32.

    samples: (T,) or (T, C) array of any real dtype (integer PCM is scaled to [-1, 1]).
    Multi-channel audio is averaged to mono; other rates are resampled with librosa (soxr_hq).
    """
    where = _where(source)
    a = np.asarray(samples)
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise AudioError(f"{where}: audio has zero channels")
    elif a.ndim != 1:
        raise AudioError(f"{where}: expected samples shaped (time,) or (time, channels), got {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise AudioError(f"{where}: unsupported sample type {a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(-np.iinfo(a.dtype).min)
    a = a.astype(np.float32, copy=False)
    if a.shape[0] == 0:
        raise AudioError(f"{where}: audio is empty (0 samples)")
    if not np.isfinite(a).any():
        raise AudioError(f"{where}: audio has no finite samples (all NaN/inf)")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise AudioError(f"{where}: audio has {bad} NaN/inf samples")
    if a.ndim == 2:
        a = a.mean(axis=1)
    if not (MIN_INPUT_RATE <= int(sample_rate) <= MAX_INPUT_RATE):
        raise AudioError(
            f"{where}: sample rate {sample_rate} Hz is outside the supported {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz"
        )
    if int(sample_rate) != SAMPLE_RATE:
        import librosa

        a = librosa.resample(a, orig_sr=int(sample_rate), target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(a, dtype=np.float32)


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Read a wav/flac/ogg/... file (anything libsndfile decodes) as 16 kHz mono float32 samples."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        with sf.SoundFile(str(p)) as f:
            if f.channels == 0:
                raise AudioError(f"{p}: audio has zero channels")
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:  # corrupt, truncated, or unknown format
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"{p}: cannot decode audio ({msg})") from None
    return to_mono_16k(samples, rate, p)
