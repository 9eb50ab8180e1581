"""Moved to :mod:`asr_stream.serving.protocol` (kept importable)."""

from __future__ import annotations

from .serving.protocol import FORMATS, ProtocolError, decode_frame, parse_start

__all__ = ["FORMATS", "ProtocolError", "decode_frame", "parse_start"]
