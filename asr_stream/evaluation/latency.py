"""Streaming-ASR latency metrics, following SimulEval.

Reference implementation: facebookresearch/SimulEval,
``simuleval/evaluator/scorers/latency_scorer.py`` (``ALScorer``, ``LAALScorer``,
``StartOffsetScorer``, ``EndOffsetScorer``) and ``simuleval/evaluator/instance.py``
(``SpeechInputInstance.step_to_elapsed``). AL/LAAL reproduce its per-sentence
``compute`` exactly:

* If the first delay is strictly greater than the source length, the score is
  that first delay (SimulEval: ``if delays[0] > source_length: return delays[0]``).
* Otherwise, with ``gamma = target_len / source_ms``, sum ``d_i - (i-1)/gamma``
  over words i = 1..tau, where tau is the first word with ``d_i >= source_ms``
  (that word is included) or the last word if none reaches the end; divide by tau.
* AL: ``target_len`` is the reference length (SimulEval's default
  ``use_ref_len``; without a reference it uses the hypothesis length).
  LAAL (Papi et al. 2022, arXiv:2206.05807): ``max(hyp_len, ref_len)``.
* Computation-aware (CA) variants apply the same formula to SimulEval's
  ``elapsed`` timestamps: for speech input, ``elapsed = ms of source read +
  wall-clock ms since the instance started``.
* StartOffset = ``delays[0]`` and EndOffset = ``delays[-1] - source_length``
  are our first- and last-word delays.

Against a word alignment of the reference (when the corpus has one: the synthetic
corpus writes it), :func:`word_lags` gives the partial-recognition latency that
streaming-ASR papers report as PR50 / PR90 (e.g. FastEmit, Yu et al. 2021,
arXiv:2010.11148): for each reference word the hypothesis got right, the ms
between the end of the word in the audio and its emission; :func:`pr_summary`
reports their 50th and 90th percentiles over a corpus. Unlike AL, which assumes words evenly spread over
the audio, it measures each word from the moment it was actually spoken.

Units: every delay is milliseconds of source audio read when a target *word*
was emitted (one entry per hypothesis word, so ``len(delays)`` is the
hypothesis length); ``source_ms`` is the utterance duration in ms. Results
are in ms and may be negative (AL/LAAL for over-long hypotheses, last-word
delay for words emitted before the audio ends).

Edge cases (SimulEval itself skips an instance with no delays and otherwise
does no input checks):

* Empty hypothesis: AL, LAAL and first/last-word delays are ``nan`` so that
  ``aggregate`` skips the utterance as SimulEval does, and counts it.
* Hypothesis longer than the reference: AL keeps ``gamma = ref_len/source`` and
  can go negative (the over-generation problem); LAAL uses the hypothesis length.
* All words emitted at or after the end of the audio: the result is ``delays[0]``.
* Delays must be finite, >= 0 and non-decreasing; ``source_ms`` finite and > 0;
  target lengths >= 1 when used. Anything else raises ``ValueError``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "LatencyRecord",
    "aggregate",
    "average_lagging",
    "computation_aware_delays",
    "first_word_delay",
    "last_word_delay",
    "latency_summary",
    "length_adaptive_average_lagging",
    "pr_summary",
    "real_time_factor",
    "word_lags",
]


def _check_times(values: Sequence[float], name: str) -> list[float]:
    """Validate a per-word timestamp list (ms): finite, >= 0, non-decreasing."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0):
        raise ValueError(f"{name} contains negative values")
    if np.any(np.diff(arr) < 0):
        raise ValueError(f"{name} must be non-decreasing (words are emitted in order)")
    return arr.tolist()


def _check_source(source_ms: float) -> float:
    source_ms = float(source_ms)
    if not (math.isfinite(source_ms) and source_ms > 0):
        raise ValueError(f"source_ms must be finite and > 0, got {source_ms}")
    return source_ms


def _check_len(n: int | None, name: str, minimum: int) -> int | None:
    if n is None:
        return None
    n = operator.index(n)  # rejects floats: lengths are word counts
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def _lagging(delays: list[float], source_ms: float, target_len: int) -> float:
    """SimulEval's AL loop on validated, non-empty input."""
    if delays[0] > source_ms:
        return delays[0]
    gamma = target_len / source_ms
    total, tau = 0.0, 0
    for t_minus_1, d in enumerate(delays):
        total += d - t_minus_1 / gamma
        tau = t_minus_1 + 1
        if d >= source_ms:
            break
    return total / tau


