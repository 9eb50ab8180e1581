"""Synthetic speech corpus in LibriSpeech layout, spoken by espeak-ng from natural English text.

Meant for smoke-training and CI of the whole pipeline without downloading LibriSpeech: the audio is robotic,
but the text is real English (so a language model prior helps), the "speakers" are distinct espeak-ng voices
and variants, and rate/pitch vary per utterance.

Output (``<out>/``)::

    train/ dev/ test/ test-unseen-voice/      <split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
                                              + <speaker>-<chapter>.trans.txt   (16 kHz mono FLAC, upper-case text)
                                              + <speaker>-<chapter>.alignment.txt (word timings)
    SPEAKERS.TXT                              speaker id | sex | split | minutes | espeak-ng voice
    synth_config.json                         the settings used (no timestamps, so reruns are byte-identical)

Read it back with :func:`asr_stream.data.read_librispeech`.

Design:

* Text: sentences from the Debian ``fortunes`` / ``fortunes-min`` files, or a text file with one sentence per
  line, cleaned by :func:`clean_sentence` to 4-20 words of ASCII letters and apostrophes. Sentences with
  digits, URLs or odd symbols are dropped rather than normalised, since espeak-ng would read them in ways the
  transcript cannot predict; for the same reason a word espeak-ng expands (roman numerals, "mr", "etc") or
  spells out (vowel-less words) drops its sentence. Optionally only sentences made of the N most frequent words.
  The full fortunes set gives ~17.6k sentences with ~16k distinct words.
* Extra training text (``extra_train_voices``): with ``top_words``, the sentences the vocabulary limit leaves
  out can still be spoken into *train* only. Dev and test keep their low-OOV vocabulary, while the model
  reads three times the text (fortunes at 4-16 words: 5.6k sentences within the top 3,000 words, 9.9k
  outside). The extras are planned after the rest, from a generator of their own, so turning them on
  leaves every dev, test and base-train utterance exactly as it was.
* Splits: sentences are deduplicated on their transcript, then shuffled with the seed and cut into disjoint
  test / dev / train sets. ``test-unseen-voice`` speaks the *test* sentences with a voice train never uses,
  so seen-voice and unseen-voice error rates compare on identical text.
* Voices: :data:`DEFAULT_VOICES` (accents x variants) filtered to those this espeak-ng can run; MBROLA voices
  (:data:`MBROLA_VOICES`) join automatically when their packages (``mbrola-us1`` ...) are installed.
  Train utterances go round-robin over the training voices so speakers are balanced.
* Determinism: every random choice (split, voice, rate, pitch, noise) is drawn in the main process from one
  seeded generator before any audio is made, and workers only execute the plan, so the same seed gives
  byte-identical transcripts and identical audio whatever ``jobs`` is, and whatever else ran in the process
  (every utterance is spoken from the same library and C ``rand()`` state: see :mod:`asr_stream.data.espeak`).
* Audio: libespeak-ng, called through ctypes (:mod:`asr_stream.data.espeak`) exactly as the ``espeak-ng``
  command line calls it, so the samples are the command line's: 22.05 kHz (MBROLA: 16 kHz), converted with
  :func:`asr_stream.audio.io.to_mono_16k` and stored as 16-bit FLAC. ``jobs`` worker processes (the library
  has one global state per process); the recipe's corpus (35k utterances, 29 h) takes about 6 minutes on 2 cores.
* Word timings: the library reports where each word starts; a word ends where its sound falls below -34 dB
  of the utterance's peak before the next word starts (10 ms resolution; see
  :func:`asr_stream.data.espeak.word_spans`). They are
  written per chapter to
  ``<speaker>-<chapter>.alignment.txt`` in the format published for LibriSpeech's forced alignments
  (:func:`asr_stream.data.corpus.parse_alignment_line`), which :func:`asr_stream.data.read_librispeech`
  reads into :attr:`Utterance.words`; evaluation uses them for partial-recognition latency (PR50 / PR90).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import engines, espeak
from .corpus import WordTiming, format_alignment_line

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz, the corpus rate (LibriSpeech's)
FORTUNE_DIR = Path("/usr/share/games/fortunes")

#: Split names written, in this order.
SPLITS = ("train", "dev", "test", "test-unseen-voice")
_CHAPTER = {"train": 1, "dev": 2, "test": 3, "test-unseen-voice": 4}  # one chapter per (speaker, split)

#: Training/dev/test voices, tried in this order; the ones this espeak-ng lacks are skipped.
#: Base accents x a few variants (``+f3`` = female 3, ``+m3`` = male 3 ...), see ``espeak-ng --voices=variant``.
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us", "en-us+f3", "en-us+m3", "en-us+f4",
    "en-gb", "en-gb+f2", "en-gb+m7",
    "en-gb-scotland", "en-gb-scotland+f4",
    "en-gb-x-rp", "en-gb-x-rp+f5",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd+m2",
    "en-us-nyc", "en-us-nyc+f2",
)
#: MBROLA English voices; used when installed (Debian contrib/non-free: mbrola, mbrola-us1 ...).
MBROLA_VOICES: tuple[str, ...] = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
#: Held out of train: an accent (Caribbean) absent from DEFAULT_VOICES, with a female variant.
DEFAULT_UNSEEN_VOICE = "en-029+f2"

_FEMALE_VARIANTS = re.compile(r"\+(f\d|whisperf|steph\d?|linda|annie|anika|alicia|andrea|belinda|aunty)$")
_FEMALE_MBROLA = {"mb-us1"}


class SynthError(RuntimeError):
    """Synthesis could not run (no espeak-ng, no usable voices, too little text ...). One-line message."""


# ------------------------------------------------------------------------------------------------------ text

_ABBREVIATIONS = {"etc", "prof", "capt", "inc", "ltd", "corp", "approx", "dept", "jr", "sr", "vs", "viz"}
# Roman numerals of 2+ letters: espeak-ng reads "ii" / "viii" as "roman two" / "roman eight".
_ROMAN = re.compile(r"^(?=[mdclxvi]{2,}$)m{0,4}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")
_ROMAN_OK = {"mix"}  # real words that match _ROMAN and that espeak-ng reads as words
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[,;.!?]")
_ALLOWED = re.compile(r"^[A-Za-z' ,;.!?\"]+$")
_URL = re.compile(r"://|www\.|@|\.(com|org|net|edu|gov)\b", re.I)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "`": "'", "\u201c": '"', "\u201d": '"'})
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_ABBREV_END = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|Prof|No|Vol|Fig|e\.g|i\.e)|\b[A-Z])\.$")


@dataclass(frozen=True)
class Sentence:
    """One cleaned sentence: ``text`` is the upper-case transcript, ``spoken`` what espeak-ng is given
    (the same words, lower-case, keeping , . ! ? for prosody)."""

    text: str
    spoken: str


def clean_sentence(raw: str, min_words: int = 4, max_words: int = 20) -> Sentence | None:
    """Normalise one sentence, or return None if it is not plain English of ``min_words``-``max_words`` words."""
    s = " ".join(raw.translate(_QUOTES).split())
    if not s or re.search(r"\d", s) or _URL.search(s):
        return None
    s = s.replace("--", ", ")
    s = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", s)  # "long-forgotten" -> two words, as espeak-ng says it
    if not _ALLOWED.match(s):  # anything else (: ( ) / * & - ...) marks dialogue labels, code, lists, art
        return None
    words = _WORD.findall(s)
    if not (min_words <= len(words) <= max_words):
        return None
    for w in words:
        lw = w.lower()
        if not re.search(r"[aeiouy]", lw) or lw in _ABBREVIATIONS or (_ROMAN.match(lw) and lw not in _ROMAN_OK):
            return None
    spoken: list[str] = []
    for tok in _TOKEN.findall(s):
        if tok in ",;.!?":
            if spoken and spoken[-1][-1] not in ",.!?":  # keep one mark per gap; ";" is just a pause
                spoken[-1] += "," if tok == ";" else tok
        else:
            spoken.append(tok.lower())
    if spoken[-1][-1] not in ".!?":
        spoken[-1] = spoken[-1].rstrip(",") + "."
    return Sentence(" ".join(w.upper() for w in words), " ".join(spoken))


def split_sentences(text: str) -> list[str]:
    """Split running text at . ! ? followed by space, not after common abbreviations or initials."""
    out: list[str] = []
    for piece in _SENT_END.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if out and _ABBREV_END.search(out[-1]):
            out[-1] += " " + piece
        else:
            out.append(piece)
    return out


def fortune_sentences(fortune_dir: str | os.PathLike = FORTUNE_DIR) -> list[str]:
    """Raw sentences from every fortune file in ``fortune_dir`` (files in name order; not subfolders)."""
    d = Path(fortune_dir)
    files = sorted(p for p in d.glob("*") if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
                   and p.name != "ascii-art") if d.is_dir() else []
    if not files:
        raise SynthError(f"{d}: no fortune files (apt-get install fortunes fortunes-min, or pass a text file)")
    out: list[str] = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", text, flags=re.M):
            # Attribution lines ("\t\t-- Mark Twain") are names, not sentences.
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith(("--", "\u2014"))]
            out.extend(split_sentences(" ".join(lines)))
    return out


def text_file_sentences(path: str | os.PathLike) -> list[str]:
    """Raw sentences from a UTF-8 text file, one per line (blank lines ignored)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SynthError(f"{p}: cannot read text file ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    return [ln.strip() for ln in lines if ln.strip()]


def clean_sentences(raw: Iterable[str], min_words: int = 4, max_words: int = 20,
                    top_words: int | None = None) -> list[Sentence]:
    """Clean, deduplicate on the transcript (first occurrence wins), and optionally keep only sentences
    whose words are all among the ``top_words`` most frequent (counted over the cleaned sentences)."""
    seen: set[str] = set()
    out: list[Sentence] = []
    for r in raw:
        s = clean_sentence(r, min_words, max_words)
        if s is not None and s.text not in seen:
            seen.add(s.text)
            out.append(s)
    return out if top_words is None else keep_top_words(out, top_words)


def keep_top_words(sentences: Sequence[Sentence], top_words: int) -> list[Sentence]:
    """The sentences whose words are all among the ``top_words`` most frequent in ``sentences``."""
    counts = Counter(w for s in sentences for w in s.text.split())
    # Ties broken alphabetically so the vocabulary does not depend on dict order.
    vocab = {w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_words]}
    return [s for s in sentences if all(w in vocab for w in s.text.split())]


