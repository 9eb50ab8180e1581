"""Any audio file -> 16 kHz mono float32. All input validation and its errors live here.

Every failure raises :class:`AudioError` whose message is one line naming the file and the problem,
so command-line tools can print it as-is without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # Hz; everything after this module works at this rate (the one definition of the package)
SAMPLES_PER_MS = SAMPLE_RATE // 1000  # 16: sample counts <-> milliseconds
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


def _wav_declared_s(p: Path) -> float | None:
    """Seconds of audio a RIFF/WAVE header declares (its data chunk's size over the fmt chunk's bytes per second),
    None when the file is no such WAV or the size is unknown (0 or 0xFFFFFFFF: a stream written without seeking
    back)."""
    import struct

    try:
        with open(p, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt " and size >= 16:
                    byte_rate = struct.unpack("<HHII", f.read(12))[3]
                    f.seek(size - 12 + (size & 1), 1)
                elif cid == b"data":
                    return None if not byte_rate or size in (0, 0xFFFFFFFF) else size / byte_rate
                else:
                    f.seek(size + (size & 1), 1)
    except (OSError, struct.error):
        return None


class AudioFile:
    """An audio file read block by block as 16 kHz mono float32 (:meth:`blocks`), without holding it in memory,
    and what was found on the way: :attr:`warnings` (one line each) and :attr:`complete`.

    The conversion of :func:`load_audio` (other rates resampled with soxr HQ as one stream, so block edges are
    seamless) and its one-line :class:`AudioError` for bad files; a file with NaN/inf samples fails at the block
    that holds them (what came before has been yielded). Two things a plain read hides are said:

    - channels that cancel when averaged to mono (the average more than ``cancel_db`` below the channels' mean
      power: one channel wired in opposite phase) would be silence; the loudest channel is transcribed alone;
    - a file shorter than its header declares (a WAV copy or recording cut short: libsndfile reads what is
      there) is ``complete = False``, with a warning.
    """

    def __init__(self, path: str | os.PathLike, block_s: float = 10.0, cancel_db: float = 10.0) -> None:
        self.rate, self.channels, self.frames = audio_info(path)
        self.path = Path(path)
        self.block_s = block_s
        self.cancel_db = cancel_db
        self.channel: int | None = None  # None: the channels' average; else the one channel transcribed
        self.warnings: list[str] = []
        self.complete = True

    def _raw(self):
        import soundfile as sf

        try:
            with sf.SoundFile(str(self.path)) as f:
                yield from f.blocks(blocksize=max(1, int(self.block_s * self.rate)), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise _decode_error(self.path, e) from None

    def _choose_channel(self) -> None:
        """One pass over a multi-channel file's powers: average the channels, unless they cancel (see the class)."""
        power, mix = np.zeros(self.channels), 0.0
        try:
            for block in self._raw():
                if not np.isfinite(block).all():
                    return  # said, with its position, by blocks() (which transcribes what comes before)
                b = block.astype(np.float64)
                power += np.sum(b * b, axis=0)
                mix += float(np.sum(np.mean(b, axis=1) ** 2))
        except AudioError:
            return  # a decoding error halfway: the same
        mean = float(np.mean(power))
        if mean > 0 and mix < mean * 10 ** (-self.cancel_db / 10):
            self.channel = int(np.argmax(power))
            avg = f"{10 * np.log10(mean / mix):.0f} dB below them" if mix > 0 else "silence"
            self.warnings.append(f"the {self.channels} channels cancel when averaged to mono (the average is {avg}: "
                                 f"a channel in opposite phase?); transcribing channel {self.channel + 1} "
                                 f"(the loudest) alone")

    def blocks(self):
        """Yield the file as 16 kHz mono float32 blocks of about ``block_s`` seconds."""
        if self.channels > 1:
            self._choose_channel()
        resampler = None
        if self.rate != SAMPLE_RATE:
            import soxr

            resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        n = 0
        for block in self._raw():
            if not np.isfinite(block).all():
                raise AudioError(f"{self.path}: audio has NaN/inf samples (at {n / self.rate:.1f} s)")
            n += block.shape[0]
            if self.channel is not None:
                mono = block[:, self.channel]
            else:
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            out = resampler.resample_chunk(mono) if resampler is not None else mono
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)
        if n == 0:
            raise AudioError(f"{self.path}: audio is empty (0 samples)")
        declared = max(self.frames / self.rate, _wav_declared_s(self.path) or 0.0)
        if declared > n / self.rate + 1e-3:
            self.complete = False
            self.warnings.append(f"truncated: the header declares {declared:.2f} s of audio, the file holds "
                                 f"{n / self.rate:.2f} s (a copy or recording cut short?); transcribed what is there")


