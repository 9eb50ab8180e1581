"""Pure evaluation metrics: WER (jiwer) and SimulEval-style latency."""

from asr_stream.evaluation.latency import (
    LatencyRecord,
    aggregate,
    average_lagging,
    computation_aware_delays,
    first_word_delay,
    last_word_delay,
    latency_summary,
    length_adaptive_average_lagging,
    pr_summary,
    real_time_factor,
    word_lags,
)
from asr_stream.evaluation.wer import normalize_text, wer_details

__all__ = [
    "LatencyRecord",
    "aggregate",
    "average_lagging",
    "computation_aware_delays",
    "first_word_delay",
    "last_word_delay",
    "latency_summary",
    "length_adaptive_average_lagging",
    "normalize_text",
    "pr_summary",
    "real_time_factor",
    "wer_details",
    "word_lags",
]
