"""Chunked audio encoders. Both kinds expose the same interface (see :class:`ChunkEncoder`)."""

from .base import ChunkEncoder, build_encoder

__all__ = ["ChunkEncoder", "build_encoder"]
