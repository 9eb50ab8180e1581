"""Speech corpora as lists of :class:`Utterance`: LibriSpeech trees, NeMo-style JSONL manifests, duration batching.

Readers validate everything up front and raise :class:`DataError` with a one-line message naming the file
(and line, for text files) and the problem, so a bad corpus fails before training starts rather than hours in.
With ``on_error="skip"`` per-item problems (a missing transcript, an unreadable file, ...) drop just that item;
the counts per reason go to a :class:`ReadReport` (from the ``*_report`` companions) and to one logged line.
Structural problems (missing root or split, an empty split, a missing manifest) always raise.

Why hand-written rather than lhotse: lhotse (checked at 1.33.0 via ``pip download --no-deps``) hard-requires
audioread, cytoolz, intervaltree, click, pyyaml, tabulate and tqdm on top of torch/soundfile, carries its own
audio-backend layer (``lhotse/audio/backend.py``, with optional torchaudio code paths in ~30 modules) and is
~75k lines of Python. What we need -- read two formats, check them, bucket by duration -- is a few dozen lines
each, keeps audio decoding in one place (:mod:`asr_stream.audio.io`) and gives errors in our one-line style.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from ..config import TEXT_FORMATS

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

#: Split aliases expanded by :func:`read_librispeech`; the 960 h training set is the union of three subsets.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train-960": ("train-clean-100", "train-clean-360", "train-other-500"),
}

_MAX_EXAMPLES = 10  # error messages kept in a ReadReport; the counts are always complete


class DataError(ValueError):
    """Bad corpus data. The message is one line naming the path (and line) and the problem."""


@dataclass(frozen=True)
class WordTiming:
    """Where one transcript word is spoken: ``start`` and ``end`` in seconds from the start of the audio."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Utterance:
    """One audio file with its transcript.

    id: unique key (LibriSpeech ``<speaker>-<chapter>-<utt>``); audio_path: the file;
    text: the transcript; duration: audio length in seconds; speaker: speaker label ("" when unknown);
    words: the time of each transcript word, when the corpus has a word alignment (else None); formatted: the
    transcript as written, with case and punctuation, when the corpus has it (else None); context: its context list
    (its rare words and distractors: a biasing set's ``context`` manifest field, :mod:`asr_stream.context`; else None).
    """

    id: str
    audio_path: Path
    text: str
    duration: float
    speaker: str = ""
    words: tuple[WordTiming, ...] | None = None
    formatted: str | None = None
    context: tuple[str, ...] | None = None

    def target(self, text_format: str = "plain") -> str:
        """The training target under ``text_format`` (``ModelConfig.text_format``): ``formatted`` if asked and known, else ``text``."""
        if text_format not in TEXT_FORMATS:
            raise ValueError(f"unknown text format {text_format!r} (expected plain or formatted)")
        return self.formatted if text_format == "formatted" and self.formatted is not None else self.text


@dataclass
class ReadReport:
    """What a reader kept and dropped.

    source: what was read (root and splits, or the manifest path); kept: utterances returned;
    skipped: reason -> number of utterances (or transcript/manifest lines) dropped for it;
    examples: the first few error messages, for showing the user what went wrong.
    """

    source: str
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: kept count and skipped counts by reason."""
        if not self.skipped:
            return f"{self.source}: {self.kept} utterances, none skipped"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return f"{self.source}: {self.kept} utterances, skipped {self.total_skipped} ({reasons})"


class _Problems:
    """Raise on the first problem, or count it, depending on ``on_error``."""

    def __init__(self, source: str, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.skip = on_error == "skip"
        self.report = ReadReport(source)

    def __call__(self, reason: str, message: str, count: int = 1) -> None:
        if not self.skip:
            raise DataError(message)
        self.report.skipped[reason] = self.report.skipped.get(reason, 0) + count
        if len(self.report.examples) < _MAX_EXAMPLES:
            self.report.examples.append(message)

    def finish(self, kept: int) -> ReadReport:
        self.report.kept = kept
        if self.report.skipped:
            log.warning("%s", self.report.summary())
        else:
            log.info("%s", self.report.summary())
        return self.report


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def audio_duration(path: Path) -> float:
    """Length of an audio file in seconds, from its header only (no decoding). Raises DataError."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as e:  # corrupt, truncated, unknown format
        raise DataError(f"{path}: unreadable audio ({_first_line(e)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise DataError(f"{path}: unreadable audio (empty: {info.frames} frames)")
    return info.frames / info.samplerate


# ----------------------------------------------------------------------------------------------- LibriSpeech


def _expand_splits(splits: str | Sequence[str]) -> list[str]:
    names = [splits] if isinstance(splits, str) else list(splits)
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"bad split name {name!r}")
        for s in SPLIT_ALIASES.get(name, (name,)):
            if s not in out:  # "train-960" plus "train-clean-100" must not read files twice
                out.append(s)
    if not out:
        raise DataError("no LibriSpeech splits given")
    return out


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir())


