"""How sure a corpus number is: percentile bootstrap over utterances, paired when two settings are compared.

The rules (Koehn 2004; Bisani & Ney 2004 for ASR):

- A resample draws ``n`` of the ``n`` utterances with replacement. Its corpus WER is the sum of its utterances'
  errors over the sum of their reference words (as :func:`asr_stream.evaluation.wer.wer_details` scores a corpus,
  so long utterances weigh more); its LAAL is the mean over its utterances that have one (as
  :func:`asr_stream.evaluation.latency.aggregate`: an utterance with no words has none).
- The interval is the percentile interval: the (1 - level) / 2 and (1 + level) / 2 quantiles of ``RESAMPLES``
  resamples (numpy's linear interpolation), level 0.95 by default.
- The random draws are fixed (``SEED``): the same records always give the same interval.
- Paired: a difference between two settings (B - A) is computed on the *same* resampled utterances for both, so
  what the two get wrong together cancels and only their disagreement varies. Both must hold the same
  utterances (by id), with the same references.

An interval says how much the number would move on another draw of utterances like these, from the same
population (voices, sentences); it says nothing about other populations (another voice, real speech).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .wer import utterance_errors

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) utterance indices drawn with replacement; the same (n, resamples, seed) give the same draws."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one utterance")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int64)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap values (NaN values, resamples where the statistic is undefined, are
    left out; all NaN: (nan, nan))."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per resample: sum(num) / sum(den) over its utterances (nan where the denominator is 0)."""
    n, d = num[idx].sum(axis=1), den[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, n / np.where(d > 0, d, 1), np.nan)