def audio_blocks(path: str | os.PathLike, block_s: float = 10.0):
    """:meth:`AudioFile.blocks` of ``path`` (what it found is not kept: use :class:`AudioFile` to see it)."""
    yield from AudioFile(path, block_s).blocks()


class LevelCheck:
    """Running checks on 16 kHz audio that the models serve badly; :meth:`warnings` says what was found.

    Feed the blocks given to the model with :meth:`push`. Found: clipping (over 0.1 % of samples at full scale),
    a very low level (the loudest second under ``quiet_db`` dBFS RMS), a steady sound (see below), and, from the
    file's native rate, a narrow band (under 16 kHz the model hears only up to half the rate).

    Steady sound: speech stops between words, so the quietest 2 % of its 20 ms frames lie far below the loudest
    5 %; noise or music under (or instead of) the speech fills those gaps. Over at least 1 s of frames that are not
    digital silence, a gap under ``steady_db`` is said. Measured (20 ms frames, p95 - p2): the 40 held-out corpus
    sentences of tests/data/heldout.json 49-70 dB, 18 other espeak-ng, Flite and Festival sentences and the
    bundled sample 25-66 dB; the held-out sentences with white noise at 20 dB SNR 25-28 dB, at 10 dB SNR 16-18.5 dB
    (the bundled model: 102 % WER there, 7.6 % clean), white noise alone 1.5 dB, plucked, strummed and held
    chords 2-19.5 dB. A single chord left to ring out into silence (25-33 dB) is not caught.
    """

    _FRAME = 320  # samples: 20 ms frames for the steady-sound check
    _BINS = np.arange(-90.0, 0.01, 0.5)  # frame dBFS bin edges

    # The bundled model's training speech has its loudest second at about -18 dBFS; on held-out sentences its WER
    # goes 7 % -> 32 % at -6 dB and 93 % at -10 dB (its features are not level-normalised), so warn from -24.
    def __init__(self, native_rate: int = SAMPLE_RATE, quiet_db: float = -24.0,
                 remedy: str = "raise the level, e.g. sox in.wav out.wav norm -1", steady_db: float = 22.0) -> None:
        self.native_rate = native_rate
        self.quiet_db = quiet_db
        self.steady_db = steady_db
        self._frames = np.zeros(len(self._BINS) + 1, np.int64)  # 20 ms frame levels: counts per 0.5 dB bin
        self._rest = np.zeros(0, np.float32)
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
        buf = np.concatenate([self._rest, x]) if self._rest.size else x
        n = buf.shape[0] // self._FRAME
        if n:
            fr = buf[: n * self._FRAME].reshape(n, self._FRAME).astype(np.float64)
            db = 10 * np.log10(np.mean(fr * fr, axis=1) + 1e-20)
            db = db[db > self._BINS[0]]  # digital silence (-90 dBFS and below) is neither speech nor noise
            self._frames += np.bincount(np.searchsorted(self._BINS, db), minlength=len(self._frames))[: len(self._frames)]
        self._rest = buf[n * self._FRAME :].copy()

    def steady_gap_db(self) -> float | None:
        """dB between the loudest 5 % and the quietest 2 % of the 20 ms frames that are not digital silence (None
        under 1 s of them)."""
        total = int(self._frames.sum())
        if total < SAMPLE_RATE // self._FRAME:
            return None
        cum = np.cumsum(self._frames)
        lo, hi = (int(np.searchsorted(cum, q * total)) for q in (0.02, 0.95))
        return 0.5 * (hi - lo)

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
        gap = self.steady_gap_db()
        if gap is not None and gap < self.steady_db:
            out.append(f"steady sound: the quietest 2 % of the audio is only {gap:.0f} dB below the loudest 5 % (speech "
                       f"with pauses: 25 dB or more): noise or music under or instead of speech; expect wrong words "
                       f"(the bundled model: 103 % WER with white noise at 10 dB SNR)")
        return out
