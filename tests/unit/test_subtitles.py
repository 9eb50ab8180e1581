"""Subtitles (asr_stream.transcript to_srt / to_vtt): cues people can read. At most two lines of at most 42
characters and 0.7-7 s on screen (broadcast guidelines), cut at word times, never overlapping, and together they
say exactly the transcript."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from asr_stream.transcript import MAX_CHARS, MAX_CUE_MS, MIN_CUE_MS, render, to_srt, to_vtt

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout.json"
LONG_WORD = "PNEUMONOULTRAMICROSCOPICSILICOVOLCANOCONIOSIS"  # 45 characters: more than a line


def _ms(clock: str) -> float:
    h, m, s = clock.replace(",", ".").split(":")
    return (int(h) * 3600 + int(m) * 60 + float(s)) * 1000.0


def parse_srt(text: str) -> list[tuple[float, float, list[str]]]:
    """(start ms, end ms, lines) per cue; checks the numbering."""
    out = []
    for n, block in enumerate(text.split("\n\n")[:-1], 1):
        lines = block.split("\n")
        assert lines[0] == str(n), block
        a, b = lines[1].split(" --> ")
        out.append((_ms(a), _ms(b), lines[2:]))
    assert text.endswith("\n\n") or not text
    return out


def parse_vtt(text: str) -> list[tuple[float, float, list[str]]]:
    assert text.startswith("WEBVTT\n\n")
    out = []
    for block in text[len("WEBVTT\n\n"):].split("\n\n")[:-1]:
        lines = block.split("\n")
        a, b = lines[0].split(" --> ")
        out.append((_ms(a), _ms(b), [ln.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for ln in lines[1:]]))
    return out


def check_readable(cues: list[tuple[float, float, list[str]]], segments: list[dict]) -> None:
    """Every rule a viewer relies on, for cues parsed back from a file."""
    assert cues
    for i, (a, b, lines) in enumerate(cues):
        assert 1 <= len(lines) <= 2 and all(lines), (i, lines)
        for ln in lines:
            assert len(ln) <= MAX_CHARS or " " not in ln, (i, ln)  # only a single word may be longer than a line
        assert MIN_CUE_MS - 1 <= b - a <= MAX_CUE_MS + 1, (i, a, b)  # (+-1: times are written in whole ms)
        if i:
            assert a >= cues[i - 1][1], (i, cues[i - 1][1], a)  # never overlapping
    words = " ".join(" ".join(lines) for _, _, lines in cues).split(" ")
    assert words == " ".join(s["text"] for s in segments if s["text"]).split(" ")  # exactly the transcript, in order
    first = next(s for s in segments if s["text"])
    assert abs(cues[0][0] - first["start_ms"]) <= 1  # the first cue comes up when its segment's speech starts


def model_segment(words: list[str], start_ms: float, speech_ms: float, lag_ms: float = 960.0, chunk_ms: float = 320.0,
                  rule: str = "silence") -> dict:
    """A segment as the streaming model writes one: the words spoken evenly over ``speech_ms`` (by characters), each
    written at the first chunk boundary ``lag_ms`` after it ended, the rest at once when the segment is finished
    (one chunk after its speech, padding included): words written after one chunk share a time."""
    chars = np.cumsum([len(w) + 1 for w in words])
    end = start_ms + speech_ms
    times = []
    for c in chars:
        spoken = start_ms + speech_ms * c / chars[-1]
        t = start_ms + math.ceil((spoken - start_ms + lag_ms) / chunk_ms) * chunk_ms
        times.append(min(t, start_ms + math.ceil(speech_ms / chunk_ms + 1) * chunk_ms))
    return {"index": 0, "start_ms": start_ms, "end_ms": end + 300.0, "speech_end_ms": end, "rule": rule,
            "text": " ".join(words), "words": [{"text": w, "time_ms": t} for w, t in zip(words, times)]}


def heldout_words() -> list[str]:
    return " ".join(it["text"] for it in json.loads(HELDOUT.read_text())).split()


def test_a_long_segment_becomes_cues_of_two_balanced_lines_at_word_times():
    """A 20 s segment of 60 words (a long word among them): every cue within the limits, full (the next word would not
    have fitted), lines broken where they are most even, timed by its words."""
    words = heldout_words()[:60]
    words[30] = LONG_WORD
    seg = model_segment(words, 2000.0, 20000.0, rule="max_length")
    srt, vtt = to_srt([seg]), to_vtt([seg])
    cues = parse_srt(srt)
    check_readable(cues, [seg])
    assert parse_vtt(vtt) == cues  # the same cues in both formats
    times = {w["text"]: w["time_ms"] for w in seg["words"]}
    n = 0
    for i, (a, b, lines) in enumerate(cues):
        cue_words = " ".join(lines).split(" ")
        n += len(cue_words)
        if n < len(words):  # full: the next word would have made a third line (7 s is not what ended these)
            nxt = cue_words + [words[n]]
            assert len(" ".join(nxt)) > MAX_CHARS and (LONG_WORD in nxt or not any(
                len(" ".join(nxt[:k])) <= MAX_CHARS and len(" ".join(nxt[k:])) <= MAX_CHARS for k in range(1, len(nxt))))
        if len(lines) == 2 and LONG_WORD not in lines:  # balanced: no other break makes the longer line shorter
            best = min(max(len(" ".join(cue_words[:k])), len(" ".join(cue_words[k:]))) for k in range(1, len(cue_words)))
            assert max(map(len, lines)) == best, lines
        # on screen by the time its first word was written, until its last word was (where no minimum held it)
        assert a <= times[cue_words[0]] and (b == times[cue_words[-1]] or b - a >= MIN_CUE_MS - 1), (i, a, b)
    assert [LONG_WORD] in [c[2][:1] for c in cues] or [LONG_WORD] in [c[2][1:] for c in cues]  # alone on its line
    assert len(cues) <= 9  # 60 words, ~330 characters: about 4 per 84-character cue, not one cue per segment
    # the old behaviour, one line per segment: over 300 characters on a line
    assert max(len(ln) for _, _, lines in cues for ln in lines) < 50


def test_cue_times_never_overlap_never_vanish_and_never_run_over_7_s():
    segs = [
        # words written long apart: a cue never stays up more than 7 s (it starts at most 7 s before its last word)
        {"start_ms": 0.0, "end_ms": 21000.0, "speech_end_ms": 20700.0, "text": "HELLO THERE",
         "words": [{"text": "HELLO", "time_ms": 1000.0}, {"text": "THERE", "time_ms": 20000.0}]},
        # cut by max_length in speech: its last word was written after the next segment began
        {"start_ms": 21000.0, "end_ms": 22000.0, "speech_end_ms": 22000.0, "text": "ONE TWO",
         "words": [{"text": "ONE", "time_ms": 21640.0}, {"text": "TWO", "time_ms": 22320.0}]},
        {"start_ms": 22000.0, "end_ms": 23000.0, "speech_end_ms": 22800.0, "text": "THREE",
         "words": [{"text": "THREE", "time_ms": 22100.0}]},
        {"start_ms": 24000.0, "end_ms": 24500.0, "speech_end_ms": 24200.0, "text": "", "words": []},  # nothing said
        # a burst: twenty words written after one chunk, spread over the audio since the previous time
        {"start_ms": 30000.0, "end_ms": 34000.0, "speech_end_ms": 33700.0,
         "text": "A " + " ".join(["WORD"] * 20) + " SIXTEEN LETTERS ARE HERE TOO",
         "words": [{"text": "A", "time_ms": 30320.0}] + [{"text": "WORD", "time_ms": 31280.0}] * 20
                  + [{"text": w, "time_ms": 34000.0} for w in ("SIXTEEN", "LETTERS", "ARE", "HERE", "TOO")]},
    ]
    cues = parse_srt(to_srt(segs))
    check_readable(cues, segs)
    assert cues[0] == (0.0, 1000.0, ["HELLO"])
    assert cues[1] == (13000.0, 20000.0, ["THERE"])  # starts 7 s before its word was written, not at HELLO's
    assert cues[2] == (21000.0, 22320.0, ["ONE TWO"])  # runs past the next segment's start ...
    assert cues[3] == (22320.0, 22320.0 + MIN_CUE_MS, ["THREE"])  # ... so THREE waits for it, then stays 0.7 s
    # the burst: the cue boundary inside it falls 16/20 of the way from A's time to the burst's (by characters)
    assert cues[4] == (30000.0, 30320.0 + 960.0 * 16 / 20, ["A" + " WORD" * 8, "WORD" + " WORD" * 7])
    assert cues[5] == (31088.0, 34000.0, ["WORD WORD WORD WORD SIXTEEN", "LETTERS ARE HERE TOO"])
    assert len(cues) == 6


def test_segments_without_word_times_fall_back_to_their_text_over_their_speech():
    long_text = " ".join(heldout_words()[:40])
    segs = [{"start_ms": 500.0, "end_ms": 15000.0, "speech_end_ms": 14700.0, "text": long_text},  # no words at all
            {"start_ms": 16000.0, "end_ms": 19000.0, "text": "EDITED BY HAND",  # words that no longer spell the text
             "words": [{"text": "EDITED", "time_ms": 16500.0}, {"text": "BYE", "time_ms": 17000.0}]},
            {"start_ms": 20000.0, "end_ms": 22000.0, "text": "NO TIMES", "words": [{"text": "NO"}, {"text": "TIMES", "time_ms": float("nan")}]}]
    cues = parse_srt(to_srt(segs))
    check_readable(cues, segs)
    first = [c for c in cues if c[1] <= 14700.0 + 1]
    assert " ".join(" ".join(c[2]) for c in first) == long_text and first[-1][1] == 14700.0  # spread over its speech
    assert [c for c in cues if c[2] == ["EDITED BY HAND"]][0][:2] == (16000.0, 19000.0)
    assert cues[-1] == (20000.0, 22000.0, ["NO TIMES"])
    assert parse_vtt(to_vtt(segs)) == cues


def test_continuous_speech_for_a_minute_stays_within_the_limits():
    """About 60 s without pauses: segments cut every 20 s (max_length), ~200 words; no cue over any limit."""
    words = heldout_words()
    segs, w = [], 0
    for i in range(3):
        n = 65 + 3 * i
        segs.append(model_segment(words[w : w + n], 20000.0 * i, 20000.0, rule="max_length"))
        w += n
    result = {"segments": segs}
    cues = parse_srt(render(result, "srt"))
    check_readable(cues, segs)
    assert parse_vtt(render(result, "vtt")) == cues
    assert len(cues) >= 12


def test_vtt_escapes_what_would_be_markup():
    seg = {"start_ms": 0.0, "end_ms": 2000.0, "text": "A<B> & C --> D", "words": []}
    vtt = to_vtt([seg])
    assert "A&lt;B&gt; &amp; C --&gt; D" in vtt and parse_vtt(vtt)[0][2] == ["A<B> & C --> D"]