def _nanmean(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per resample: the mean of x over its utterances where x is defined (nan where none is)."""
    ok = ~np.isnan(x)
    s, c = np.where(ok, x, 0.0)[idx].sum(axis=1), ok[idx].sum(axis=1)
    return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def wer_interval(errors: Sequence[int], ref_words: Sequence[int], level: float = LEVEL, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of the corpus WER (a fraction) over utterances with these error and word counts."""
    e, w = np.asarray(errors, dtype=np.float64), np.asarray(ref_words, dtype=np.float64)
    if e.shape != w.shape:
        raise ValueError(f"{e.size} error counts but {w.size} word counts")
    return percentile_interval(_ratio(e, w, resample_indices(e.size, resamples, seed)), level)


def f1_interval(tp: Sequence[int], fp: Sequence[int], fn: Sequence[int], level: float = LEVEL,
                resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of a micro-averaged F1 (2 tp / (2 tp + fp + fn) over the resampled utterances' counts)."""
    t, p, n = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    if not t.shape == p.shape == n.shape:
        raise ValueError(f"counts of {t.size}, {p.size} and {n.size} utterances")
    return percentile_interval(_ratio(2 * t, 2 * t + p + n, resample_indices(t.size, resamples, seed)), level)


def mean_interval(values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES,
                  seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of the mean of per-utterance values (NaN: undefined for that utterance, left out)."""
    x = np.asarray(values, dtype=np.float64)
    return percentile_interval(_nanmean(x, resample_indices(x.size, resamples, seed)), level)


def paired_wer_difference(errors_a: Sequence[int], errors_b: Sequence[int], ref_words: Sequence[int],
                          level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """WER(B) - WER(A) (fractions) on the same utterances, with its paired percentile interval:
    ``{"diff", "lo", "hi"}``. Negative: B makes fewer errors."""
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    w = np.asarray(ref_words, dtype=np.float64)
    if not a.shape == b.shape == w.shape:
        raise ValueError(f"paired counts differ in length: {a.size}, {b.size}, {w.size}")
    idx = resample_indices(a.size, resamples, seed)
    diff = b.sum() / w.sum() - a.sum() / w.sum() if w.sum() > 0 else math.nan
    lo, hi = percentile_interval(_ratio(b - a, w, idx), level)  # sum(b)/W - sum(a)/W = sum(b - a)/W per resample
    return {"diff": float(diff), "lo": lo, "hi": hi}


def paired_mean_difference(values_a: Sequence[float], values_b: Sequence[float], level: float = LEVEL,
                           resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """mean(B) - mean(A) of a per-utterance value (e.g. LAAL; NaN: undefined, left out of that side's mean, as
    :func:`~asr_stream.evaluation.latency.aggregate` does) with its paired percentile interval: ``{"diff", "lo", "hi"}``."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size}, {b.size}")
    idx = resample_indices(a.size, resamples, seed)
    full = np.arange(a.size)[None, :]
    diff = float((_nanmean(b, full) - _nanmean(a, full))[0])
    lo, hi = percentile_interval(_nanmean(b, idx) - _nanmean(a, idx), level)
    return {"diff": diff, "lo": lo, "hi": hi}


def _laal(records: Sequence[Mapping]) -> list[float]:
    """Each record's LAAL; nan where it has none or no reference words (non-speech: nothing to lag behind)."""
    return [math.nan if r.get("lat_LAAL") is None or not str(r.get("reference", "-")).split() else float(r["lat_LAAL"])
            for r in records]


def record_intervals(records: Sequence[Mapping], level: float = LEVEL) -> dict:
    """For one setting's evaluation records (``reference``, ``hypothesis``, ``lat_LAAL``): the intervals of its corpus
    WER and its mean LAAL, as summary fields ``wer_ci`` and ``LAAL_ci`` (``[lo, hi]``), with ``ci_level``,
    ``ci_resamples`` and ``ci_seed``."""
    if not records:
        return {}
    errors, words = utterance_errors([r["reference"] for r in records], [r["hypothesis"] for r in records])
    return {"wer_ci": list(wer_interval(errors, words, level)), "LAAL_ci": list(mean_interval(_laal(records), level)),
            "ci_level": level, "ci_resamples": RESAMPLES, "ci_seed": SEED}


def compare(base: Sequence[Mapping], other: Sequence[Mapping], level: float = LEVEL) -> dict:
    """``other`` against ``base``: two settings' evaluation records of the same utterances (paired by id).

    Returns ``{"utterances", "wer_diff", "wer_diff_ci", "LAAL_diff", "LAAL_diff_ci", "better", "worse"}``: WER
    difference (other - base, a fraction; negative: other is better) and LAAL difference (ms), each with its paired
    percentile interval, and how many utterances have fewer / more errors under ``other``.
    Raises ValueError when the two do not hold the same utterances with the same references."""
    by_id = {r["id"]: r for r in base}
    ids = [r["id"] for r in other]
    if len(by_id) != len(base) or len(set(ids)) != len(ids):
        raise ValueError("compare: an utterance id occurs twice in one set of records")
    missing, extra = set(by_id) - set(ids), set(ids) - set(by_id)
    if missing or extra:
        raise ValueError(f"compare: the two evaluations hold different utterances ({len(missing)} only in the baseline, "
                         f"{len(extra)} only in the other); compare evaluations of the same data")
    base = [by_id[i] for i in ids]
    changed = [i for i, a, b in zip(ids, base, other) if a["reference"] != b["reference"]]
    if changed:
        raise ValueError(f"compare: {len(changed)} utterances have other references (e.g. {changed[0]}); not the same data")
    refs = [r["reference"] for r in other]
    ea, words = utterance_errors(refs, [r["hypothesis"] for r in base])
    eb, _ = utterance_errors(refs, [r["hypothesis"] for r in other])
    w = paired_wer_difference(ea, eb, words, level)
    lat = paired_mean_difference(_laal(base), _laal(other), level)
    return {"utterances": len(ids), "wer_diff": w["diff"], "wer_diff_ci": [w["lo"], w["hi"]],
            "LAAL_diff": lat["diff"], "LAAL_diff_ci": [lat["lo"], lat["hi"]],
            "better": sum(b < a for a, b in zip(ea, eb)), "worse": sum(b > a for a, b in zip(ea, eb))}


def format_interval(lo: float, hi: float, scale: float = 1.0, digits: int = 1, signed: bool = False) -> str:
    """``[lo, hi]`` times ``scale`` with ``digits`` decimals, e.g. ``[6.9, 9.6]``; ``signed``: always a sign, as for a
    difference (``[-1.6, +0.1]``); ``[nan]`` when undefined."""
    if math.isnan(lo) or math.isnan(hi):
        return "[nan]"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"[{f.format(scale * lo)}, {f.format(scale * hi)}]"
