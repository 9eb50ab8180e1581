"""Waveform augmentation for training, seeded per utterance so a run is reproducible.

Each augmentation is off unless its probability is above 0 (``AugmentConfig``; in the YAML as
``data.augment: {gain_prob: 0.5, ...}``). They are applied to 16 kHz float32 audio in this order, each with
its own probability: speed (``SpeechDataModule.speed_perturb``) -> pitch/formant shift -> reverberation ->
leading/trailing silence -> telephone band -> additive noise -> gain -> clipping, then a hard limit at
+-1 (what a 16-bit recording of a too-loud signal does). Silence comes before noise, so an utterance with
both starts with noise and no speech, as a real recording does.

Reproducibility: :func:`utterance_rng` makes one generator per (seed, epoch, utterance index), so the same
seed gives the same augmented audio whatever the number of DataLoader workers or the order the batches
are loaded in, and each epoch draws anew.

Non-speech examples (``nonspeech_prob``) are not an effect on the audio: the utterance is replaced, after the
chain, by silence or noise of its own length, and its transcript by the empty one (:func:`nonspeech`). The model
then learns to write nothing on what is not speech; without them it had never seen an empty transcript, and
every augmented fine-tune wrote words on every noise clip of the robustness set.

SpecAugment-style masking of the features is the encoder's: ``model.model.encoder.spec_augment: true``
(:func:`asr_stream.audio.features.spec_augment`, drawn from torch's generator, which ``seed_everything`` seeds).

Only numpy / scipy / librosa (soxr) are used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

import numpy as np

from ..audio.io import SAMPLE_RATE
from ..audio.noise import pink_noise



@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (0 = off) and ranges of each waveform augmentation; ranges are (low, high), drawn uniformly."""

    pitch_prob: float = 0.0
    """Chance of a pitch/formant shift: the spectrum (pitch and formants together) moves by ``pitch_semitones``
    while the duration stays (librosa.effects.pitch_shift: a phase-vocoder time stretch + a resample)."""
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    reverb_prob: float = 0.0
    """Chance of reverberation: convolution with a synthetic room response (direct sound + exponentially
    decaying noise reaching -60 dB after ``rt60_s`` seconds), loudness (RMS) kept."""
    rt60_s: tuple[float, float] = (0.2, 0.8)
    reverb_wet: tuple[float, float] = (0.3, 1.0)
    """Level of the reverberant tail relative to the direct sound (amplitude)."""
    silence_prob: float = 0.0
    """Chance of leading and trailing silence (digital zeros; noise, if drawn, fills them) of random length."""
    lead_silence_s: tuple[float, float] = (0.0, 1.5)
    trail_silence_s: tuple[float, float] = (0.0, 1.0)
    telephone_prob: float = 0.0
    """Chance of the telephone band: resampled to 8 kHz and back (nothing above 4 kHz)."""
    noise_prob: float = 0.0
    """Chance of additive white noise at ``snr_db`` (relative to the speech's mean power)."""
    snr_db: tuple[float, float] = (0.0, 30.0)
    gain_prob: float = 0.0
    """Chance of a gain change of ``gain_db`` dB."""
    gain_db: tuple[float, float] = (-35.0, 6.0)
    clip_prob: float = 0.0
    """Chance of hard clipping at ``clip_level`` times the utterance's peak."""
    clip_level: tuple[float, float] = (0.1, 0.6)
    nonspeech_prob: float = 0.0
    """Chance of replacing the utterance by non-speech of the same length with an empty transcript: one kind of
    ``NONSPEECH_KINDS`` (digital silence, white or pink noise), drawn uniformly; the noise at ``nonspeech_dbfs``
    (RMS, dB full scale)."""
    nonspeech_dbfs: tuple[float, float] = (-70.0, -10.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_prob"):
                if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                    raise ValueError(f"augment: {f.name} must be a probability in [0, 1], got {v!r}")
            elif not (isinstance(v, (tuple, list)) and len(v) == 2 and v[0] <= v[1]):
                raise ValueError(f"augment: {f.name} must be a [low, high] pair with low <= high, got {v!r}")
        for name, lo in (("rt60_s", 0.01), ("lead_silence_s", 0.0), ("trail_silence_s", 0.0), ("reverb_wet", 0.0)):
            if getattr(self, name)[0] < lo:
                raise ValueError(f"augment: {name} must be >= {lo}, got {getattr(self, name)!r}")
        if self.nonspeech_dbfs[1] > 0.0:
            raise ValueError(f"augment: nonspeech_dbfs must be <= 0 dB full scale, got {self.nonspeech_dbfs!r}")
        if not (0.0 < self.clip_level[0] and self.clip_level[1] <= 1.0):
            raise ValueError(f"augment: clip_level must lie in (0, 1], got {self.clip_level!r}")

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "AugmentConfig":
        """From the YAML's ``augment:`` mapping (lists become tuples); unknown keys are a one-line error."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"augment: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @property
    def active(self) -> bool:
        return any(v > 0 for k, v in asdict(self).items() if k.endswith("_prob"))


NONSPEECH_KINDS = ("silence", "white", "pink")


def utterance_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one utterance in one epoch: independent of workers and loading order."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


# ------------------------------------------------------------------------------------------- single effects


def speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch and tempo together, as Kaldi's speed perturbation): the samples are
    treated as recorded at ``16 kHz * factor`` and resampled to 16 kHz, so the length becomes ``len / factor``."""
    if factor == 1.0:
        return wave
    import librosa

    return librosa.resample(wave, orig_sr=int(round(SAMPLE_RATE * factor)), target_sr=SAMPLE_RATE,
                            res_type="soxr_hq").astype(np.float32)


def pitch_shift(wave: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch and formants by ``semitones`` (a factor of 2 ** (semitones / 12)), keeping the length."""
    if semitones == 0.0:
        return wave
    import librosa

    return librosa.effects.pitch_shift(wave, sr=SAMPLE_RATE, n_steps=float(semitones),
                                       res_type="soxr_hq").astype(np.float32)


def room_response(rng: np.random.Generator, rt60_s: float, wet: float) -> np.ndarray:
    """A synthetic impulse response: 1 at t = 0, then Gaussian noise decaying by 60 dB over ``rt60_s`` seconds,
    scaled to ``wet`` times the direct sound's energy; length rt60_s."""
    n = max(2, int(rt60_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * 10 ** (-3.0 * t / rt60_s)  # amplitude -60 dB at rt60
    tail[0] = 0.0
    tail *= wet / max(np.sqrt(np.sum(tail**2)), 1e-12)
    tail[0] = 1.0
    return tail


def reverberate(wave: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Convolve with ``ir`` (the tail beyond the input's end is cut: the utterance keeps its length) and restore
    the input's RMS level."""
    from scipy.signal import fftconvolve

    out = fftconvolve(wave.astype(np.float64), ir)[: len(wave)]
    r_in, r_out = np.sqrt(np.mean(wave.astype(np.float64) ** 2)), np.sqrt(np.mean(out**2))
    return (out * (r_in / r_out if r_out > 0 else 1.0)).astype(np.float32)


def pad_silence(wave: np.ndarray, lead_s: float, trail_s: float) -> np.ndarray:
    """Digital silence of ``lead_s`` seconds before and ``trail_s`` after."""
    return np.concatenate([np.zeros(int(round(lead_s * SAMPLE_RATE)), np.float32), wave,
                           np.zeros(int(round(trail_s * SAMPLE_RATE)), np.float32)])


def telephone(wave: np.ndarray) -> np.ndarray:
    """Down to 8 kHz and back up: the band above 4 kHz is gone, as in narrow-band telephone or 8 kHz files."""
    import librosa

    lo = librosa.resample(wave, orig_sr=SAMPLE_RATE, target_sr=8000, res_type="soxr_hq")
    return librosa.resample(lo, orig_sr=8000, target_sr=SAMPLE_RATE, res_type="soxr_hq")[: len(wave)].astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, reference: Optional[np.ndarray] = None) -> np.ndarray:
    """White noise at ``snr_db`` below the mean power of ``reference`` (default: ``wave``; pass the speech before
    padding, so the SNR is that of the speech, not diluted by silence)."""
    ref = wave if reference is None else reference
    power = float(np.mean(ref.astype(np.float64) ** 2))
    if power <= 0:
        return wave
    noise = rng.standard_normal(len(wave)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)


def gain(wave: np.ndarray, db: float) -> np.ndarray:
    return (wave * np.float32(10 ** (db / 20))).astype(np.float32)


def clip(wave: np.ndarray, level: float) -> np.ndarray:
    """Hard clipping at ``level`` times the peak (level 1: unchanged)."""
    t = float(np.max(np.abs(wave))) * level
    return np.clip(wave, -t, t).astype(np.float32) if t > 0 else wave


# ---------------------------------------------------------------------------------------------------- chain


def augment(wave: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply ``cfg`` to one 16 kHz float32 utterance with draws from ``rng`` (see the module doc for the order).

    Every draw is made whether or not its effect fires, so turning one augmentation on or off does not change
    the random values the others get.
    """
    u = rng.random(7)  # one coin per effect, in chain order
    semis = rng.uniform(*cfg.pitch_semitones)
    rt60, wet, ir_seed = rng.uniform(*cfg.rt60_s), rng.uniform(*cfg.reverb_wet), int(rng.integers(2**32))
    lead, trail = rng.uniform(*cfg.lead_silence_s), rng.uniform(*cfg.trail_silence_s)
    snr, noise_seed = rng.uniform(*cfg.snr_db), int(rng.integers(2**32))
    db, level = rng.uniform(*cfg.gain_db), rng.uniform(*cfg.clip_level)

    x = wave.astype(np.float32)
    if u[0] < cfg.pitch_prob:
        x = pitch_shift(x, semis)
    if u[1] < cfg.reverb_prob:
        x = reverberate(x, room_response(np.random.default_rng(ir_seed), rt60, wet))
    speech = x
    if u[2] < cfg.silence_prob:
        x = pad_silence(x, lead, trail)
    if u[3] < cfg.telephone_prob:
        x = telephone(x)
    if u[4] < cfg.noise_prob:
        x = add_noise(x, snr, np.random.default_rng(noise_seed), reference=speech)
    if u[5] < cfg.gain_prob:
        x = gain(x, db)
    if u[6] < cfg.clip_prob:
        x = clip(x, level)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def nonspeech(n: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray | None:
    """Non-speech of ``n`` samples in place of an utterance (its transcript becomes empty), or None when the
    ``nonspeech_prob`` coin says keep it. Call it after :func:`augment` with the same ``rng``: it makes its draws
    whether or not it fires, after all of the chain's, so switching it on changes no other augmentation."""
    coin, kind = rng.random(), int(rng.integers(len(NONSPEECH_KINDS)))
    dbfs, seed = rng.uniform(*cfg.nonspeech_dbfs), int(rng.integers(2**32))
    if coin >= cfg.nonspeech_prob:
        return None
    if NONSPEECH_KINDS[kind] == "silence":
        return np.zeros(n, np.float32)
    g = np.random.default_rng(seed)
    x = g.standard_normal(n) if NONSPEECH_KINDS[kind] == "white" else pink_noise(n, g)
    return np.clip(x * 10 ** (dbfs / 20), -1.0, 1.0).astype(np.float32)