# ---------------------------------------------------------------------------------------------------- voices


def espeak_binary() -> str:
    """Path of the espeak-ng executable; SynthError if it is not installed."""
    try:
        return espeak.binary()
    except espeak.EspeakError as e:
        raise SynthError(str(e)) from None


def voice_exists(voice: str) -> bool:
    """Whether espeak-ng lists ``voice`` (``base`` or ``base+variant``): :func:`asr_stream.data.espeak.voice_exists`;
    SynthError if espeak-ng is not installed."""
    try:
        return espeak.voice_exists(voice)
    except espeak.EspeakError as e:
        raise SynthError(str(e)) from None


def voice_works(voice: str) -> bool:
    """Whether ``voice`` (any engine; a bare name is espeak-ng's) can synthesise here:
    :func:`asr_stream.data.engines.voice_works`."""
    return engines.voice_works(voice)


def available_voices(candidates: Sequence[str] = DEFAULT_VOICES + MBROLA_VOICES) -> list[str]:
    """The voices of ``candidates`` that work here, in the given order."""
    return [v for v in candidates if voice_works(v)]


def speaker_ids(voices: Sequence[str]) -> dict[str, str]:
    """Stable numeric LibriSpeech-style speaker ids (1000-9999) from voice names.

    Ids are a hash of the name, so a voice keeps its id when the pool changes (e.g. MBROLA installed);
    collisions are resolved by probing upwards in sorted-name order.
    """
    out: dict[str, str] = {}
    used: set[int] = set()
    for v in sorted(set(voices)):
        i = int(hashlib.sha1(v.encode()).hexdigest(), 16) % 9000
        while i + 1000 in used:
            i = (i + 1) % 9000
        used.add(i + 1000)
        out[v] = str(i + 1000)
    return out


