"""Text for the synthetic corpus: sentences from the Debian fortunes files or a text file, cleaned for espeak-ng.

:func:`clean_sentence` keeps 4-20 words of ASCII letters and apostrophes. Sentences with digits, URLs or odd symbols
are dropped rather than normalised, since espeak-ng would read them in ways the transcript cannot predict; for the
same reason a word espeak-ng expands (roman numerals, "mr", "etc") or spells out (vowel-less words) drops its
sentence. :func:`keep_top_words` keeps only sentences made of the N most frequent words. The full fortunes set gives
~17.6k sentences with ~16k distinct words.

:class:`SynthError` is the one error of the corpus tooling (:mod:`asr_stream.corpus`), defined here, at its first
stage.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

FORTUNE_DIR = Path("/usr/share/games/fortunes")


class SynthError(RuntimeError):
    """Synthesis could not run (no espeak-ng, no usable voices, too little text ...). One-line message."""


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
    (the same words, lower-case, keeping , . ! ? for prosody), ``formatted`` the readable transcript: the words
    in the source's case with exactly the marks espeak-ng was given (``;`` written ``,``, a final ``.`` added
    where the source had none), each mark attached to the word before it and double quotes dropped, so that
    every whitespace-separated unit holds one word (the wait-k unit) and ``normalize_text(formatted).upper()``
    is ``text``. Empty when not known (built by hand with two fields)."""

    text: str
    spoken: str
    formatted: str = ""


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
    cased: list[str] = []
    for tok in _TOKEN.findall(s):
        if tok in ",;.!?":
            if cased and cased[-1][-1] not in ",.!?":  # keep one mark per gap; ";" is just a pause
                cased[-1] += "," if tok == ";" else tok
        else:
            cased.append(tok)
    if cased[-1][-1] not in ".!?":
        cased[-1] = cased[-1].rstrip(",") + "."
    formatted = " ".join(cased)
    return Sentence(" ".join(w.upper() for w in words), formatted.lower(), formatted)


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