def average_lagging(delays: Sequence[float], source_ms: float, target_len: int) -> float:
    """Average Lagging (Ma et al. 2019) in ms; ``nan`` for an empty hypothesis.

    ``target_len`` is the reference length in words (>= 1).
    """
    d = _check_times(delays, "delays")
    source_ms = _check_source(source_ms)
    target_len = _check_len(target_len, "target_len", 1)
    return _lagging(d, source_ms, target_len) if d else math.nan


def length_adaptive_average_lagging(
    delays: Sequence[float],
    source_ms: float,
    hyp_len: int | None = None,
    ref_len: int | None = None,
) -> float:
    """LAAL in ms: AL with target length ``max(hyp_len, ref_len)``; ``nan`` if empty.

    ``hyp_len`` defaults to ``len(delays)`` (what SimulEval uses) and must equal
    it when given, which catches token-vs-word mix-ups. ``ref_len=None`` means
    no reference, so the hypothesis length alone is used.
    """
    d = _check_times(delays, "delays")
    source_ms = _check_source(source_ms)
    hyp_len = _check_len(hyp_len, "hyp_len", 0)
    if hyp_len is not None and hyp_len != len(d):
        raise ValueError(f"hyp_len={hyp_len} but {len(d)} delays (one per word)")
    ref_len = _check_len(ref_len, "ref_len", 0)
    if not d:
        return math.nan
    return _lagging(d, source_ms, max(len(d), ref_len or 0))


def computation_aware_delays(
    delays_ms: Sequence[float], compute_ms_at_emission: Sequence[float]
) -> list[float]:
    """Per-word computation-aware delays in ms: source ms read + compute ms so far.

    SimulEval's ``elapsed`` for speech input is ``ms of source read + (now -
    start) * 1000``, where ``start`` is when the first source chunk was sent.
    In its simulation audio is fed as fast as the system consumes it, so that
    wall-clock term is the cumulative compute time. Pass exactly that here
    (non-decreasing, ms since the utterance started being processed); in a
    real-time-paced run subtract the time spent waiting for audio, or it is
    counted twice.
    """
    d = _check_times(delays_ms, "delays_ms")
    c = _check_times(compute_ms_at_emission, "compute_ms_at_emission")
    if len(d) != len(c):
        raise ValueError(f"{len(d)} delays but {len(c)} compute timestamps")
    return [a + b for a, b in zip(d, c)]


def first_word_delay(delays: Sequence[float]) -> float:
    """Ms of audio read when the first word was emitted (SimulEval StartOffset); ``nan`` if empty."""
    d = _check_times(delays, "delays")
    return d[0] if d else math.nan


def last_word_delay(delays: Sequence[float], source_ms: float) -> float:
    """Finalisation delay in ms: last emission minus audio end (SimulEval EndOffset).

    0 when the last word comes exactly at end of audio, negative if before;
    ``nan`` for an empty hypothesis.
    """
    d = _check_times(delays, "delays")
    source_ms = _check_source(source_ms)
    return d[-1] - source_ms if d else math.nan


def real_time_factor(compute_seconds: float, audio_seconds: float) -> float:
    """Compute time / audio duration (both in seconds); < 1 is faster than real time.

    This is the usual wall-clock RTF, not SimulEval's ``RTF`` scorer
    (``delays[-1] / source_length``).
    """
    compute_seconds, audio_seconds = float(compute_seconds), float(audio_seconds)
    if not (math.isfinite(compute_seconds) and compute_seconds >= 0):
        raise ValueError(f"compute_seconds must be finite and >= 0, got {compute_seconds}")
    if not (math.isfinite(audio_seconds) and audio_seconds > 0):
        raise ValueError(f"audio_seconds must be finite and > 0, got {audio_seconds}")
    return compute_seconds / audio_seconds


_METRICS = (
    "AL", "LAAL", "AL_CA", "LAAL_CA",
    "first_word_delay", "last_word_delay", "first_word_delay_CA", "last_word_delay_CA",
)  # fmt: skip