def format_alignment_line(uid: str, words: Sequence[WordTiming], duration: float) -> str:
    """One line of a ``<speaker>-<chapter>.alignment.txt`` file (see :func:`parse_alignment_line`)."""
    segs: list[tuple[str, float]] = []
    t = 0.0
    for w in words:
        if round(w.start, 3) > round(t, 3):
            segs.append(("", w.start))  # silence before the word
        segs.append((w.word, w.end))
        t = w.end
    if round(duration, 3) > round(t, 3):
        segs.append(("", duration))
    return f'{uid} "{",".join(w for w, _ in segs)}" "{",".join(f"{e:.3f}" for _, e in segs)}"'


def parse_alignment_line(line: str) -> tuple[str, tuple[WordTiming, ...]]:
    """Parse ``ID ",WORD,,WORD," "0.490,0.890,1.270,1.380,1.490"``: the word-alignment format published for
    LibriSpeech (Montreal Forced Aligner output, as in the ``librispeech-alignments`` release). Each comma-
    separated word (empty: silence) ends at the matching time in seconds and starts where the one before
    ended. Returns the id and the words without the silences; ValueError with the reason if malformed."""
    parts = line.split()
    if len(parts) != 3 or not all(len(p) >= 2 and p[0] == p[-1] == '"' for p in parts[1:]):
        raise ValueError('expected ID "WORDS" "END TIMES"')
    names = parts[1][1:-1].split(",")
    try:
        ends = [float(x) for x in parts[2][1:-1].split(",")]
    except ValueError:
        raise ValueError(f"bad end times {parts[2][:40]!r}") from None
    if len(names) != len(ends):
        raise ValueError(f"{len(names)} words but {len(ends)} end times")
    out: list[WordTiming] = []
    t = 0.0
    for name, end in zip(names, ends):
        if not (math.isfinite(end) and end >= t):
            raise ValueError(f"end times must be finite and non-decreasing, got {end} after {t}")
        if name:
            out.append(WordTiming(name, t, end))
        t = end
    return parts[0], tuple(out)


