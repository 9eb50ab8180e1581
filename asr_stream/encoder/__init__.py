"""Chunked audio encoders. Every kind exposes the same interface (see :class:`ChunkEncoder`); :func:`build_encoder` makes
the one a config names."""

from .base import ChunkEncoder
from .registry import build_encoder

__all__ = ["ChunkEncoder", "build_encoder"]
