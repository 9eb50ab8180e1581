"""Synthetic speech corpus in LibriSpeech layout, spoken by espeak-ng from natural English text.

Meant for smoke-training and CI of the whole pipeline without downloading LibriSpeech: the audio is robotic,
but the text is real English (so a language model prior helps), the "speakers" are distinct espeak-ng voices
and variants, and rate/pitch vary per utterance.

Output (``<out>/``)::

    train/ dev/ test/ test-unseen-voice/      <split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
                                              + <speaker>-<chapter>.trans.txt   (16 kHz mono FLAC, upper-case text)
                                              + <speaker>-<chapter>.alignment.txt (word timings)
                                              + <speaker>-<chapter>.formatted.txt (cased, punctuated text)
    SPEAKERS.TXT                              speaker id | sex | split | minutes | espeak-ng voice
    synth_config.json                         the settings used (no timestamps, so reruns are byte-identical)

Read it back with :func:`asr_stream.data.read_librispeech`.

Design:

* Text (:mod:`asr_stream.corpus.text`): sentences from the Debian ``fortunes`` / ``fortunes-min`` files, or a
  text file with one sentence per line, cleaned to 4-20 words that espeak-ng reads as written; optionally only
  sentences made of the N most frequent words.
* Extra training text (``extra_train_voices``): with ``top_words``, the sentences the vocabulary limit leaves
  out can still be spoken into *train* only. Dev and test keep their low-OOV vocabulary, while the model
  reads three times the text (fortunes at 4-16 words: 5.6k sentences within the top 3,000 words, 9.9k
  outside).
* Splits (:mod:`asr_stream.corpus.plan`): disjoint test / dev / train sentences; ``test-unseen-voice`` speaks the
  *test* sentences with a voice train never uses, so seen-voice and unseen-voice error rates compare on identical
  text.
* Voices (:mod:`asr_stream.corpus.voices`, :mod:`asr_stream.corpus.engines`): espeak-ng accents x variants that
  work here, MBROLA voices when installed, Flite and Festival voices by name.
* Determinism: every random choice (split, voice, rate, pitch, noise) is drawn in the main process from one
  seeded generator before any audio is made, and workers only execute the plan, so the same seed gives
  byte-identical transcripts and identical audio whatever ``jobs`` is, and whatever else ran in the process
  (every utterance is spoken from the same library and C ``rand()`` state: see :mod:`asr_stream.corpus.espeak`).
* Audio: libespeak-ng, called through ctypes (:mod:`asr_stream.corpus.espeak`) exactly as the ``espeak-ng``
  command line calls it, so the samples are the command line's: 22.05 kHz (MBROLA: 16 kHz), converted with
  :func:`asr_stream.audio.io.to_mono_16k` and stored as 16-bit FLAC. ``jobs`` worker processes (the library
  has one global state per process); the recipe's corpus (35k utterances, 29 h) takes about 6 minutes on 2 cores.
* Word timings: the library reports where each word starts; a word ends where its sound falls below -34 dB
  of the utterance's peak before the next word starts (10 ms resolution; see
  :func:`asr_stream.corpus.espeak.word_spans`). They are written per chapter to
  ``<speaker>-<chapter>.alignment.txt`` in the format published for LibriSpeech's forced alignments
  (:func:`asr_stream.data.corpus.parse_alignment_line`), which :func:`asr_stream.data.read_librispeech`
  reads into :attr:`Utterance.words`; evaluation uses them for partial-recognition latency (PR50 / PR90).
"""

from __future__ import annotations

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE
from ..data.corpus import WordTiming, format_alignment_line
from . import engines, espeak
from .plan import (SPLITS, PlannedUtterance, SynthConfig, load_extra_train_sentences, load_sentences, plan_corpus,
                   resolve_voices)
from .text import SynthError
from .voices import espeak_binary, sex_of, voice_works

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------------------------------- audio


def speak(text: str, voice: str, rate: int = 175, pitch: int = 50, snr_db: float | None = None,
          noise_seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]] | None]:
    """Speak ``text`` with ``voice``; returns 16 kHz mono float32 samples (with white noise at ``snr_db`` dB)
    and the (start, end) seconds of each space-separated word of ``text`` (None if the engine's word timings
    could not be matched to the words). ``voice`` is an espeak-ng name (bare or ``espeak:NAME``), or a Flite /
    Festival voice (``flite:awb``, ``festival:ked_diphone``; :mod:`asr_stream.corpus.engines`)."""
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


# ------------------------------------------------------------------------------------------------- writers


def _write_transcripts(out: Path, plan: Sequence[PlannedUtterance]) -> dict[Path, list[PlannedUtterance]]:
    """One ``<speaker>-<chapter>.trans.txt`` per chapter folder (LibriSpeech layout), lines in id order, and beside it
    ``<speaker>-<chapter>.formatted.txt`` with the same ids and each sentence's cased, punctuated text
    (:attr:`Sentence.formatted`); returns the utterances of each chapter folder."""
    chapters: dict[Path, list[PlannedUtterance]] = {}
    for p in plan:
        chapters.setdefault(p.audio_path(out).parent, []).append(p)
    for d, items in chapters.items():
        d.mkdir(parents=True, exist_ok=True)
        items = sorted(items, key=lambda p: p.id)
        lines = "".join(f"{p.id} {p.sentence.text}\n" for p in items)
        (d / f"{items[0].speaker}-{items[0].chapter}.trans.txt").write_text(lines, encoding="utf-8")
        write_formatted(d / f"{items[0].speaker}-{items[0].chapter}.formatted.txt", items)
    return chapters


def write_formatted(path: Path, items: Sequence[PlannedUtterance]) -> None:
    """``ID FORMATTED TEXT`` lines of ``items`` (in their order) to ``path``; nothing when no sentence knows its
    formatted text."""
    if all(p.sentence.formatted for p in items):
        path.write_text("".join(f"{p.id} {p.sentence.formatted}\n" for p in items), encoding="utf-8")


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


def synthesize_corpus(cfg: SynthConfig, progress: Callable[[int, int], None] | None = None) -> SynthReport:
    """Write the corpus described by ``cfg``; ``progress(done, total)`` is called after each utterance."""
    espeak_binary()
    sentences = load_sentences(cfg)
    cfg, train_voices = resolve_voices(cfg)
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
        lines.append(f"{spk:<5}| {sex_of(voice)} | {split:<17}| {m:5.2f} | {voice}\n")
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
    cfg, train_voices = resolve_voices(cfg)
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