def _read_alignments(path: Path, texts: dict[str, tuple[int, str]],
                     problems: _Problems) -> dict[str, tuple[WordTiming, ...]]:
    """The word timings of ``path`` whose words are those of the transcript line of the same id."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems("bad_alignment", f"{path}: cannot read alignment ({_first_line(e)})")
        return {}
    out: dict[str, tuple[WordTiming, ...]] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            uid, words = parse_alignment_line(line)
        except ValueError as e:
            problems("bad_alignment", f"{path}:{lineno}: {e}")
            continue
        if uid in texts and [w.word for w in words] != texts[uid][1].split():
            problems("bad_alignment", f"{path}:{lineno}: words of '{uid}' differ from its transcript")
            continue
        out[uid] = words
    return out


def _read_formatted(path: Path, texts: dict[str, tuple[int, str]], problems: _Problems) -> dict[str, str]:
    """The formatted texts of ``path`` (``ID TEXT`` lines, as ``trans.txt``) whose words, normalised for WER, are
    those of the transcript line of the same id; a line that differs is a ``bad_formatted`` problem."""
    from ..evaluation.wer import normalize_text

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems("bad_formatted", f"{path}: cannot read formatted text ({_first_line(e)})")
        return {}
    out: dict[str, str] = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        uid, text = parts[0], (parts[1] if len(parts) > 1 else "")
        if uid in texts and normalize_text(text) != normalize_text(texts[uid][1]):
            problems("bad_formatted", f"{path}:{lineno}: words of '{uid}' differ from its transcript")
            continue
        out[uid] = text
    return out


def _read_chapter(chapter: Path, speaker: str, problems: _Problems) -> tuple[list[Utterance], int]:
    """Utterances of one ``<speaker>/<chapter>`` folder, and how many audio files + transcript lines it had."""
    prefix = f"{speaker}-{chapter.name}"
    flacs = sorted(chapter.glob("*.flac"))
    trans = chapter / f"{prefix}.trans.txt"
    if not trans.is_file():
        if flacs:
            problems("missing_transcript", f"{trans}: transcript file missing ({len(flacs)} audio files in chapter)",
                     len(flacs))
        return [], len(flacs)
    try:
        lines = trans.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems("bad_transcript", f"{trans}: cannot read transcript ({_first_line(e)})", max(len(flacs), 1))
        return [], len(flacs) + 1

    texts: dict[str, tuple[int, str]] = {}  # id -> (line number, text)
    n_lines = 0
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        n_lines += 1
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            problems("bad_line", f"{trans}:{lineno}: expected 'ID TEXT', got {line[:60]!r}")
            continue
        uid, text = parts[0], parts[1].strip()
        if not uid.startswith(prefix + "-"):
            problems("bad_line", f"{trans}:{lineno}: id '{uid}' does not belong to chapter {prefix}")
            continue
        if uid in texts:
            problems("duplicate_id", f"{trans}:{lineno}: id '{uid}' repeats line {texts[uid][0]}")
            continue
        texts[uid] = (lineno, text)

    align = chapter / f"{prefix}.alignment.txt"
    timings = _read_alignments(align, texts, problems) if align.is_file() else {}
    fmt = chapter / f"{prefix}.formatted.txt"
    formatted = _read_formatted(fmt, texts, problems) if fmt.is_file() else {}
    utts: list[Utterance] = []
    stems = {f.stem: f for f in flacs}
    for stem, f in stems.items():
        if stem not in texts:
            problems("no_transcript_line", f"{f}: no transcript line for '{stem}' in {trans.name}")
            continue
        try:
            duration = audio_duration(f)
        except DataError as e:
            problems("unreadable_audio", str(e))
            continue
        utts.append(Utterance(stem, f, texts[stem][1], duration, speaker, timings.get(stem), formatted.get(stem)))
    for uid, (lineno, _) in texts.items():
        if uid not in stems:
            problems("no_audio", f"{trans}:{lineno}: no audio file for '{uid}' (expected {chapter / (uid + '.flac')})")
    return utts, len(flacs) + n_lines


def read_librispeech_report(
    root: str | os.PathLike, splits: str | Sequence[str], on_error: OnError = "raise"
) -> tuple[list[Utterance], ReadReport]:
    """Like :func:`read_librispeech`, also returning the :class:`ReadReport` with skip counts."""
    root = Path(root)
    names = _expand_splits(splits)
    problems = _Problems(f"{root} [{', '.join(names)}]", on_error)
    if not root.exists():
        raise DataError(f"{root}: LibriSpeech root does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: LibriSpeech root is not a directory")
    # Check every split exists before the (slow) per-file scan, so a typo fails at once.
    for name in names:
        if not (root / name).is_dir():
            have = ", ".join(p.name for p in _subdirs(root)) or "none"
            raise DataError(f"{root / name}: split '{name}' not found (splits present: {have})")

    by_id: dict[str, Utterance] = {}
    for name in names:
        split_dir = root / name
        items = 0
        for spk in _subdirs(split_dir):
            for chapter in _subdirs(spk):
                utts, n = _read_chapter(chapter, spk.name, problems)
                items += n
                for u in utts:
                    if u.id in by_id:
                        problems("duplicate_id", f"{u.audio_path}: id '{u.id}' also at {by_id[u.id].audio_path}")
                    else:
                        by_id[u.id] = u
        if items == 0:
            raise DataError(f"{split_dir}: split '{name}' is empty (no <speaker>/<chapter>/*.flac files)")
    out = [by_id[k] for k in sorted(by_id)]
    return out, problems.finish(len(out))


def read_librispeech(
    root: str | os.PathLike, splits: str | Sequence[str], on_error: OnError = "raise"
) -> list[Utterance]:
    """Read LibriSpeech-layout splits, sorted by utterance id.

    Layout: ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
    ``<speaker>-<chapter>.trans.txt`` per chapter holding ``ID TEXT`` lines. ``splits`` is one name or several;
    any folder name works and ``train-960`` means train-clean-100 + train-clean-360 + train-other-500.
    Durations (seconds) come from the audio headers. Raises :class:`DataError` on the first problem, or with
    ``on_error="skip"`` drops the bad items and logs a one-line summary (counts: :func:`read_librispeech_report`).

    A chapter may also hold ``<speaker>-<chapter>.alignment.txt`` word alignments (:func:`parse_alignment_line`;
    the synthetic corpus writes them): they become :attr:`Utterance.words`. A bad alignment line raises, or
    with ``on_error="skip"`` leaves its utterance without timings (counted as ``bad_alignment``). Likewise
    ``<speaker>-<chapter>.formatted.txt`` (``ID TEXT`` lines with case and punctuation; the synthetic corpus writes
    them, ``tools/corpus/add_formatted_text.py`` adds them to an older one) becomes :attr:`Utterance.formatted`; its words,
    normalised, must be the transcript's (``bad_formatted`` otherwise).
    """
    return read_librispeech_report(root, splits, on_error)[0]


# ------------------------------------------------------------------------------------------------ manifests


def _manifest_item(obj: object, where: str, base: Path) -> tuple[Utterance, Path]:
    """Validate one parsed manifest line; raises DataError with ``where`` (file:line) in the message."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("audio_filepath", "duration", "text"):
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'")
    audio, duration, text = obj["audio_filepath"], obj["duration"], obj["text"]
    if not isinstance(audio, str) or not audio:
        raise DataError(f"{where}: 'audio_filepath' must be a non-empty string")
    # bool is an int subclass; "duration": true is a bug in whatever wrote the file
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration <= 0:
        raise DataError(f"{where}: 'duration' must be a positive number of seconds, got {duration!r}")
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    path = Path(audio)
    if not path.is_absolute():
        path = base / path  # NeMo convention: relative to the manifest's folder, not the working directory
    uid = obj.get("id", path.stem)
    speaker = obj.get("speaker", "")
    if not isinstance(uid, str) or not uid:
        raise DataError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(speaker, (str, int)) or isinstance(speaker, bool):
        raise DataError(f"{where}: 'speaker' must be a string")
    formatted, context = obj.get("formatted"), obj.get("context")
    if formatted is not None and not isinstance(formatted, str):
        raise DataError(f"{where}: 'formatted' must be a string, got {type(formatted).__name__}")
    if context is not None and not (isinstance(context, list) and context and all(isinstance(c, str) and c.strip() for c in context)):
        raise DataError(f"{where}: 'context' must be a non-empty list of words and phrases (strings)")
    context = tuple(" ".join(c.split()) for c in context) if context is not None else None
    return Utterance(uid, path, text, float(duration), str(speaker), formatted=formatted, context=context), path


