"""Which encoder class each ``EncoderConfig.kind`` builds: :func:`build_encoder`.

Apart from :mod:`asr_stream.encoder.base`, because every encoder module imports the base class from there: the
builder, which imports the encoders, sits above them all. Each encoder module is imported only when its kind is
built, so a model of one kind never loads another's dependencies (transformers for ``hf`` and ``whisper``).
"""

from __future__ import annotations

from pathlib import Path

from ..config import EncoderConfig
from .base import ChunkEncoder


def build_encoder(cfg: EncoderConfig, architecture: str | Path | None = None) -> ChunkEncoder:
    """The encoder ``cfg`` describes (``cfg.kind``: chunk_transformer, hf or whisper). ``architecture``: a saved model's
    ``encoder/`` folder to build a Whisper encoder from, with untrained weights (``SpeechLLM.load`` then loads them);
    ``cfg.hf_name_or_path`` is not read then."""
    if architecture is not None and cfg.kind != "whisper":
        raise ValueError(f"an encoder architecture folder ({architecture}) is for encoder kind 'whisper', not {cfg.kind!r}")
    if cfg.kind != "whisper" and (cfg.whisper_lookahead_chunks or cfg.whisper_trailing_silence_ms):
        raise ValueError(f"whisper_lookahead_chunks / whisper_trailing_silence_ms apply to encoder kind 'whisper' only, "
                         f"not {cfg.kind!r}")
    if cfg.kind == "chunk_transformer":
        from .chunk_transformer import ChunkTransformerEncoder

        return ChunkTransformerEncoder(cfg)
    if cfg.kind == "hf":
        from .hf import HFChunkEncoder

        return HFChunkEncoder(cfg)
    if cfg.kind == "whisper":
        from .whisper import WhisperChunkEncoder

        return WhisperChunkEncoder(cfg, architecture)
    raise ValueError(f"unknown encoder kind {cfg.kind!r} (expected 'chunk_transformer', 'hf' or 'whisper')")
