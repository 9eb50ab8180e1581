"""Word error rate with a fixed, documented English text normalisation.

``normalize_text`` applies these rules, in this order:

1. Unicode NFKC (full-width letters, ligatures such as "ﬁ", non-breaking
   spaces, ... become their plain forms).
2. Lowercase (``str.lower``).
3. Apostrophe look-alikes become ``'``: U+2018 ‘, U+2019 ’, U+201A ‚,
   U+201B ‛, U+2032 ′, U+02BC ʼ and the backtick U+0060.
4. Dashes become a space: every Unicode "Pd" character (``-``, ‐, –, —, ...)
   and the minus sign U+2212, so "state-of-the-art" -> "state of the art".
5. All other Unicode punctuation (general category ``P*``: ``. , ; : ! ? " ( )
   [ ] { } _ / & % # @ *`` and their Unicode relatives) is deleted, not
   replaced by a space: "U.S." -> "us", "1,000" -> "1000". Symbols (category
   ``S*``: ``$ + = < >``) and digits are kept; numbers are not verbalised.
6. An apostrophe survives only between two word characters: "don't" and
   "rock'n'roll" keep theirs, "'quoted'" -> "quoted", "students'" -> "students".
7. Whitespace runs collapse to one space; leading/trailing space is stripped.

``wer_details`` scores a corpus (errors summed over utterances, then divided
by the total reference word count), with alignments from ``jiwer.process_words``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

import jiwer

APOSTROPHES = str.maketrans({c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u02bc`"})
# An apostrophe not flanked by word characters on both sides is a quote mark.
_STRAY_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def _map_char(c: str) -> str:
    if c == "'":
        return c
    cat = unicodedata.category(c)
    if cat == "Pd" or c == "\u2212":
        return " "
    if cat.startswith("P"):
        return ""
    return c


def normalize_text(s: str) -> str:
    """Normalise English text for WER; the rules are in the module docstring."""
    s = unicodedata.normalize("NFKC", s).lower().translate(APOSTROPHES)
    s = "".join(_map_char(c) for c in s)
    s = _STRAY_APOSTROPHE.sub("", s)
    return " ".join(s.split())


def wer_details(
    references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True
) -> dict:
    """Corpus-level WER and its error counts.

    Returns ``{"wer", "substitutions", "deletions", "insertions", "hits",
    "ref_words"}``; ``wer = (S + D + I) / ref_words`` is a fraction (0.25 is
    25 %), not a percentage, and can exceed 1.

    Edge cases (the sclite convention, independent of the jiwer version):

    * Empty hypothesis: every reference word is a deletion.
    * Reference empty after normalisation (e.g. a noise-only utterance): the
      pair is not aligned (jiwer 3 raises on it); each hypothesis word counts
      as an insertion and ``ref_words`` is unchanged.
    * Zero reference words in the whole corpus (including empty lists): WER is
      undefined. ``wer`` is ``nan`` when there are no errors either, ``inf``
      when there are insertions (IEEE 0/0 and k/0); the counts are exact.

    Raises:
        TypeError: a bare ``str`` was given instead of a list of strings.
        ValueError: the two lists differ in length.
    """
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be lists of strings, not str")
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses"
        )
    prep = normalize_text if normalize else (lambda x: " ".join(x.split()))
    refs = [prep(r) for r in references]
    hyps = [prep(h) for h in hypotheses]

    counts = dict(substitutions=0, deletions=0, insertions=0, hits=0)
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    # Empty references: all hypothesis words are insertions.
    counts["insertions"] += sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    if pairs:
        out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
        for k in counts:
            counts[k] += int(getattr(out, k))

    ref_words = counts["hits"] + counts["substitutions"] + counts["deletions"]
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    if ref_words:
        wer = errors / ref_words
    else:
        wer = math.inf if errors else math.nan
    return {"wer": wer, **counts, "ref_words": ref_words}


def utterance_errors(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> tuple[list[int], list[int]]:
    """Per utterance: (errors S + D + I, reference words), with :func:`wer_details`'s normalisation, alignment and
    edge cases, so that ``sum(errors) / sum(ref_words)`` is its corpus WER (jiwer aligns each pair on its own).
    What :mod:`asr_stream.evaluation.stats` resamples."""
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be lists of strings, not str")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    prep = normalize_text if normalize else (lambda x: " ".join(x.split()))
    refs = [prep(r) for r in references]
    hyps = [prep(h) for h in hypotheses]
    errors = [len(h.split()) if not r else 0 for r, h in zip(refs, hyps)]  # empty reference: all insertions
    words = [len(r.split()) for r in refs]
    aligned = [i for i, r in enumerate(refs) if r]
    if aligned:
        out = jiwer.process_words([refs[i] for i in aligned], [hyps[i] for i in aligned])
        for i, chunks in zip(aligned, out.alignments):
            errors[i] = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                            for c in chunks if c.type != "equal")
    return errors, words