def _sex(voice: str) -> str:
    female = engines.is_female(voice)
    if female is not None:
        return "F" if female else "M"
    return "F" if _FEMALE_VARIANTS.search(voice) or voice in _FEMALE_MBROLA else "M"


# ------------------------------------------------------------------------------------------------- the plan


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


@dataclass
class SynthReport:
    """What :func:`synthesize_corpus` wrote: utterances and audio seconds per split, the training vocabulary
    size (distinct words), the voices used, and how many utterances got word timings."""

    out_dir: Path
    utterances: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    train_vocab: int = 0
    train_voices: list[str] = field(default_factory=list)
    unseen_voice: str = ""
    timed: int = 0  # utterances with word timings


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


def check_training_voices(voices: Sequence[str]) -> None:
    """SynthError if a training (train/dev/seen test) voice is an evaluation-only speaker (kal, slt; every
    engine's voice of them): those speakers are kept for the unseen-speaker test splits."""
    try:
        engines.check_training_voices(voices)
    except engines.EngineError as e:
        raise SynthError(str(e)) from None


# --------------------------------------------------------------------------------------------------- audio


def speak(text: str, voice: str, rate: int = 175, pitch: int = 50, snr_db: float | None = None,
          noise_seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]] | None]:
    """Speak ``text`` with ``voice``; returns 16 kHz mono float32 samples (with white noise at ``snr_db`` dB)
    and the (start, end) seconds of each space-separated word of ``text`` (None if the engine's word timings
    could not be matched to the words). ``voice`` is an espeak-ng name (bare or ``espeak:NAME``), or a Flite /
    Festival voice (``flite:awb``, ``festival:ked_diphone``; :mod:`asr_stream.data.engines`)."""
    from ..audio.io import AudioError

    try:
        engine, name = engines.split_voice(voice)
        audio, spans = engines.speak(text, voice, rate, pitch)
    except (engines.EngineError, AudioError) as e:
        raise SynthError(str(e)) from None
    return _finish(audio, f"espeak-ng -v {name}" if engine == "espeak" else voice, text, snr_db, noise_seed), spans


