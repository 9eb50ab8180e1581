"""Waveform -> log-mel filterbank frames in torch (batched; runs on whatever device the input is on).

Framing is "snip edges": frame t covers samples [t*hop, t*hop + win). The mel filters are triangular on
the HTK mel scale (2595 * log10(1 + f / 700)) without area normalisation, as Kaldi's fbank uses.
Values are natural-log power, floored at 1e-10. No torchaudio needed.
"""

from __future__ import annotations

import math


import torch
from torch import nn

from ..config import FeatureConfig
from .io import SAMPLE_RATE


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular HTK-mel filters, shape (n_fft // 2 + 1, n_mels), float64."""
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(hz_to_mel(torch.tensor(f_min)).item(), hz_to_mel(torch.tensor(f_max)).item(), n_mels + 2, dtype=torch.float64)
    )
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,) each
    rising = (freqs[:, None] - lo) / (mid - lo)
    falling = (hi - freqs[:, None]) / (hi - mid)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """(B, T) float waveform at 16 kHz -> (B, 1 + (T - win) // hop, n_mels) log-mel frames."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig(), sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.win = round(cfg.win_ms * sample_rate / 1000)  # samples (400)
        self.hop = round(cfg.hop_ms * sample_rate / 1000)  # samples (160)
        self.n_fft = cfg.n_fft
        if self.n_fft < self.win:
            raise ValueError(f"n_fft={self.n_fft} is shorter than the {self.win}-sample window")
        self.register_buffer("window", torch.hann_window(self.win, periodic=True), persistent=False)
        fb = mel_filterbank(cfg.n_mels, cfg.n_fft, sample_rate, cfg.f_min, cfg.f_max)
        self.register_buffer("fbank", fb.float(), persistent=False)

    @property
    def context(self) -> int:
        """Samples of past audio a frame needs beyond its own hop (win - hop = 240)."""
        return self.win - self.hop

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win else 1 + (num_samples - self.win) // self.hop

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unfold(-1, self.win, self.hop)  # (B, F, win)
        spec = torch.fft.rfft(frames * self.window, n=self.n_fft)  # (B, F, n_fft/2+1)
        power = spec.real.square() + spec.imag.square()
        return torch.log(torch.clamp(power @ self.fbank, min=1e-10))  # (B, F, n_mels)


def frames_per_second(cfg: FeatureConfig) -> float:
    return 1000.0 / cfg.hop_ms


def spec_augment(feats: torch.Tensor, n_freq: int = 2, freq_width: int = 15, n_time: int = 2, time_frac: float = 0.05,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) on (B, T, F) log-mel: zero random frequency bands and time spans."""
    B, T, F = feats.shape
    out = feats.clone()
    for b in range(B):
        for _ in range(n_freq):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, F - w), (1,), generator=generator))
            out[b, :, f0 : f0 + w] = 0.0
        tw = max(1, int(math.ceil(T * time_frac)))
        for _ in range(n_time):
            w = int(torch.randint(0, tw + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, T - w), (1,), generator=generator))
            out[b, t0 : t0 + w] = 0.0
    return out
