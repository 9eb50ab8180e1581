"""Contextual-biasing metrics: B-WER, U-WER and rare-word recall (a biasing set's records, ``bias_words``).

The rule of the contextual-biasing literature (Le et al., "Contextualized streaming end-to-end speech recognition
with trie-based deep biasing and shallow fusion", Interspeech 2021, and its scoring script ``is21_deep_bias/score.py``;
also used by the TCPGen papers): align the reference and the hypothesis word by word (after
:func:`~asr_stream.evaluation.wer.normalize_text`), then

- a reference word is **biased** when it is a word of the utterance's biasing list (its true rare words and the
  distractors), else **unbiased**; a match, substitution or deletion counts for the class of its reference word;
- an insertion counts for the class of the inserted (hypothesis) word: writing a distractor that was not said is a
  biased error;
- B-WER = biased errors / biased reference words; U-WER = unbiased errors / unbiased reference words;
- rare-word recall = biased reference words matched / biased reference words (the share of the list's words that
  were said and written).

Both WERs are corpus-level (errors summed over utterances, then divided), as :func:`wer_details` is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jiwer

from .wer import normalize_text


def bias_counts(reference: str, hypothesis: str, bias_words: Sequence[str]) -> dict[str, int]:
    """One utterance's counts: ``b_ref``, ``b_err``, ``b_hit``, ``u_ref``, ``u_err`` (see the module doc). ``bias_words``:
    words or phrases (a phrase's words each count)."""
    words = {w for p in bias_words for w in normalize_text(p).split()}
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    c = dict(b_ref=0, b_err=0, b_hit=0, u_ref=0, u_err=0)
    for w in ref:
        c["b_ref" if w in words else "u_ref"] += 1
    if not ref:
        for w in hyp:
            c["b_err" if w in words else "u_err"] += 1
        return c
    if not hyp:
        c["b_err"], c["u_err"] = c["b_ref"], c["u_ref"]
        return c
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    for chunk in out.alignments[0]:
        if chunk.type == "insert":
            for w in hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]:
                c["b_err" if w in words else "u_err"] += 1
            continue
        for w in ref[chunk.ref_start_idx : chunk.ref_end_idx]:
            if chunk.type == "equal":
                c["b_hit"] += w in words
            else:  # substitute, delete
                c["b_err" if w in words else "u_err"] += 1
    return c


def biasing_summary(rows: Sequence[Mapping]) -> dict:
    """B-WER, U-WER and rare-word recall over the records that carry ``bias_words`` (fractions; nan without biased or
    unbiased reference words), with the counts."""
    tot = dict(b_ref=0, b_err=0, b_hit=0, u_ref=0, u_err=0)
    n = 0
    for r in rows:
        if "bias_words" not in r:
            continue
        n += 1
        for k, v in bias_counts(r["reference"], r["hypothesis"], r["bias_words"]).items():
            tot[k] += v
    div = lambda a, b: a / b if b else math.nan  # noqa: E731
    return {"bias_utterances": n, "b_wer": div(tot["b_err"], tot["b_ref"]), "u_wer": div(tot["u_err"], tot["u_ref"]),
            "rare_recall": div(tot["b_hit"], tot["b_ref"]), "bias_ref_words": tot["b_ref"], "unbiased_ref_words": tot["u_ref"]}


__all__ = ["bias_counts", "biasing_summary"]
