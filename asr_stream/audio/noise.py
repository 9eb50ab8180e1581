"""Noise generators: pink noise, and the non-speech clips of the robustness set.

Used by training's augmentation (:func:`asr_stream.training.augment.nonspeech`) and by the robustness test set's
writer (:mod:`asr_stream.corpus.robust`), so training draws its noise from here and not from a test-set writer.
Every generator takes its randomness from the caller (a seeded ``numpy`` generator, or a seed): the same seed gives
the same samples.
"""

from __future__ import annotations

import numpy as np

from .io import SAMPLE_RATE


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise of unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / np.sqrt(np.mean(x**2))


def nonspeech_clips(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, 16 kHz float32 samples) of the non-speech items: silence, hiss, white and pink noise."""
    rng = np.random.default_rng([seed, 99])
    out: list[tuple[str, np.ndarray]] = []
    for seconds in (3, 10):
        n = seconds * SAMPLE_RATE
        out.append((f"silence-{seconds}s", np.zeros(n, np.float32)))
        out.append((f"hiss-70dbfs-{seconds}s", rng.standard_normal(n) * 10 ** (-70 / 20)))
        for dbfs in (-40, -25, -10):
            out.append((f"white{dbfs}dbfs-{seconds}s", rng.standard_normal(n) * 10 ** (dbfs / 20)))
            out.append((f"pink{dbfs}dbfs-{seconds}s", pink_noise(n, rng) * 10 ** (dbfs / 20)))
    return [(name, np.clip(x, -1, 1).astype(np.float32)) for name, x in out]
