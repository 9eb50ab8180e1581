"""Context lists (prompted hotwords): words and phrases the decoder reads before it writes the transcript.

A context list enters the decoder as a prefix of the target group (:mod:`asr_stream.groups`: kind ``CONTEXT``,
positions just before the target's first row; the source never sees it, the target rows see all of it), so the
same mask rule and positions serve the training forward (``Batch.context``) and streaming
(``StreamConfig.context``: the context goes into the KV cache once at the start of each utterance, so also after a
segment's restart). Why this design: docs/design.md, "Context lists".

Text form (:func:`context_ids`): each phrase as the model's transcripts are written (upper-cased when the tokenizer
has no lower-case letters, as the synthetic models' transcripts are), tokenised, and followed by EOS: the target
group then reads ``phrase EOS phrase EOS ... BOS transcript``, like earlier utterances before a new one.

Training (:class:`ContextDraw`, ``data.context`` of a training config): with probability ``prob`` an utterance gets
a list of some of its own rarer words and random distractors from the rare part of the training vocabulary (or a
word list); with ``distractor_only_prob`` the list holds distractors only, so that an irrelevant list learns to do
no harm.

User input (:func:`parse_context`, :func:`read_context_file`): phrases separated by commas or new lines; bad input
is a one-line ValueError.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

MAX_CONTEXT_FILE_BYTES = 1 << 20
"""A context file larger than this (1 MiB) is refused before it is read (no model reads that many tokens)."""


def parse_context(text: str, where: str = "--context") -> tuple[str, ...]:
    """Phrases of a context string: split at commas and new lines, whitespace collapsed, empty pieces dropped.
    ValueError when nothing is left."""
    phrases = tuple(" ".join(p.split()) for p in text.replace("\n", ",").split(","))
    phrases = tuple(p for p in phrases if p)
    if not phrases:
        raise ValueError(f"{where}: no words in the context (give phrases separated by commas or new lines)")
    return phrases


def read_context_file(path: str | Path) -> tuple[str, ...]:
    """The phrases of a UTF-8 context file (one or more a line, separated by commas). One-line ValueError for a
    missing, unreadable, too large, non-UTF-8 or empty file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--context-file {p}: {'not a regular file' if p.exists() else 'no such file'}")
    size = p.stat().st_size
    if size > MAX_CONTEXT_FILE_BYTES:
        raise ValueError(f"--context-file {p}: {size} bytes, more than a context can hold ({MAX_CONTEXT_FILE_BYTES} at most)")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--context-file {p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"--context-file {p}: cannot read it ({e.strerror or e})") from None
    return parse_context(text, f"--context-file {p}")


def context_from_options(context: Optional[str], context_file: Optional[str]) -> tuple[str, ...]:
    """``--context`` and ``--context-file`` together (the file's phrases after the string's); () when neither."""
    out: tuple[str, ...] = ()
    if context is not None:
        out += parse_context(context)
    if context_file is not None:
        out += read_context_file(context_file)
    return out


@functools.lru_cache(maxsize=8)
def _cased(codec) -> bool:
    """Does the tokenizer write lower-case letters? (the synthetic models' BPE has only upper case)"""
    special = set(getattr(codec.tok, "all_special_tokens", []))
    vocab = codec.tok.get_vocab() if hasattr(codec.tok, "get_vocab") else {}
    return any(ch.islower() for piece in vocab if piece not in special for ch in piece.replace("</w>", ""))


def context_ids(codec, phrases: Sequence[str]) -> list[int]:
    """Token ids of a context list: each phrase (upper-cased for a tokenizer without lower case) then EOS."""
    cased = _cased(codec)
    ids: list[int] = []
    for phrase in phrases:
        text = " ".join(phrase.split())
        ids += codec.encode(text if cased else text.upper()) + [codec.eos_id]
    return ids


def check_context_length(model_cfg, n_tokens: int) -> None:
    """One-line ValueError for a context the model cannot read: trained without context, or too long."""
    if n_tokens and model_cfg.context_max_tokens == 0:
        raise ValueError("this model was trained without context lists (context_max_tokens = 0), so it cannot use a "
                         "context; train one with model.context_max_tokens and data.context (conf/*context*.yaml)")
    if n_tokens > model_cfg.context_max_tokens:
        raise ValueError(f"the context is too long: {n_tokens} tokens, and this model reads at most "
                         f"{model_cfg.context_max_tokens} (give fewer or shorter phrases)")


