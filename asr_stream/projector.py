"""Encoder frames -> LLM-width source embeddings: stack ``stack`` consecutive frames, then a 2-layer MLP.

Stacking never crosses a chunk boundary (frames_per_chunk must be divisible by ``stack``), so each
chunk becomes exactly ``frames_per_chunk // stack`` embeddings and the projector knows nothing of tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ProjectorConfig


class Projector(nn.Module):
    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.stack = cfg.stack
        self.mlp = nn.Sequential(nn.Linear(in_dim * cfg.stack, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape  # (B, n_chunks * frames_per_chunk, D)
        if L % self.stack:
            raise ValueError(f"{L} encoder frames are not divisible by stack={self.stack}")
        return self.mlp(x.reshape(B, L // self.stack, D * self.stack))
