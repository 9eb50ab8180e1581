"""Moved to :mod:`asr_stream.serving` (kept importable: the names code and tests used from here)."""

from __future__ import annotations

from .serving.config import ServerConfig
from .serving.protocol import FORMATS, ProtocolError, decode_frame, parse_start
from .serving.server import Conn, Server

_Conn = Conn  # its name before the move

__all__ = ["FORMATS", "ProtocolError", "Server", "ServerConfig", "decode_frame", "parse_start"]
