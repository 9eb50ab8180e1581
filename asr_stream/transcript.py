"""Transcripts on disk: txt / json / srt / vtt from segments and word times, written safely.

Every result file is written under a temporary name in its folder and renamed into place, so a reader (or
an interrupted run) never sees half a file. One rule says what an output path may be (:func:`output_target`):
a regular file or a new path, or a symbolic link to one (written through: the link's target is replaced, the
link stays). A directory, FIFO, device or socket is refused, never replaced. :func:`check_outputs` applies it
before any work, and refuses an output path that is one of the inputs (also through a link).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
from pathlib import Path
from typing import IO, Callable, Iterable, Mapping, Sequence

FORMATS = ("txt", "json", "srt", "vtt")

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def plain_text(text: str) -> str:
    """``text`` as a plain model writes it: upper case without punctuation, the WER normalisation
    (:func:`asr_stream.evaluation.wer.normalize_text`) in upper case; ``"Hello, world."`` -> ``"HELLO WORLD"``."""
    from .evaluation.wer import normalize_text

    return normalize_text(text).upper()


def plain_event(ev: dict) -> dict:
    """A server event (docs/protocol.md) with its words made plain (:func:`plain_text`): ``partial`` and ``final``
    words' texts, a word that is only punctuation dropped, and a ``final``'s ``text`` written again from its words;
    other events unchanged. What ``client --plain`` and ``mic --url --plain`` show of a formatted server's words."""
    if ev.get("type") not in ("partial", "final"):
        return ev
    words = [{**w, "text": t} for w in ev.get("words", []) if (t := plain_text(w["text"]))]
    out = {**ev, "words": words}
    if ev["type"] == "final":
        out["text"] = " ".join(w["text"] for w in words)
    return out


def output_target(path: str | os.PathLike) -> Path:
    """The file that writing ``path`` replaces: ``path`` itself (absolute, links resolved) when it is a regular file
    or does not exist yet; a symbolic link's final target when that is a regular file or a new path. Anything else
    (a directory, FIFO, device, socket, a link loop, through a link or not) raises ValueError (one line): renaming
    a result over it would destroy it, and writing into it is not writing a file."""
    p = Path(path).expanduser()
    via = " (through a symbolic link)" if p.is_symlink() else ""
    try:
        mode = os.stat(p).st_mode  # follows links
    except FileNotFoundError:
        return Path(os.path.realpath(p))  # a new path, or a link to one: the file will be created at the target
    except OSError as e:  # a link loop, a name too long ...
        raise ValueError(f"output {path}: {e.strerror or type(e).__name__}") from None
    if stat.S_ISREG(mode):
        return Path(os.path.realpath(p))
    kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
    raise ValueError(f"output {path} is {kind}{via}: refusing to replace it (give a regular file or a new path)")


class WriteError(OSError):
    """An output could not be written (a full disk, a lost mount): the one-line message names the output."""

    def __str__(self) -> str:
        return str(self.args[-1])