def read_manifest_report(
    path: str | os.PathLike, on_error: OnError = "raise", check_audio: bool = True
) -> tuple[list[Utterance], ReadReport]:
    """Like :func:`read_manifest`, also returning the :class:`ReadReport` with skip counts."""
    path = Path(path)
    problems = _Problems(str(path), on_error)
    if not path.is_file():
        raise DataError(f"{path}: manifest {'is not a file' if path.exists() else 'does not exist'}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read manifest ({_first_line(e)})") from None

    out: list[Utterance] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            # some of json's messages end in "at" ("Unterminated string starting at"): do not repeat it
            msg = e.msg[: -len(" at")] if e.msg.endswith(" at") else e.msg
            problems("bad_line", f"{where}: invalid JSON ({msg} at column {e.colno})")
            continue
        try:
            utt, audio = _manifest_item(obj, where, path.parent)
        except DataError as e:
            problems("bad_line", str(e))
            continue
        if check_audio:
            if not audio.is_file():
                problems("no_audio", f"{where}: audio file not found: {audio}")
                continue
            try:
                audio_duration(audio)
            except DataError as e:
                problems("unreadable_audio", f"{where}: {e}")
                continue
        # Ids key hypotheses, alignments and per-utterance scores downstream; a repeat would silently overwrite.
        if utt.id in first_line:
            problems("duplicate_id", f"{where}: id '{utt.id}' repeats line {first_line[utt.id]} (add an 'id' field)")
            continue
        first_line[utt.id] = lineno
        out.append(utt)
    if not out and not problems.report.skipped:
        raise DataError(f"{path}: manifest is empty")
    return out, problems.finish(len(out))


def read_manifest(path: str | os.PathLike, on_error: OnError = "raise", check_audio: bool = True) -> list[Utterance]:
    """Read a NeMo-style JSONL manifest, keeping the file's order.

    Each line is an object with ``audio_filepath`` (relative paths resolve against the manifest's folder),
    ``duration`` (seconds, trusted as written) and ``text``; optional ``id`` (default: the audio file's stem),
    ``speaker``, ``formatted`` (the text with case and punctuation, :attr:`Utterance.formatted`) and ``context`` (a
    list of words and phrases: the utterance's context list, as a biasing set has). With ``check_audio`` every audio
    file must exist and have a readable header.
    Errors name ``file:line``; ``on_error="skip"`` drops bad lines (counts: :func:`read_manifest_report`).
    """
    return read_manifest_report(path, on_error, check_audio)[0]