def checked_ids(model, phrases: Sequence[str]) -> list[int]:
    """:func:`context_ids` of ``phrases`` for ``model`` (a SpeechLLM), checked by :func:`check_context_length`; a
    phrase with a character the model's vocabulary cannot write is read with an unknown token in its place and can
    never be written as listed: one warning names it (:func:`_warn_unwritable`)."""
    ids = context_ids(model.codec, phrases) if phrases else []
    check_context_length(model.cfg, len(ids))
    unk = getattr(model.codec.tok, "unk_token_id", None)
    if unk is not None and unk in ids:
        _warn_unwritable(model.codec, tuple(phrases), unk)
    return ids


class ContextWarning(UserWarning):
    """A context list the model will read otherwise than listed (the command line prints it as one line)."""


@functools.lru_cache(maxsize=64)
def _warn_unwritable(codec, phrases: tuple[str, ...], unk: int) -> None:
    """Warn once per list: the phrases with characters ``codec`` cannot write, and those characters."""
    import warnings

    bad = {p: "".join(sorted({c for c in p if not c.isspace() and unk in context_ids(codec, [c])})) for p in phrases
           if unk in context_ids(codec, [p])}
    shown = "; ".join(f"{p!r} ({chars!r})" for p, chars in list(bad.items())[:5]) + (" ..." if len(bad) > 5 else "")
    warnings.warn(f"context: this model's vocabulary cannot write some characters, read as unknown tokens: {shown}; "
                  "spell them out or leave them out", ContextWarning, stacklevel=3)


def fit_context(codec, phrases: Sequence[str], max_tokens: int) -> list[int]:
    """Training: the ids of the longest prefix of ``phrases`` that fits ``max_tokens`` (phrases come shuffled)."""
    ids: list[int] = []
    for phrase in phrases:
        more = context_ids(codec, [phrase])
        if len(ids) + len(more) > max_tokens:
            break
        ids += more
    return ids


