"""The plan of a synthetic corpus: every random choice (split, voice, rate, pitch, noise) drawn from one seed.

* Splits: sentences are deduplicated on their transcript, then shuffled with the seed and cut into disjoint
  test / dev / train sets. ``test-unseen-voice`` speaks the *test* sentences with a voice train never uses,
  so seen-voice and unseen-voice error rates compare on identical text. Train utterances go round-robin over the
  training voices so speakers are balanced.
* Extra training text (``extra_train_voices``) and extra test splits (``eval_voices``) are planned after the rest,
  each from a generator of its own, so turning them on leaves every other utterance exactly as it was.
* :func:`plan_corpus` is drawn in the main process before any audio is made; the writers
  (:mod:`asr_stream.corpus.synth`) only execute the plan, so the same seed gives the same corpus whatever ``jobs``
  is.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from . import engines
from .text import (FORTUNE_DIR, Sentence, SynthError, clean_sentences, fortune_sentences, keep_top_words,
                   text_file_sentences)
from .voices import (DEFAULT_UNSEEN_VOICE, DEFAULT_VOICES, MBROLA_VOICES, available_voices, check_training_voices,
                     speaker_ids)

log = logging.getLogger(__name__)

#: Split names written, in this order.
SPLITS = ("train", "dev", "test", "test-unseen-voice")
_CHAPTER = {"train": 1, "dev": 2, "test": 3, "test-unseen-voice": 4}  # one chapter per (speaker, split)



@dataclass(frozen=True)
class SynthConfig:
    """Settings of one corpus; the defaults make the full-size corpus from the fortunes files.

    Counts are utterances (train: sentences x ``train_voices_per_sentence``); rate is espeak-ng words per
    minute (default 175); pitch is espeak-ng's 0-99 scale (default 50); snr_db is the signal-to-noise ratio in
    dB of additive white noise over the whole utterance (None: clean).
    """

    out_dir: Path
    seed: int = 0
    text_file: Path | None = None  # one sentence per line; None: the fortunes files
    fortune_dir: Path = FORTUNE_DIR
    top_words: int | None = None  # only sentences made of the N most frequent words
    min_words: int = 4
    max_words: int = 20
    num_train: int | None = None  # train sentences; None: all left after dev and test
    num_dev: int = 300
    num_test: int = 300
    train_voices_per_sentence: int = 1
    voices: tuple[str, ...] | None = None  # None: DEFAULT_VOICES + installed MBROLA_VOICES
    unseen_voice: str = DEFAULT_UNSEEN_VOICE
    rate_range: tuple[int, int] = (140, 210)
    pitch_range: tuple[int, int] = (30, 70)
    snr_db: float | None = None
    min_train_vocab: int = 2000  # distinct training words required; lower it for tiny runs
    extra_train_voices: int = 0  # voices for each sentence top_words leaves out, spoken into train only (0: none)
    # Extra test splits, (split name "test-...", voices): each speaks the test sentences once, its voices taking
    # turns; e.g. engines.UNSEEN_SPEAKER_SPLITS (kal, slt). Their speakers must not be training speakers.
    eval_voices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    jobs: int = 1
    overwrite: bool = False
    only_splits: tuple[str, ...] | None = None  # synthesise only these splits of the (whole, unchanged) plan; None: all

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise SynthError(f"bad synth setting: {msg}")

        if self.min_words < 1 or self.max_words < self.min_words:
            bad(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.num_dev < 0 or self.num_test < 0 or (self.num_train is not None and self.num_train < 1):
            bad("num_train must be >= 1 and num_dev, num_test >= 0")
        if self.train_voices_per_sentence < 1:
            bad("train_voices_per_sentence must be >= 1")
        if not (80 <= self.rate_range[0] <= self.rate_range[1] <= 450):
            bad(f"rate_range {self.rate_range} must lie within 80-450 words per minute")
        if not (0 <= self.pitch_range[0] <= self.pitch_range[1] <= 99):
            bad(f"pitch_range {self.pitch_range} must lie within 0-99")
        if self.jobs < 1:
            bad("jobs must be >= 1")
        if self.top_words is not None and self.top_words < 1:
            bad("top_words must be >= 1")
        if self.extra_train_voices < 0:
            bad("extra_train_voices must be >= 0")
        known = (*SPLITS, *(n for n, _ in self.eval_voices))
        if self.only_splits is not None and (not self.only_splits or set(self.only_splits) - set(known)):
            bad(f"only_splits {self.only_splits} must name some of {', '.join(known)}")
        if self.extra_train_voices and self.top_words is None:
            bad("extra_train_voices needs top_words (the extra sentences are the ones top_words leaves out)")
        names = [n for n, _ in self.eval_voices]
        for name, voices in self.eval_voices:
            if not re.fullmatch(r"test-[a-z0-9][a-z0-9_-]*", name) or name in SPLITS:
                bad(f"eval split name {name!r} must look like test-NAME and differ from {', '.join(SPLITS)}")
            if not voices:
                bad(f"eval split {name} has no voices")
        if len(set(names)) != len(names):
            bad(f"eval split names repeat: {', '.join(names)}")


@dataclass(frozen=True)
class PlannedUtterance:
    """Everything needed to make one utterance; rate in words/minute, pitch 0-99, noise_seed for the SNR noise."""

    split: str
    speaker: str
    chapter: str
    id: str
    voice: str
    rate: int
    pitch: int
    noise_seed: int
    sentence: Sentence

    def audio_path(self, root: Path) -> Path:
        return root / self.split / self.speaker / self.chapter / f"{self.id}.flac"


def _raw_sentences(cfg: SynthConfig) -> list[str]:
    return text_file_sentences(cfg.text_file) if cfg.text_file is not None else fortune_sentences(cfg.fortune_dir)


def load_sentences(cfg: SynthConfig) -> list[Sentence]:
    """The cleaned, deduplicated sentence pool for ``cfg`` (text file or fortunes)."""
    raw = _raw_sentences(cfg)
    sents = clean_sentences(raw, cfg.min_words, cfg.max_words, cfg.top_words)
    log.info("%d usable sentences from %d raw", len(sents), len(raw))
    return sents


def load_extra_train_sentences(cfg: SynthConfig) -> list[Sentence]:
    """The cleaned sentences that ``cfg.top_words`` leaves out of the pool (in text order), which
    ``extra_train_voices`` speaks into train only; empty when the extras are off."""
    if not cfg.extra_train_voices:
        return []
    everything = clean_sentences(_raw_sentences(cfg), cfg.min_words, cfg.max_words)
    assert cfg.top_words is not None  # SynthConfig checks it
    pool = {s.text for s in keep_top_words(everything, cfg.top_words)}
    return [s for s in everything if s.text not in pool]


def plan_corpus(cfg: SynthConfig, sentences: Sequence[Sentence], train_voices: Sequence[str],
                extra_train: Sequence[Sentence] = ()) -> list[PlannedUtterance]:
    """Draw every random choice for the corpus from ``cfg.seed``: split membership, voice, rate, pitch, noise.

    ``extra_train`` (see :func:`load_extra_train_sentences`) are appended to train, each spoken by
    ``cfg.extra_train_voices`` voices, with draws from a second generator: the rest of the plan does not
    depend on them.
    """
    if not train_voices:
        raise SynthError("no usable training voices")
    check_training_voices(train_voices)
    if cfg.unseen_voice in train_voices:
        raise SynthError(f"unseen voice {cfg.unseen_voice!r} is also a training voice")
    train_speakers = {engines.speaker_of(v) for v in train_voices}
    for name, voices in cfg.eval_voices:
        seen = [v for v in voices if engines.speaker_of(v) in train_speakers]
        if seen:
            raise SynthError(f"eval split {name}: voice(s) {', '.join(seen)} are training speakers, not unseen ones")
    for name in ("train_voices_per_sentence", "extra_train_voices"):
        if getattr(cfg, name) > len(train_voices):
            raise SynthError(f"{name}={getattr(cfg, name)} exceeds the {len(train_voices)} training voices")
    need = cfg.num_dev + cfg.num_test + (cfg.num_train or 1)
    if len(sentences) < need:
        raise SynthError(f"only {len(sentences)} usable sentences, need {need} "
                         f"(train {cfg.num_train or '>=1'}, dev {cfg.num_dev}, test {cfg.num_test})")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(sentences))
    test = [sentences[i] for i in order[: cfg.num_test]]
    dev = [sentences[i] for i in order[cfg.num_test: cfg.num_test + cfg.num_dev]]
    rest = order[cfg.num_test + cfg.num_dev:]
    train = [sentences[i] for i in (rest if cfg.num_train is None else rest[: cfg.num_train])]

    ids = speaker_ids(list(train_voices) + [cfg.unseen_voice])
    eval_only = [v for _, vs in cfg.eval_voices for v in vs if v not in ids]
    if eval_only:  # given ids of their own afterwards, so adding eval splits changes no other speaker's id
        used = set(ids.values())
        for v, i in speaker_ids(eval_only).items():
            while i in used:
                i = str((int(i) - 999) % 9000 + 1000)
            used.add(i)
            ids[v] = i
    chapter_of = dict(_CHAPTER, **{name: len(_CHAPTER) + 1 + n for n, (name, _) in enumerate(cfg.eval_voices)})
    nv, k = len(train_voices), cfg.train_voices_per_sentence
    # Voices start at a seeded offset and go round-robin: balanced speakers, distinct voices per sentence.
    offset = int(rng.integers(nv))
    jobs: list[tuple[str, str, Sentence]] = []
    for split, sents, reps in (("train", train, k), ("dev", dev, 1), ("test", test, 1)):
        for s in sents:
            jobs += [(split, train_voices[(offset + r) % nv], s) for r in range(reps)]
            offset += reps
    jobs += [("test-unseen-voice", cfg.unseen_voice, s) for s in test]

    plan: list[PlannedUtterance] = []
    counter: Counter[tuple[str, str]] = Counter()

    def add(jobs: list[tuple[str, str, Sentence]], rng: np.random.Generator) -> None:
        for split, voice, s in jobs:
            spk, chap = ids[voice], str(chapter_of[split])
            n = counter[(split, voice)]
            counter[(split, voice)] += 1
            plan.append(PlannedUtterance(
                split, spk, chap, f"{spk}-{chap}-{n:04d}", voice,
                rate=int(rng.integers(cfg.rate_range[0], cfg.rate_range[1] + 1)),
                pitch=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
                noise_seed=int(rng.integers(2**32)), sentence=s,
            ))

    add(jobs, rng)
    if extra_train and cfg.extra_train_voices:
        rng = np.random.default_rng([cfg.seed, 1])
        offset, reps = int(rng.integers(nv)), cfg.extra_train_voices
        extra: list[tuple[str, str, Sentence]] = []
        for s in extra_train:
            extra += [("train", train_voices[(offset + r) % nv], s) for r in range(reps)]
            offset += reps
        add(extra, rng)
    if cfg.eval_voices:  # a generator of their own: the splits above come out the same with or without these
        rng = np.random.default_rng([cfg.seed, 2])
        evals: list[tuple[str, str, Sentence]] = []
        for name, voices in cfg.eval_voices:
            offset = int(rng.integers(len(voices)))
            evals += [(name, voices[(offset + i) % len(voices)], s) for i, s in enumerate(test)]
        add(evals, rng)
    return plan


def resolve_voices(cfg: SynthConfig) -> tuple[SynthConfig, list[str]]:
    """``cfg`` with every voice in its canonical engine:name form, and the training voices that work here.

    Refuses evaluation-only speakers among the training candidates (before anything is made, installed or not) and
    voices asked for by name that do not work; only the default pool is filtered silently."""
    try:
        asked = tuple(engines.canonical_voice(v) for v in cfg.voices) if cfg.voices is not None else None
        evals = tuple((n, tuple(engines.canonical_voice(v) for v in vs)) for n, vs in cfg.eval_voices)
        cfg = replace(cfg, voices=asked, eval_voices=evals, unseen_voice=engines.canonical_voice(cfg.unseen_voice))
    except engines.EngineError as e:
        raise SynthError(str(e)) from None
    candidates = cfg.voices if cfg.voices is not None else DEFAULT_VOICES + MBROLA_VOICES
    check_training_voices(candidates)
    train_voices = available_voices([v for v in candidates if v != cfg.unseen_voice])
    missing = [v for v in (cfg.voices or ()) if v not in train_voices and v != cfg.unseen_voice]
    if missing:
        raise SynthError(f"cannot use voice(s) {', '.join(missing)} (see espeak-ng --voices=en, flite -lv, "
                         f"and make sysdeps for flite / festival voices)")
    return cfg, train_voices
