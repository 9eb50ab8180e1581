"""Run a pretrained Hugging Face wav2vec2-family encoder (wav2vec2, HuBERT, WavLM, ...) chunk-wise.

Each chunk is encoded on its own window: [left context | chunk | right pad], where the left context is
the previous ``hf_left_context_ms`` of audio (zeros before the stream starts) and the right pad is
``receptive_field - stride`` zeros so the chunk yields exactly ``chunk_samples / stride`` frames. Only
the chunk's own frames are kept. A chunk's output therefore depends on the chunk and its past only, and
is never recomputed. Cost: the context is re-encoded for every chunk, (context + chunk + rf - stride) / chunk
times the samples of one pass (4.02 at 960 / 320 ms); none of it can be reused exactly (bidirectional
attention, the centred positional conv and per-window normalisation all see the chunk after it): see
``benchmarks/encoder/hf_encoder_context.py`` and docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
from torch import nn

from ..audio.io import SAMPLES_PER_MS
from ..config import EncoderConfig
from .base import ChunkEncoder, chunk_samples_for


def conv_geometry(config) -> tuple[int, int]:
    """(stride, receptive field) in samples of the convolutional feature encoder."""
    stride = prod(config.conv_stride)
    rf = 1
    for k, s in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        rf = (rf - 1) * s + k
    return stride, rf


@dataclass
class HFStreamState:
    past: torch.Tensor  # (B, context) previous samples


class HFChunkEncoder(ChunkEncoder):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel

        if not cfg.hf_name_or_path:
            raise ValueError("encoder kind 'hf' needs hf_name_or_path (a hub id or a local directory)")
        try:
            self.model = AutoModel.from_pretrained(cfg.hf_name_or_path)
        except OSError as e:
            raise ValueError(f"{cfg.hf_name_or_path}: cannot load a Hugging Face encoder ({str(e).splitlines()[0]})") from None
        if not hasattr(self.model.config, "conv_stride"):
            raise ValueError(f"{cfg.hf_name_or_path}: {type(self.model).__name__} is not a wav2vec2-family encoder")
        self.cfg = cfg
        self.stride, self.rf = conv_geometry(self.model.config)
        self.dim = self.model.config.hidden_size
        self.set_chunk_ms(cfg.chunk_ms)

    def set_chunk_ms(self, chunk_ms: int) -> None:
        self.chunk_samples = chunk_samples_for(chunk_ms)
        if self.chunk_samples % self.stride:
            raise ValueError(f"chunk_ms={chunk_ms} must be a multiple of the encoder stride "
                             f"({self.stride / SAMPLES_PER_MS} ms)")
        self.frames_per_chunk = self.chunk_samples // self.stride
        ctx = self.cfg.hf_left_context_ms * SAMPLES_PER_MS
        self.context = ctx - ctx % self.stride

    def _encode_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, context + chunk) -> (M, frames_per_chunk, dim)."""
        if self.cfg.hf_normalize:
            windows = (windows - windows.mean(1, keepdim=True)) / torch.sqrt(windows.var(1, keepdim=True, unbiased=False) + 1e-7)
        windows = nn.functional.pad(windows, (0, self.rf - self.stride))
        hidden = self.model(input_values=windows).last_hidden_state
        return hidden[:, -self.frames_per_chunk :]

    def _windows(self, past: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
        full = torch.cat([past, wave], dim=1)  # (B, context + n*chunk)
        size = self.context + self.chunk_samples
        return full.unfold(1, size, self.chunk_samples).reshape(-1, size)  # (B*n, size)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n = self._check_chunks(wave)
        past = wave.new_zeros(wave.shape[0], self.context)
        out = self._encode_windows(self._windows(past, wave))
        return out.reshape(wave.shape[0], n * self.frames_per_chunk, self.dim)

    def init_state(self, batch: int = 1) -> HFStreamState:
        p = next(self.model.parameters())
        return HFStreamState(past=torch.zeros(batch, self.context, device=p.device, dtype=p.dtype))

    def stream(self, wave: torch.Tensor, state: HFStreamState) -> tuple[torch.Tensor, HFStreamState]:
        n = self._check_chunks(wave)
        with self._streaming(wave):
            out = self._encode_windows(self._windows(state.past, wave)).reshape(wave.shape[0], n * self.frames_per_chunk, self.dim)
        out = self._handed_on(out)
        past = torch.cat([state.past, wave], dim=1)[:, wave.shape[1] + state.past.shape[1] - self.context :]
        return out, HFStreamState(past=past)
