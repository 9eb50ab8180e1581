"""Data layer: corpus readers (LibriSpeech, JSONL manifests), duration batching, and a synthetic corpus tool.

The espeak-ng corpus synthesiser lives in :mod:`asr_stream.data.synth` and is not imported here, so reading
a corpus never touches subprocess/TTS code.
"""

from .corpus import (
    SPLIT_ALIASES,
    DataError,
    ReadReport,
    Utterance,
    WordTiming,
    audio_duration,
    duration_batches,
    padded_seconds,
    read_librispeech,
    read_librispeech_report,
    read_corpus,
    read_manifest,
    read_manifest_report,
    word_counts,
    write_manifest,
)

__all__ = [
    "SPLIT_ALIASES",
    "DataError",
    "ReadReport",
    "Utterance",
    "WordTiming",
    "audio_duration",
    "duration_batches",
    "padded_seconds",
    "read_librispeech",
    "read_librispeech_report",
    "read_corpus",
    "read_manifest",
    "read_manifest_report",
    "word_counts",
    "write_manifest",
]