@dataclass(frozen=True)
class LatencyRecord:
    """Per-utterance latency metrics in ms; ``nan`` where undefined.

    CA fields are ``nan`` when no compute timestamps were given; AL (and AL_CA)
    is ``nan`` when ``ref_len == 0``, since gamma would be 0.
    """

    AL: float
    LAAL: float
    AL_CA: float
    LAAL_CA: float
    first_word_delay: float
    last_word_delay: float
    first_word_delay_CA: float
    last_word_delay_CA: float
    hyp_len: int
    source_ms: float

    @classmethod
    def compute(
        cls,
        delays_ms: Sequence[float],
        source_ms: float,
        ref_len: int | None,
        compute_ms: Sequence[float] | None = None,
    ) -> LatencyRecord:
        """Build a record; ``ref_len=None`` falls back to the hypothesis length
        for AL (SimulEval without a reference); ``compute_ms`` is as in
        :func:`computation_aware_delays`."""
        d = _check_times(delays_ms, "delays_ms")
        source_ms = _check_source(source_ms)
        ref_len = _check_len(ref_len, "ref_len", 0)
        al_len = len(d) if ref_len is None else ref_len

        def lag(x: list[float]) -> tuple[float, float]:
            if not x:
                return math.nan, math.nan
            al = _lagging(x, source_ms, al_len) if al_len >= 1 else math.nan
            return al, length_adaptive_average_lagging(x, source_ms, len(x), ref_len)

        al, laal = lag(d)
        if compute_ms is None:
            ca = None
            al_ca = laal_ca = first_ca = last_ca = math.nan
        else:
            ca = computation_aware_delays(d, compute_ms)
            al_ca, laal_ca = lag(ca)
            first_ca, last_ca = first_word_delay(ca), last_word_delay(ca, source_ms)
        return cls(
            AL=al,
            LAAL=laal,
            AL_CA=al_ca,
            LAAL_CA=laal_ca,
            first_word_delay=first_word_delay(d),
            last_word_delay=last_word_delay(d, source_ms),
            first_word_delay_CA=first_ca,
            last_word_delay_CA=last_ca,
            hyp_len=len(d),
            source_ms=source_ms,
        )

    def as_dict(self) -> dict:
        return asdict(self)


def latency_summary(
    delays_ms: Sequence[float],
    source_ms: float,
    ref_len: int | None,
    compute_ms: Sequence[float] | None = None,
) -> dict:
    """Per-utterance metrics as a dict (see :class:`LatencyRecord`), all in ms."""
    return LatencyRecord.compute(delays_ms, source_ms, ref_len, compute_ms).as_dict()


def aggregate(records: Iterable[LatencyRecord | Mapping[str, float]]) -> dict:
    """Mean of each metric over utterances, ignoring ``nan`` (as SimulEval skips
    utterances without delays).

    Returns ``{"n_utterances": N, "<metric>": mean, "<metric>_count": n, ...}``
    where ``n`` is how many utterances had the metric defined; the mean is
    ``nan`` when ``n == 0``.
    """
    rows = [r.as_dict() if isinstance(r, LatencyRecord) else dict(r) for r in records]
    out: dict = {"n_utterances": len(rows)}
    for key in _METRICS:
        vals = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
        out[key] = sum(vals) / len(vals) if vals else math.nan
        out[f"{key}_count"] = len(vals)
    return out


def _tokens(words: Iterable[tuple[str, float]], name: str) -> list[tuple[str, float]]:
    """Normalised tokens, each with the time of the word it came from (a word may give 0, 1 or more)."""
    from .wer import normalize_text

    out: list[tuple[str, float]] = []
    for text, t in words:
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"{name}: time of {text!r} is not finite")
        out += [(tok, t) for tok in normalize_text(text).split()]
    return out


def word_lags(reference: Sequence[tuple[str, float]], hypothesis: Sequence[tuple[str, float]]) -> list[float]:
    """Partial-recognition lag in ms of every correctly recognised reference word.

    ``reference``: (word, end of the word in the audio, ms), in order; ``hypothesis``: (word, emission time
    in ms of audio read), in order. Words are normalised as for WER and aligned as jiwer aligns them for WER;
    each reference word in an ``equal`` span gives ``emission - end`` (negative: emitted before the word
    ended, which a model can do by guessing the rest of a word). Substituted, deleted and inserted words give
    nothing: they are counted by WER.
    """
    import jiwer

    ref, hyp = _tokens(reference, "reference"), _tokens(hypothesis, "hypothesis")
    if not ref or not hyp:
        return []
    out = jiwer.process_words(" ".join(w for w, _ in ref), " ".join(w for w, _ in hyp))
    lags: list[float] = []
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
                lags.append(hyp[j][1] - ref[i][1])
    return lags


def pr_summary(lags: Iterable[float]) -> dict:
    """``{"PR50": median, "PR90": 90th percentile, "PR_mean": mean, "PR_words": n}`` of word lags in ms
    (:func:`word_lags` pooled over a corpus); ``nan`` values when there are none."""
    x = np.asarray(list(lags), dtype=np.float64)
    if x.size == 0:
        return {"PR50": math.nan, "PR90": math.nan, "PR_mean": math.nan, "PR_words": 0}
    return {"PR50": float(np.percentile(x, 50)), "PR90": float(np.percentile(x, 90)), "PR_mean": float(x.mean()),
            "PR_words": int(x.size)}