def atomic_write(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to :func:`output_target` of ``path`` through a temporary file in the target's folder and a
    rename; returns the target. An existing target keeps its permission bits. A failed write (a full disk) leaves
    the target as it was and no temporary file, and raises :class:`WriteError` naming ``path``."""
    target = output_target(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except OSError as e:
        raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


class LiveOutput:
    """A transcript file written word by word (``mic --output``): each word is appended and flushed as it is
    emitted, so any stop, even SIGKILL, keeps the words printed so far; :meth:`close` then replaces the file with
    the final text through :func:`atomic_write`. The path follows :func:`output_target` (a link is written through).
    A failed append (a full disk) is reported once through ``on_error`` with a message naming the file, and
    appending stops; the transcript goes on. A failed final write is reported the same way (close returns False)."""

    def __init__(self, path: str | os.PathLike, on_error: Callable[[str], None]) -> None:
        self.path = path
        self.on_error = on_error
        try:
            self._f: IO[str] | None = open(output_target(path), "w")  # noqa: SIM115 - kept open while listening
        except OSError as e:
            raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from None

    def add(self, words: Sequence[str]) -> None:
        if self._f is None:
            return
        try:
            self._f.write("".join(w + " " for w in words))
            self._f.flush()
        except OSError as e:
            self._drop()
            self.on_error(f"cannot write {self.path}: {e.strerror or e} (the words go on on the screen)")

    def _drop(self) -> None:
        f, self._f = self._f, None
        try:
            if f is not None:
                f.close()
        except OSError:
            pass

    def close(self, text: str) -> bool:
        """Replace the file with ``text``; False (said through ``on_error``) when that cannot be written."""
        self._drop()
        try:
            atomic_write(self.path, text + "\n")
            return True
        except (OSError, ValueError) as e:
            self.on_error(str(e))
            return False


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's Path.resolve on a link loop
        return False


def check_outputs(inputs: Sequence[str | os.PathLike], outputs: Iterable[str | os.PathLike]) -> None:
    """Refuse (ValueError, one line) an output that is an input (also through a link), appears twice, is not a
    regular file or a new path (:func:`output_target`), or whose folder cannot be written. Called before the model
    loads, so nothing is computed for a run that cannot save."""
    seen: list[Path] = []
    ins = [Path(i) for i in inputs]
    for out in outputs:
        o = Path(out)
        folder = output_target(o).parent  # refuses a FIFO, device, directory, socket or link loop first
        for i in ins:
            if _same(o, i):
                raise ValueError(f"output {o} is also an input: refusing to write over it")
        if any(_same(o, s) for s in seen):
            raise ValueError(f"output {o} would be written twice (two inputs with the same name?)")
        seen.append(o)
        if not folder.is_dir():
            raise ValueError(f"output {o}: folder {folder} does not exist")
        try:  # a real write, not os.access: root passes os.access on read-only mounts and /proc
            probe = folder / f".asr-stream-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"output {o}: cannot write in {folder} ({e.strerror or type(e).__name__})") from None


def repetition_warning(words: Sequence[str], least: int = 4) -> str | None:
    """A warning when one word is written ``least`` or more times in a row: what the models write on noise and
    music ("ASH ASH ASH ...", "AH AH AH ..."), seldom on speech. None otherwise."""
    best, run, word = 1, 1, None
    for i in range(1, len(words)):
        run = run + 1 if words[i].lower() == words[i - 1].lower() else 1
        if run > best:
            best, word = run, words[i]
    if best < least:
        return None
    return (f"repetition: {word} written {best} times in a row, what the model writes on noise or music rather than "
            f"speech; the transcript is probably wrong")


def unheard_warning(unheard_s: float, segments: Sequence[int]) -> str | None:
    """The warning about speech that produced no words (:func:`asr_stream.streaming.segment.unheard`), None if none."""
    if not unheard_s:
        return None
    return (f"{unheard_s:.1f} s of sound above the endpointer's level (speech, or noise) in {len(segments)} segment(s) "
            f"produced no words (after a segment's last word, or in all of it) "
            f"(segments {', '.join(map(str, segments[:10]))}{' ...' if len(segments) > 10 else ''})")


def _clock(ms: float, sep: str) -> str:
    ms = max(0, int(round(ms)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


# Subtitle cues, as broadcast guidelines ask (BBC, Netflix, EBU): at most two lines of at most 42 characters, on screen
# for at most 7 s and, where the next cue leaves room, at least 0.7 s.
MAX_CHARS = 42
MAX_CUE_MS = 7000.0
MIN_CUE_MS = 700.0


def _lines(words: Sequence[str]) -> list[str] | None:
    """``words`` as one line of at most MAX_CHARS characters, else as two lines broken where the longer line is
    shortest (ties: the shorter line on top); None when they do not fit in two lines. A word longer than a line
    stands on a line of its own."""
    one = " ".join(words)
    if len(one) <= MAX_CHARS or len(words) == 1:
        return [one]
    best: tuple[tuple[int, int], list[str]] | None = None
    for k in range(1, len(words)):
        top, bottom = " ".join(words[:k]), " ".join(words[k:])
        if (len(top) <= MAX_CHARS or k == 1) and (len(bottom) <= MAX_CHARS or k == len(words) - 1):
            key = (max(len(top), len(bottom)), len(top))
            if best is None or key < best[0]:
                best = (key, [top, bottom])
    return None if best is None else best[1]


def _word_ends(seg: Mapping) -> tuple[list[str], list[float]]:
    """A segment's words and an estimate of when each one ended (ms, absolute, non-decreasing).

    A word's ``time_ms`` is when the model wrote it (the audio read by then), so several words written after one
    chunk share a time: such a run is spread over the audio since the previous time (the segment's start for the
    first run), in proportion to the words' lengths. A segment without usable word times (none, not finite, or
    words that do not spell its text) is one such run ending where its speech ends."""
    a = float(seg["start_ms"])
    words = seg.get("words") or []
    texts = [str(w.get("text", "")) for w in words]
    times = [w.get("time_ms") for w in words]
    if words and " ".join(texts) == seg["text"] and all(
            isinstance(t, (int, float)) and math.isfinite(t) for t in times):
        raw = list(itertools.accumulate((max(float(t), a) for t in times), max))
    else:
        texts = seg["text"].split()
        raw = [max(float(seg.get("speech_end_ms", seg["end_ms"])), a + 200.0)] * len(texts)
    ends: list[float] = []
    prev, i = a, 0
    while i < len(raw):
        j = i
        while j + 1 < len(raw) and raw[j + 1] == raw[i]:
            j += 1
        weights = list(itertools.accumulate(len(w) + 1 for w in texts[i : j + 1]))
        ends += [prev + (raw[i] - prev) * c / weights[-1] for c in weights]
        prev, i = raw[i], j + 1
    return texts, ends


def word_spans(seg: Mapping) -> list[tuple[str, float, float]]:
    """(word, start ms, end ms) of a segment's words: each ends where the subtitles end it (:func:`_word_ends`) and
    starts where the word before it ends (the first at the segment's start). Estimates: the model writes a word after
    hearing it, and says when, not where it began."""
    texts, ends = _word_ends(seg)
    starts = [float(seg["start_ms"])] + ends[:-1]
    return list(zip(texts, starts, ends))


def _segment_cues(seg: Mapping) -> list[tuple[float, float, list[str]]]:
    """Greedy: each cue takes the next words while they fit in two lines and it lasts at most MAX_CUE_MS. A cue
    runs from the end of the word before it (the segment's start for the first) to the end of its last word."""
    texts, ends = _word_ends(seg)
    out = []
    i = 0
    while i < len(texts):
        start = float(seg["start_ms"]) if i == 0 else ends[i - 1]
        j = i + 1
        while j < len(texts) and ends[j] - start <= MAX_CUE_MS and _lines(texts[i : j + 1]) is not None:
            j += 1
        out.append((max(start, ends[j - 1] - MAX_CUE_MS), ends[j - 1], _lines(texts[i:j]) or texts[i:j]))
        i = j
    return out


def cues(segments: Sequence[Mapping]) -> list[tuple[float, float, list[str]]]:
    """(start ms, end ms, lines) of every subtitle cue, in order: the segments' words in cues of at most two lines
    of MAX_CHARS characters (a longer word alone on its line) lasting MIN_CUE_MS to MAX_CUE_MS, never overlapping
    (a cue starts no earlier than the one before it ends; one too short is held for MIN_CUE_MS, moving the next
    one later). The words of all cues, in order, are the segments' texts."""
    raw = [c for s in segments if s["text"] for c in _segment_cues(s)]
    out: list[tuple[float, float, list[str]]] = []
    for start, end, lines in raw:
        if out:
            start = max(start, out[-1][1])
        out.append((start, max(end, start + MIN_CUE_MS), lines))
    return out


def to_srt(segments: Sequence[Mapping]) -> str:
    return "".join(f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n" + "\n".join(lines) + "\n\n"
                   for i, (a, b, lines) in enumerate(cues(segments), 1))


def _vtt_text(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Sequence[Mapping]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(a, '.')} --> {_clock(b, '.')}\n" + "\n".join(map(_vtt_text, lines)) + "\n\n"
                                   for a, b, lines in cues(segments))


def to_txt(segments: Sequence[Mapping]) -> str:
    return "".join(s["text"] + "\n" for s in segments if s["text"])


def render(result: Mapping, fmt: str) -> str:
    """One file's result (as ``transcribe --format json`` writes it) in ``fmt``."""
    if fmt == "json":
        return json.dumps(result, indent=2) + "\n"
    if fmt == "txt":
        return to_txt(result["segments"])
    if fmt == "srt":
        return to_srt(result["segments"])
    if fmt == "vtt":
        return to_vtt(result["segments"])
    raise ValueError(f"unknown format {fmt!r} (expected one of {FORMATS})")


RESULT_FIELDS = ("file", "text", "segments", "words", "audio_s", "warnings", "complete")
"""Fields every file's result has in ``transcribe --json`` and ``client --json`` (docs/protocol.md, "Result files"):
the same names, units and meaning in both. Each segment has :data:`SEGMENT_FIELDS`; each word ``text`` and
``time_ms``. Either command adds its own fields beside these."""
SEGMENT_FIELDS = ("index", "start_ms", "end_ms", "rule", "text", "words")

__all__ = ["FORMATS", "RESULT_FIELDS", "SEGMENT_FIELDS", "LiveOutput", "WriteError", "atomic_write", "check_outputs", "output_target", "render", "repetition_warning",
           "to_srt", "to_txt", "to_vtt", "unheard_warning", "word_spans"]
