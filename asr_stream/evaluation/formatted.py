"""Scores of formatted text (case and punctuation), beside the normalised WER of :mod:`asr_stream.evaluation.wer`.

Both scores read a text as a sequence of *tokens* (:func:`formatted_tokens`), after three of ``normalize_text``'s
rules: Unicode NFKC, apostrophe look-alikes -> ``'``, dashes (``Pd`` and U+2212) -> a space. Then a token is a
word (letters / digits / ``_``, with apostrophes inside it: ``Don't``), kept in its case, or a single
punctuation or symbol character (every other non-space character): ``"Hello, world."`` is
``Hello`` ``,`` ``world`` ``.``.

- **Formatted WER** (:func:`formatted_wer`): the WER of these token sequences (jiwer's alignment, errors summed
  over the corpus, divided by the reference's token count), so a wrong case (``hello``) or a missing, extra or
  wrong mark is an error like a wrong word, and marks count in the denominator. It is the case- and
  punctuation-sensitive figure reported next to the normalised WER, which stays the headline.
- **Punctuation F1** (:func:`punctuation_f1`): each mark belongs to the word before it (a mark before the first
  word, to the first word). The reference and hypothesis words are aligned case-insensitively (jiwer, per
  utterance); for each mark class c (the mark's character: ``,`` ``.`` ``?`` ``!`` ...) and each aligned word pair
  (a hit or a substitution) the marks of c on both words count as true positives (the smaller count), the
  hypothesis's extra ones as false positives and the reference's extra ones as false negatives; marks on a deleted
  reference word are false negatives, marks on an inserted hypothesis word false positives. Micro-averaged over
  classes: ``F1 = 2 TP / (2 TP + FP + FN)`` with TP, FP, FN summed over all classes and utterances (NaN when
  neither side has a mark). Per-class precision / recall / F1 come with it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import jiwer

from .wer import APOSTROPHES, wer_details

_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_WORD = re.compile(r"\w+(?:'\w+)*")


def _prepare(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).translate(APOSTROPHES)
    return "".join(" " if unicodedata.category(c) == "Pd" or c == "\u2212" else c for c in s)


def formatted_tokens(s: str) -> list[str]:
    """The tokens of ``s`` that the formatted scores compare (module docstring): words in their case, and each
    punctuation or symbol character on its own."""
    return _TOKEN.findall(_prepare(s))


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be lists of strings, not str")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def formatted_wer(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Case- and punctuation-sensitive WER over :func:`formatted_tokens` (module docstring); the same keys and edge
    cases as :func:`asr_stream.evaluation.wer.wer_details`, counted in tokens (words and marks)."""
    _check(references, hypotheses)
    return wer_details([" ".join(formatted_tokens(r)) for r in references],
                       [" ".join(formatted_tokens(h)) for h in hypotheses], normalize=False)


def _words_with_marks(s: str) -> list[tuple[str, Counter]]:
    """(lower-cased word, its marks) per word of ``s``; marks before the first word go to the first word."""
    out: list[tuple[str, Counter]] = []
    leading: Counter = Counter()
    for tok in formatted_tokens(s):
        if _WORD.fullmatch(tok):
            out.append((tok.lower(), leading))
            leading = Counter()
        elif out:
            out[-1][1][tok] += 1
        else:
            leading[tok] += 1
    return out  # marks with no word at all (a text of marks only) are dropped: there is no word to put them on


def punctuation_f1(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Punctuation F1, micro-averaged over mark classes (module docstring). Returns ``{"f1", "precision",
    "recall", "tp", "fp", "fn", "classes": {mark: {"tp", "fp", "fn", "precision", "recall", "f1"}}}``; a ratio
    whose denominator is 0 is NaN."""
    _check(references, hypotheses)
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for ref, hyp in zip(references, hypotheses):
        r, h = _words_with_marks(ref), _words_with_marks(hyp)
        if not r or not h:
            for _, m in r:
                fn.update(m)
            for _, m in h:
                fp.update(m)
            continue
        out = jiwer.process_words(" ".join(w for w, _ in r), " ".join(w for w, _ in h))
        for c in out.alignments[0]:
            if c.type in ("equal", "substitute"):
                for (_, rm), (_, hm) in zip(r[c.ref_start_idx:c.ref_end_idx], h[c.hyp_start_idx:c.hyp_end_idx]):
                    both = rm & hm
                    tp.update(both)
                    fp.update(hm - both)
                    fn.update(rm - both)
            elif c.type == "delete":
                for _, rm in r[c.ref_start_idx:c.ref_end_idx]:
                    fn.update(rm)
            else:  # insert
                for _, hm in h[c.hyp_start_idx:c.hyp_end_idx]:
                    fp.update(hm)

    def scores(t: int, p: int, n: int) -> dict:
        ratio = lambda a, b: a / b if b else math.nan  # noqa: E731
        return {"tp": t, "fp": p, "fn": n, "precision": ratio(t, t + p), "recall": ratio(t, t + n),
                "f1": ratio(2 * t, 2 * t + p + n)}

    classes = {c: scores(tp[c], fp[c], fn[c]) for c in sorted(set(tp) | set(fp) | set(fn))}
    return {**scores(sum(tp.values()), sum(fp.values()), sum(fn.values())), "classes": classes}
