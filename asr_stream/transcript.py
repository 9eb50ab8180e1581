"""Transcripts on disk: txt / json / srt / vtt from segments and word times, written safely.

Every result file is written under a temporary name in its folder and renamed into place, so a reader (or
an interrupted run) never sees half a file, and :func:`check_outputs` refuses, before any work, an output
path that is one of the inputs.
"""

from __future__ import annotations

import json
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


def _cues(segments: Sequence[Mapping]) -> list[tuple[float, float, str]]:
    """(start ms, end ms, text) per segment with words: from the segment's first sample to the end of its speech
    (or its last word's emission, if later, so a cue is never shorter than what it shows)."""
    out = []
    for s in segments:
        if not s["text"]:
            continue
        end = max(s.get("speech_end_ms", s["end_ms"]), s["start_ms"] + 200.0)
        out.append((s["start_ms"], end, s["text"]))
    return out


def to_srt(segments: Sequence[Mapping]) -> str:
    return "".join(f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{t}\n\n" for i, (a, b, t) in enumerate(_cues(segments), 1))


def to_vtt(segments: Sequence[Mapping]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(a, '.')} --> {_clock(b, '.')}\n{t}\n\n" for a, b, t in _cues(segments))


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