def _finish(audio: np.ndarray, where: str, text: str, snr_db: float | None, noise_seed: int) -> np.ndarray:
    """Add white noise at ``snr_db`` dB (seeded) and scale down a peak over 0.99; SynthError on silence."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    if power <= 0.0:
        raise SynthError(f"{where}: produced silence for {text[:40]!r}")
    if snr_db is not None:
        noise = np.random.default_rng(noise_seed).standard_normal(audio.shape[0])
        audio = audio + (noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:  # FLAC PCM_16 would clip; scale the whole utterance instead
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50, snr_db: float | None = None,
               noise_seed: int = 0) -> np.ndarray:
    """The audio of :func:`speak` alone."""
    return speak(text, voice, rate, pitch, snr_db, noise_seed)[0]


def _make_one(item: PlannedUtterance, root: Path, snr_db: float | None) -> tuple[float, tuple[WordTiming, ...] | None]:
    """Synthesise and write one FLAC; returns its duration in seconds and its word timings (None: unknown)."""
    import soundfile as sf

    audio, spans = speak(item.sentence.spoken, item.voice, item.rate, item.pitch, snr_db, item.noise_seed)
    path = item.audio_path(root)
    tmp = path.with_name(f".{path.name}.tmp")
    # Written under a temporary name and renamed, so an interrupted run leaves no truncated FLAC behind.
    sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    words = None
    if spans is not None and len(spans) == len(item.sentence.text.split()):
        words = tuple(WordTiming(w, round(a, 3), round(b, 3)) for w, (a, b) in zip(item.sentence.text.split(), spans))
    return audio.shape[0] / SAMPLE_RATE, words


def _write_transcripts(out: Path, plan: Sequence[PlannedUtterance]) -> dict[Path, list[PlannedUtterance]]:
    """One ``<speaker>-<chapter>.trans.txt`` per chapter folder (LibriSpeech layout), lines in id order; returns the
    utterances of each chapter folder."""
    chapters: dict[Path, list[PlannedUtterance]] = {}
    for p in plan:
        chapters.setdefault(p.audio_path(out).parent, []).append(p)
    for d, items in chapters.items():
        d.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{p.id} {p.sentence.text}\n" for p in sorted(items, key=lambda p: p.id))
        (d / f"{items[0].speaker}-{items[0].chapter}.trans.txt").write_text(lines, encoding="utf-8")
    return chapters


def _prepare_out_dir(out: Path, overwrite: bool, eval_splits: Sequence[str] = ()) -> None:
    ours = [out / s for s in (*SPLITS, *eval_splits)] + [out / "SPEAKERS.TXT", out / "synth_config.json"]
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"{out}: directory is not empty (use overwrite to replace the corpus)")
        foreign = sorted(p.name for p in out.iterdir() if p not in ours)
        if foreign:  # never delete what this tool did not write
            raise SynthError(f"{out}: holds files this tool did not write ({', '.join(foreign[:5])}); refusing")
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _resolve_voices(cfg: SynthConfig) -> tuple[SynthConfig, list[str]]:
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


def synthesize_corpus(cfg: SynthConfig, progress: Callable[[int, int], None] | None = None) -> SynthReport:
    """Write the corpus described by ``cfg``; ``progress(done, total)`` is called after each utterance."""
    espeak_binary()
    sentences = load_sentences(cfg)
    cfg, train_voices = _resolve_voices(cfg)
    if not voice_works(cfg.unseen_voice):
        raise SynthError(f"cannot use the unseen voice {cfg.unseen_voice!r}")
    bad_eval = [v for _, vs in cfg.eval_voices for v in vs if not voice_works(v)]
    if bad_eval:
        raise SynthError(f"cannot use eval voice(s) {', '.join(bad_eval)} (apt-get install flite festival "
                         f"festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)")

    plan = plan_corpus(cfg, sentences, train_voices, load_extra_train_sentences(cfg))
    train_words = {w for p in plan if p.split == "train" for w in p.sentence.text.split()}
    if len(train_words) < cfg.min_train_vocab:
        raise SynthError(f"training text has {len(train_words)} distinct words, fewer than min_train_vocab="
                         f"{cfg.min_train_vocab} (use more text, or lower min_train_vocab for a small run)")
    if cfg.only_splits is not None:  # every draw was made for the whole plan above: the kept splits are unchanged
        plan = [p for p in plan if p.split in cfg.only_splits]

    out = Path(cfg.out_dir)
    _prepare_out_dir(out, cfg.overwrite, [n for n, _ in cfg.eval_voices])
    # Transcripts and metadata first: they depend only on the plan, so they are identical for a given seed.
    chapters = _write_transcripts(out, plan)

    report = SynthReport(out, train_vocab=len(train_words), train_voices=list(train_voices),
                         unseen_voice=cfg.unseen_voice)
    index = {(p.id, p.split): i for i, p in enumerate(plan)}
    results = _run_plan(plan, out, cfg.snr_db, cfg.jobs, progress)
    durations = [d for d, _ in results]
    for p, d in zip(plan, durations):
        report.utterances[p.split] = report.utterances.get(p.split, 0) + 1
        report.seconds[p.split] = report.seconds.get(p.split, 0.0) + d
    for d, items in chapters.items():  # word alignments, in the format published for LibriSpeech
        timed = [(p, results[index[p.id, p.split]]) for p in sorted(items, key=lambda p: p.id)]
        lines = "".join(format_alignment_line(p.id, words, dur) + "\n" for p, (dur, words) in timed if words)
        report.timed += sum(1 for _, (_, words) in timed if words)
        if lines:
            (d / f"{items[0].speaker}-{items[0].chapter}.alignment.txt").write_text(lines, encoding="utf-8")
    if report.timed < len(plan):
        log.warning("word timings for %d of %d utterances (espeak-ng word events did not match the others)",
                    report.timed, len(plan))

    _write_speakers(out, plan, durations)
    cfg_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                if k not in ("out_dir", "jobs", "overwrite")}  # these do not change the corpus
    if not cfg.eval_voices:
        del cfg_json["eval_voices"]  # so a corpus without them keeps the synth_config.json it always had
    cfg_json["train_voices"] = list(train_voices)
    cfg_json["espeak_ng"] = _espeak_version()
    (out / "synth_config.json").write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def _worker_init() -> None:
    import librosa  # noqa: F401  (imported once per worker, before the first resample)

    espeak.engine()


def _run_plan(plan: Sequence[PlannedUtterance], out: Path, snr_db: float | None, jobs: int,
              progress: Callable[[int, int], None] | None) -> list[tuple[float, tuple[WordTiming, ...] | None]]:
    """Make every planned utterance; (duration, word timings) for each, in plan order.

    libespeak-ng has one global state per process, so ``jobs > 1`` means worker processes (spawned, not
    forked: nothing of the parent's library state is shared); ``jobs == 1`` runs here.
    """
    results: list[tuple[float, tuple[WordTiming, ...] | None]] = []
    if jobs == 1:
        _worker_init()
        for item in plan:
            results.append(_make_one(item, out, snr_db))
            if progress is not None:
                progress(len(results), len(plan))
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init) as pool:
        futures = [pool.submit(_make_one, p, out, snr_db) for p in plan]
        try:
            for f in futures:
                results.append(f.result())
                if progress is not None:
                    progress(len(results), len(plan))
        except BrokenProcessPool:
            raise SynthError("an espeak-ng worker process died (out of memory, or a crash in libespeak-ng)") from None
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def _write_speakers(out: Path, plan: Sequence[PlannedUtterance], durations: Sequence[float]) -> None:
    minutes: Counter[tuple[str, str, str]] = Counter()
    for p, d in zip(plan, durations):
        minutes[(p.speaker, p.split, p.voice)] += d / 60
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME (espeak-ng voice)\n"]
    for (spk, split, voice), m in sorted(minutes.items()):
        lines.append(f"{spk:<5}| {_sex(voice)} | {split:<17}| {m:5.2f} | {voice}\n")
    (out / "SPEAKERS.TXT").write_text("".join(lines), encoding="utf-8")


def _espeak_version() -> str:
    r = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True)
    m = re.search(r"text-to-speech:\s*(\S+)", r.stdout)
    return m.group(1) if m else r.stdout.strip()[:80]


def synthesize_test_sets(cfg: SynthConfig, splits: Sequence[str], limit: int | None = None,
                         progress: Callable[[int, int], None] | None = None) -> SynthReport:
    """Write only the first ``limit`` utterances of each of ``splits`` of the corpus ``cfg`` plans, in plan order
    (each split's first ``limit`` test sentences, so every split has the same text; its voices take turns):
    the same utterances, sample for sample, that :func:`synthesize_corpus` writes for them, without the hours of
    training audio. For measuring a model on a corpus's test sets (including ``eval_voices`` splits added
    after it was made: they have their own random draws). Train/dev cannot be asked for (use the corpus tool).
    ``synth_config.json`` records the subset (``test_sets_only``)."""
    bad = [s for s in splits if s in ("train", "dev")]
    if bad or not splits:
        raise SynthError(f"test sets only: got {', '.join(bad) or 'no splits'}")
    if limit is not None and limit < 1:
        raise SynthError("limit must be >= 1")
    espeak_binary()
    cfg, train_voices = _resolve_voices(cfg)
    plan = plan_corpus(cfg, load_sentences(cfg), train_voices, load_extra_train_sentences(cfg))
    known = sorted({p.split for p in plan})
    unknown = [s for s in splits if s not in known]
    if unknown:
        raise SynthError(f"no split {', '.join(unknown)} in this corpus (splits: {', '.join(known)})")
    chosen: list[PlannedUtterance] = []
    for s in splits:
        chosen += [p for p in plan if p.split == s][:limit]  # plan order: the first test sentences, voices in turn
    bad_voices = sorted({p.voice for p in chosen if not voice_works(p.voice)})
    if bad_voices:
        raise SynthError(f"cannot use voice(s) {', '.join(bad_voices)} (make corpus-sysdeps)")
    out = Path(cfg.out_dir)
    _prepare_out_dir(out, cfg.overwrite, [n for n, _ in cfg.eval_voices])
    chapters = _write_transcripts(out, chosen)
    report = SynthReport(out, train_voices=list(train_voices), unseen_voice=cfg.unseen_voice)
    results = _run_plan(chosen, out, cfg.snr_db, cfg.jobs, progress)
    index = {(p.id, p.split): i for i, p in enumerate(chosen)}
    for p, (d, _) in zip(chosen, results):
        report.utterances[p.split] = report.utterances.get(p.split, 0) + 1
        report.seconds[p.split] = report.seconds.get(p.split, 0.0) + d
    for d, items in chapters.items():
        timed = [(p, results[index[p.id, p.split]]) for p in items]
        lines = "".join(format_alignment_line(p.id, words, dur) + "\n" for p, (dur, words) in timed if words)
        report.timed += sum(1 for _, (_, words) in timed if words)
        if lines:
            (d / f"{items[0].speaker}-{items[0].chapter}.alignment.txt").write_text(lines, encoding="utf-8")
    _write_speakers(out, chosen, [d for d, _ in results])
    cfg_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                if k not in ("out_dir", "jobs", "overwrite")}
    cfg_json.update(train_voices=list(train_voices), espeak_ng=_espeak_version(),
                    test_sets_only={"splits": list(splits), "limit": limit})
    (out / "synth_config.json").write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report
