"""The wire protocol of ``asr-stream serve`` (docs/protocol.md): the client's start message and its PCM frames,
checked and converted, with one-line errors. No networking here: :mod:`asr_stream.serving.server` uses these."""

from __future__ import annotations

import json

import numpy as np

from ..audio.io import MAX_INPUT_RATE, MIN_INPUT_RATE


class ProtocolError(ValueError):
    """A client broke the protocol: sent as an ``error`` event (one line), then the connection closes."""


FORMATS = {"int16": (np.dtype("<i2"), 32768.0), "float32": (np.dtype("<f4"), 1.0)}


MAX_CONTEXT_CHARS = 20_000
"""The most characters a start message's context may hold (no model reads more; its token limit is checked after)."""


def parse_start(text: str | bytes, max_k: int = 64) -> dict:
    """The client's start message -> {"sample_rate": int, "format": str, "k": int | None, "context": tuple of phrases |
    None}; ProtocolError if bad. ``context``: a list of words and phrases, or one string of them separated by commas
    (:func:`asr_stream.context.parse_context`); whether the model can read it is the server's check."""
    if isinstance(text, bytes):
        if text[:4] == b"RIFF":
            raise ProtocolError("got a WAV header (RIFF) before the start message: send a JSON start message, then raw PCM without the header")
        raise ProtocolError("expected a JSON start message first, got a binary frame")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"malformed JSON in start message: {e.msg} at char {e.pos}") from None
    if not isinstance(msg, dict) or msg.get("type", "start") != "start":
        raise ProtocolError('the first message must be a JSON object {"type": "start", "sample_rate": ..., "format": ...}')
    rate, fmt, k = msg.get("sample_rate"), msg.get("format", "int16"), msg.get("k")
    if isinstance(rate, bool) or not isinstance(rate, int) or not (MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE):
        raise ProtocolError(f"sample_rate must be an integer from {MIN_INPUT_RATE} to {MAX_INPUT_RATE} Hz, got {rate!r}")
    if fmt not in FORMATS:
        raise ProtocolError(f"format must be 'int16' or 'float32', got {fmt!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k):
        raise ProtocolError(f"k must be an integer from 1 to {max_k}, got {k!r}")
    unknown = set(msg) - {"type", "sample_rate", "format", "k", "context"}
    if unknown:
        raise ProtocolError(f"unknown field(s) in start message: {', '.join(sorted(unknown))}")
    return {"sample_rate": rate, "format": fmt, "k": k, "context": _context(msg.get("context"))}


def _context(value) -> tuple[str, ...] | None:
    """A start message's context: None (absent), or its phrases; ProtocolError for anything else."""
    from ..context import parse_context

    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise ProtocolError("context must be a list of strings (words or phrases) or one string of them separated by commas")
    if len(value) > MAX_CONTEXT_CHARS:
        raise ProtocolError(f"context is too long: {len(value)} characters (at most {MAX_CONTEXT_CHARS})")
    try:
        return parse_context(value, "context")
    except ValueError as e:
        raise ProtocolError(str(e)) from None


def decode_frame(data: bytes, fmt: str) -> np.ndarray:
    """One binary frame -> float32 samples at the client's rate; ProtocolError for WAV headers and wrong formats."""
    if data[:4] == b"RIFF":
        raise ProtocolError("got a WAV header (RIFF) as PCM: send raw samples without the file header")
    dtype, scale = FORMATS[fmt]
    if len(data) % dtype.itemsize:
        raise ProtocolError(f"frame of {len(data)} bytes is not a whole number of {fmt} samples")
    x = np.frombuffer(data, dtype=dtype).astype(np.float32)
    if fmt == "float32":
        # int16 PCM read as float32 gives NaN/inf or huge values: say so instead of transcribing noise
        if not np.isfinite(x).all() or (x.size and float(np.abs(x).max()) > 8.0):
            raise ProtocolError("float32 frame has samples outside [-1, 1] or NaN/inf: is the audio int16? (set format)")
        return x
    return x / scale


__all__ = ["FORMATS", "ProtocolError", "decode_frame", "parse_start"]
