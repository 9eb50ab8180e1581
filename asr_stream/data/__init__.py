"""Data layer, the runtime's readers: corpora (LibriSpeech layout, JSONL manifests), duration batching, and the
real-speech test set (:mod:`asr_stream.data.human`).

The tooling that makes corpora and test sets (speech synthesis, the robustness and long-form sets) lives in
:mod:`asr_stream.corpus`; reading a corpus never touches its subprocess/TTS code. ``data.synth``, ``data.engines``,
``data.espeak``, ``data.robust`` and ``data.longform`` are deprecated names that re-export it for old imports.
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
