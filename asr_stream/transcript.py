"""Transcripts on disk: txt / json / srt / vtt from segments and word times, written safely.

Every result file is written under a temporary name in its folder and renamed into place, so a reader (or
an interrupted run) never sees half a file, and :func:`check_outputs` refuses, before any work, an output
path that is one of the inputs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

FORMATS = ("txt", "json", "srt", "vtt")


def atomic_write(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(inputs: Sequence[str | os.PathLike], outputs: Iterable[str | os.PathLike]) -> None:
    """Refuse (ValueError, one line) an output that is an input, appears twice, is a directory, or whose folder
    cannot be written. Called before the model loads, so nothing is computed for a run that cannot save."""
    seen: list[Path] = []
    ins = [Path(i) for i in inputs]
    for out in outputs:
        o = Path(out)
        for i in ins:
            if _same(o, i):
                raise ValueError(f"output {o} is also an input: refusing to write over it")
        if any(_same(o, s) for s in seen):
            raise ValueError(f"output {o} would be written twice (two inputs with the same name?)")
        seen.append(o)
        if o.is_dir():
            raise ValueError(f"output {o} is a directory")
        folder = o.expanduser().resolve().parent
        if not folder.is_dir():
            raise ValueError(f"output {o}: folder {folder} does not exist")
        try:  # a real write, not os.access: root passes os.access on read-only mounts and /proc
            probe = folder / f".asr-stream-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"output {o}: cannot write in {folder} ({e.strerror or type(e).__name__})") from None


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


__all__ = ["FORMATS", "atomic_write", "check_outputs", "render", "to_srt", "to_txt", "to_vtt"]