def write_manifest(utts: Sequence[Utterance], path: str | os.PathLike) -> Path:
    """Write utterances as a JSONL manifest that :func:`read_manifest` reads back to equal Utterances.

    Audio inside the manifest's folder is written relative to it (the corpus folder stays movable);
    anything else is written as an absolute path. The file is replaced atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.absolute()
    rows = []
    for u in utts:
        audio = Path(u.audio_path)
        absolute = audio if audio.is_absolute() else Path.cwd() / audio
        try:
            shown = absolute.relative_to(base).as_posix()
        except ValueError:
            shown = str(absolute)
        row = {"audio_filepath": shown, "duration": u.duration, "text": u.text, "id": u.id}
        if u.speaker:
            row["speaker"] = u.speaker
        for name, value in (("formatted", u.formatted), ("context", None if u.context is None else list(u.context))):
            if value is not None:
                row[name] = value
        rows.append(json.dumps(row, ensure_ascii=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(r + "\n" for r in rows))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------------- batching


def padded_seconds(batch: Sequence[Utterance]) -> float:
    """Audio seconds a batch costs once padded to its longest utterance: ``max duration * batch size``."""
    return max((u.duration for u in batch), default=0.0) * len(batch)


def duration_batches(
    utts: Sequence[Utterance],
    max_seconds: float,
    shuffle: bool = True,
    seed: int = 0,
    bucket_count: int = 10,
    max_batch_size: int | None = None,
) -> list[list[Utterance]]:
    """Group utterances into batches whose padded audio (:func:`padded_seconds`) is at most ``max_seconds``.

    Utterances are sorted by duration and cut into ``bucket_count`` equal-count buckets of similar lengths;
    within a bucket they are packed greedily in increasing duration, so padding stays small and a batch never
    mixes buckets. Batch composition depends only on the data; ``shuffle`` permutes the batch order with
    ``seed`` (pass e.g. ``seed + epoch`` for a new order each epoch). Every utterance appears exactly once.
    ``max_batch_size`` optionally caps the number of utterances per batch.
    Raises DataError if an utterance alone is longer than ``max_seconds`` (filter those out first).
    """
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if bucket_count < 1:
        raise ValueError(f"bucket_count must be >= 1, got {bucket_count}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    # Ties broken by id so the result does not depend on the input order.
    ordered = sorted(utts, key=lambda u: (u.duration, u.id))
    if ordered and ordered[-1].duration > max_seconds:
        u = ordered[-1]
        raise DataError(f"{u.audio_path}: utterance '{u.id}' lasts {u.duration:.2f} s, more than the "
                        f"batch budget max_seconds={max_seconds}")
    n = len(ordered)
    buckets = min(bucket_count, n)
    bounds = [round(i * n / buckets) for i in range(buckets + 1)] if n else [0]
    batches: list[list[Utterance]] = []
    for lo, hi in zip(bounds, bounds[1:]):
        batch: list[Utterance] = []
        for u in ordered[lo:hi]:
            # Sorted ascending, so u is the longest so far: the padded cost after adding it is u.duration * size.
            full = max_batch_size is not None and len(batch) >= max_batch_size
            if batch and (full or u.duration * (len(batch) + 1) > max_seconds):
                batches.append(batch)
                batch = []
            batch.append(u)
        if batch:
            batches.append(batch)
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


def word_counts(utts: Sequence[Utterance]) -> Counter[str]:
    """Whitespace-separated word counts over all transcripts."""
    c: Counter[str] = Counter()
    for u in utts:
        c.update(u.text.split())
    return c


def check_corpus_spec(spec: str) -> None:
    """Fail early (one-line DataError) when a corpus spec names a manifest, root or split that is not there; the
    full read (and its checks) happens when the data is set up."""
    if spec.startswith("librispeech:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise DataError(f"{spec}: expected librispeech:ROOT:SPLIT[,SPLIT...]")
        root = Path(parts[1])
        if not root.is_dir():
            raise DataError(f"{spec}: LibriSpeech root {root} is not a folder")
        return
    p = Path(spec)
    if not p.is_file():
        raise DataError(f"{spec}: no such manifest file (expected a JSONL manifest or librispeech:ROOT:SPLIT)")


def read_corpus(spec: str) -> list[Utterance]:
    """A corpus from a spec: ``path/to/manifest.jsonl`` or ``librispeech:ROOT:SPLIT[,SPLIT...]``."""
    if spec.startswith("librispeech:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise DataError(f"{spec}: expected librispeech:ROOT:SPLIT[,SPLIT...]")
        _, root, splits = parts
        return read_librispeech(root, splits.split(","))
    return read_manifest(spec)