@dataclass(frozen=True)
class ContextDraw:
    """How training draws context lists (``data.context`` of a training config; every key optional)."""

    prob: float = 0.0
    """Share of training utterances that get a context list (0: none; the model then trains without context)."""
    distractor_only_prob: float = 0.3
    """Of those, the share whose list holds distractors only (none of the utterance's words)."""
    true_words: tuple[int, int] = (1, 3)
    """How many of the utterance's rare words a list holds (drawn uniformly in this range, inclusive)."""
    distractors: tuple[int, int] = (0, 100)
    """How many distractors a list holds (uniformly in this range, inclusive; at least one in a distractor-only
    list)."""
    rare_rank: int = 1000
    """A word is rare when it is not among this many most frequent words of the training transcripts: the words a
    list takes from the utterance, and the pool distractors come from."""
    word_list: Optional[str] = None
    """A UTF-8 file of distractor words or phrases (one a line) instead of the rare training vocabulary."""
    per_batch: bool = False
    """Flip the list-or-none coin (``prob``) once per batch instead of once per utterance: a batch holds lists for
    all its utterances or for none. A list is a prefix of every target in the batch, so one long list pads them all;
    per batch, the batches without lists train at the speed of a model without context (at ``prob`` 0.5 about half
    the steps). Each utterance's list itself is drawn as before."""

    def __post_init__(self) -> None:
        for name in ("prob", "distractor_only_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"data.context.{name} must lie in [0, 1], got {v}")
        for name in ("true_words", "distractors"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"data.context.{name} must be [low, high] with 0 <= low <= high, got {[lo, hi]}")
        if self.rare_rank < 0:
            raise ValueError(f"data.context.rare_rank must be >= 0, got {self.rare_rank}")

    @staticmethod
    def from_dict(d: Optional[dict]) -> "ContextDraw":
        """From a config mapping; an unknown key is a one-line ValueError."""
        d = dict(d or {})
        known = {f.name for f in fields(ContextDraw)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"data.context: unknown key(s) {unknown} (known: {sorted(known)})")
        for name in ("true_words", "distractors"):
            if name in d:
                d[name] = tuple(int(x) for x in d[name])
        return ContextDraw(**d)

    @property
    def active(self) -> bool:
        return self.prob > 0


def list_words(text: str) -> list[str]:
    """The words of a transcript as a context list writes them: split at spaces, punctuation at either end dropped
    (a formatted transcript's ``Zanzibar,`` is ``Zanzibar``; the apostrophe ``'`` is kept, as plain text has it), case
    kept; a word that is only punctuation is none."""
    out = []
    for w in text.split():
        a, b = 0, len(w)
        while a < b and w[a] != "'" and unicodedata.category(w[a])[0] in "PS":
            a += 1
        while b > a and w[b - 1] != "'" and unicodedata.category(w[b - 1])[0] in "PS":
            b -= 1
        if a < b:
            out.append(w[a:b])
    return out


def word_key(word: str) -> str:
    """What two spellings of a word share (its upper case): rarity and "is it in the text" are decided on it."""
    return word.upper()


class ContextSampler:
    """Draws a training utterance's context list from its transcript (:class:`ContextDraw`'s rules)."""

    def __init__(self, draw: ContextDraw, transcripts: Iterable[str]) -> None:
        self.draw = draw
        counts, spelled = Counter(), {}  # by word_key; each key's most frequent spelling (a formatted model's case)
        for t in transcripts:
            for w in list_words(t):
                counts[word_key(w)] += 1
                spelled.setdefault(word_key(w), Counter())[w] += 1
        ranked = [spelled[k].most_common(1)[0][0] for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        self.common = frozenset(word_key(w) for w in ranked[: draw.rare_rank])
        if draw.word_list:
            p = Path(draw.word_list)
            try:
                words = [" ".join(ln.split()) for ln in p.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"data.context.word_list {p}: cannot read it as UTF-8 text ({type(e).__name__})") from None
            self.pool = sorted({w for w in words if w})
        else:
            self.pool = ranked[draw.rare_rank :]
        if not self.pool:
            raise ValueError(f"data.context: no distractor words (the training text has {len(ranked)} distinct words, "
                             f"rare_rank is {draw.rare_rank}; lower it or give a word_list)")

    def __call__(self, text: str, rng: np.random.Generator) -> tuple[str, ...]:
        d = self.draw
        if not d.per_batch and rng.random() >= d.prob:
            return ()
        words = list(dict.fromkeys(list_words(text)))
        rare = [w for w in words if word_key(w) not in self.common]
        true: list[str] = []
        if rare and rng.random() >= d.distractor_only_prob:
            n = int(rng.integers(d.true_words[0], d.true_words[1] + 1))
            true = [rare[j] for j in rng.choice(len(rare), size=min(n, len(rare)), replace=False)]
        n_d = int(rng.integers(d.distractors[0], d.distractors[1] + 1))
        if not true:
            n_d = max(n_d, 1)
        in_text = {word_key(w) for w in words}
        picks = rng.choice(len(self.pool), size=min(len(self.pool), n_d + len(in_text)), replace=False) if n_d else []
        distract = [self.pool[j] for j in picks if word_key(self.pool[j]) not in in_text][:n_d]
        out = true + distract
        return tuple(out[j] for j in rng.permutation(len(out)))


def batch_has_context(draw: ContextDraw, seed: int, epoch: int, first: int) -> bool:
    """``draw.per_batch``: does the batch whose first utterance is ``first`` get its lists? From (seed, epoch, first)
    alone, a stream apart from the lists' own draws."""
    return bool(np.random.default_rng([seed, epoch, first, 0xBA]).random() < draw.prob)


def context_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random draws of utterance ``index``'s context list in ``epoch``: from (seed, epoch, index) alone, and a
    stream of their own (the waveform augmentation's draws, and so a feature cache, do not move)."""
    return np.random.default_rng([seed, epoch, index, 0xC0])


__all__ = ["ContextDraw", "ContextSampler", "ContextWarning", "MAX_CONTEXT_FILE_BYTES", "batch_has_context",
           "check_context_length", "checked_ids", "context_from_options", "context_ids", "context_rng", "fit_context",
           "list_words", "parse_context", "read_context_file", "word_key"]
