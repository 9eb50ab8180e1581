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

    p = _existing_file(path)
    try:
        with sf.SoundFile(str(p)) as f:
            if f.channels == 0:
                raise AudioError(f"{p}: audio has zero channels")
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:  # corrupt, truncated, or unknown format
        raise _decode_error(p, e) from None
    return to_mono_16k(samples, rate, p)


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    return p


def _decode_error(p: Path, e: Exception) -> AudioError:
    """libsndfile's complaint (corrupt, truncated, unknown format) as a one-line AudioError."""
    return AudioError(f"{p}: cannot decode audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample rate Hz, channels, frames) of an audio file, checked without reading the samples."""
    import soundfile as sf

    p = _existing_file(path)
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise _decode_error(p, e) from None
    if info.channels == 0:
        raise AudioError(f"{p}: audio has zero channels")
    if not (MIN_INPUT_RATE <= int(info.samplerate) <= MAX_INPUT_RATE):
        raise AudioError(f"{p}: sample rate {info.samplerate} Hz is outside the supported {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz")
    return int(info.samplerate), int(info.channels), int(info.frames)


def audio_blocks(path: str | os.PathLike, block_s: float = 10.0):
    """Read a file as 16 kHz mono float32 blocks of about ``block_s`` seconds, without holding it all in memory.

    The same conversion as :func:`load_audio` (down-mix by averaging; other rates resampled with soxr HQ, as one
    stream so block edges are seamless), the same one-line :class:`AudioError` for bad files. A file with
    NaN/inf samples fails at the block that holds them (what came before has been yielded).
    """
    import soundfile as sf

    rate, _, _ = audio_info(path)
    p = Path(path)
    resampler = None
    if rate != SAMPLE_RATE:
        import soxr

        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    n = 0
    try:
        with sf.SoundFile(str(p)) as f:
            for block in f.blocks(blocksize=max(1, int(block_s * rate)), dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(f"{p}: audio has NaN/inf samples (at {n / rate:.1f} s)")
                n += block.shape[0]
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                out = resampler.resample_chunk(mono) if resampler is not None else mono
                if out.size:
                    yield np.ascontiguousarray(out, dtype=np.float32)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if tail.size:
                    yield np.ascontiguousarray(tail, dtype=np.float32)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise _decode_error(p, e) from None
    if n == 0:
        raise AudioError(f"{p}: audio is empty (0 samples)")


class LevelCheck:
    """Running checks on 16 kHz audio that the models serve badly; :meth:`warnings` says what was found.

    Feed the blocks given to the model with :meth:`push`. Found: clipping (over 0.1 % of samples at full scale),
    a very low level (the loudest second under ``quiet_db`` dBFS RMS), and, from the file's native rate, a
    narrow band (under 16 kHz the model hears only up to half the rate).
    """

    # The bundled model's training speech has its loudest second at about -18 dBFS; on held-out sentences its WER
    # goes 7 % -> 32 % at -6 dB and 93 % at -10 dB (its features are not level-normalised), so warn from -24.
    def __init__(self, native_rate: int = SAMPLE_RATE, quiet_db: float = -24.0,
                 remedy: str = "raise the level, e.g. sox in.wav out.wav norm -1") -> None:
        self.native_rate = native_rate
        self.quiet_db = quiet_db
        self.remedy = remedy  # what the quiet warning tells the user to do
        self.samples = 0
        self.clipped = 0
        self.loudest_db = -200.0
        self._sec = np.zeros(0, np.float32)

    def push(self, x: np.ndarray) -> None:
        self.samples += x.shape[0]
        self.clipped += int(np.count_nonzero(np.abs(x) >= 0.999))
        buf = np.concatenate([self._sec, x]) if self._sec.size else x
        n = buf.shape[0] // SAMPLE_RATE
        if n:
            secs = buf[: n * SAMPLE_RATE].reshape(n, SAMPLE_RATE).astype(np.float64)
            self.loudest_db = max(self.loudest_db, float(10 * np.log10(np.max(np.mean(secs * secs, axis=1)) + 1e-20)))
        self._sec = buf[n * SAMPLE_RATE :].copy()

    def warnings(self) -> list[str]:
        if self._sec.size and self.samples < SAMPLE_RATE:  # shorter than a second: judge what there is
            self.loudest_db = max(self.loudest_db, float(10 * np.log10(np.mean(self._sec.astype(np.float64) ** 2) + 1e-20)))
        out = []
        if self.native_rate < SAMPLE_RATE:
            out.append(f"sampled at {self.native_rate} Hz: the model hears only up to {self.native_rate // 2} Hz; expect errors")
        if self.samples and self.clipped > 0.001 * self.samples:
            out.append(f"clipping: {100 * self.clipped / self.samples:.1f} % of samples at full scale; expect errors")
        if self.samples and self.loudest_db < self.quiet_db:
            out.append(f"quiet: loudest second at {self.loudest_db:.0f} dBFS (the bundled model was trained at about "
                       f"-18 dBFS and misses most words 10 dB below that); {self.remedy}")
        return out
