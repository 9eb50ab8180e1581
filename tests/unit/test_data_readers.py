"""The runtime's data readers (asr_stream.data): the LibriSpeech reader and its word-alignment lines, manifests,
duration batching. The synthetic corpus that writes such folders: test_synth_corpus.py."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream.data import (
    DataError,
    Utterance,
    duration_batches,
    padded_seconds,
    read_librispeech,
    read_librispeech_report,
    read_manifest,
    read_manifest_report,
    write_manifest,
)

SR = 16_000


def _flac(path: Path, seconds: float = 0.25, seed: int = 0) -> Path:
    """A short 16 kHz FLAC: a sine plus a little noise, so files differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 20 * seed) * t) + 0.01 * rng.standard_normal(t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), SR, format="FLAC")
    return path


def _chapter(root: Path, split: str, spk: str, chap: str, n: int = 2, seconds: float = 0.25) -> Path:
    """``n`` utterances with transcripts in ``root/split/spk/chap``; returns the chapter folder."""
    d = root / split / spk / chap
    lines = []
    for i in range(n):
        uid = f"{spk}-{chap}-{i:04d}"
        _flac(d / f"{uid}.flac", seconds + 0.05 * i, seed=i)
        lines.append(f"{uid} WORDS OF {uid}\n")
    (d / f"{spk}-{chap}.trans.txt").write_text("".join(lines))
    return d


# ------------------------------------------------------------------------------------------------ LibriSpeech


def test_read_librispeech_sorted_with_durations(tmp_path: Path) -> None:
    _chapter(tmp_path, "dev-clean", "84", "121123", n=3)
    _chapter(tmp_path, "dev-clean", "1272", "128104", n=2)
    _chapter(tmp_path, "test-clean", "61", "70968", n=1)
    utts = read_librispeech(tmp_path, "dev-clean")
    assert [u.id for u in utts] == sorted(u.id for u in utts)
    assert len(utts) == 5
    u = next(x for x in utts if x.id == "84-121123-0002")
    assert u.text == "WORDS OF 84-121123-0002"
    assert u.speaker == "84"
    assert u.audio_path == tmp_path / "dev-clean" / "84" / "121123" / "84-121123-0002.flac"
    assert u.duration == pytest.approx(0.35, abs=1e-6)
    both = read_librispeech(tmp_path, ["dev-clean", "test-clean"])
    assert len(both) == 6 and [u.id for u in both] == sorted(u.id for u in both)
    assert read_librispeech(str(tmp_path), ("dev-clean",)) == utts  # str root and tuple splits work too


def test_train_960_alias(tmp_path: Path) -> None:
    for i, split in enumerate(["train-clean-100", "train-clean-360", "train-other-500"]):
        _chapter(tmp_path, split, str(100 + i), "1", n=2)
    _chapter(tmp_path, "dev-clean", "9", "1", n=1)
    utts = read_librispeech(tmp_path, "train-960")
    assert [u.speaker for u in utts] == ["100", "100", "101", "101", "102", "102"]
    # An alias overlapping an explicit split must not read the files twice.
    assert read_librispeech(tmp_path, ["train-960", "train-clean-100"]) == utts
    (tmp_path / "train-other-500").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"train-other-500: split 'train-other-500' not found"):
        read_librispeech(tmp_path, "train-960")


def _missing_root(root: Path) -> tuple[Path, str]:
    return root / "nope", "LibriSpeech root does not exist"


def _missing_split(root: Path) -> tuple[Path, str]:
    _chapter(root, "dev-clean", "1", "2")
    return root / "test-clean", r"split 'test-clean' not found \(splits present: dev-clean\)"


def _empty_split(root: Path) -> tuple[Path, str]:
    (root / "test-clean" / "1" / "2").mkdir(parents=True)
    return root / "test-clean", "split 'test-clean' is empty"


def _missing_transcript(root: Path) -> tuple[Path, str]:
    d = _chapter(root, "test-clean", "1", "2", n=3)
    (d / "1-2.trans.txt").unlink()
    return d / "1-2.trans.txt", r"transcript file missing \(3 audio files in chapter\)"


def _audio_without_line(root: Path) -> tuple[Path, str]:
    d = _chapter(root, "test-clean", "1", "2", n=2)
    _flac(d / "1-2-0007.flac")
    return d / "1-2-0007.flac", "no transcript line for '1-2-0007' in 1-2.trans.txt"


def _line_without_audio(root: Path) -> tuple[Path, str]:
    d = _chapter(root, "test-clean", "1", "2", n=2)
    (d / "1-2-0001.flac").unlink()
    return d / "1-2.trans.txt", r":2: no audio file for '1-2-0001'"


def _unreadable_audio(root: Path) -> tuple[Path, str]:
    d = _chapter(root, "test-clean", "1", "2", n=2)
    (d / "1-2-0001.flac").write_bytes(b"not a flac file at all" * 10)
    return d / "1-2-0001.flac", r"unreadable audio \("


def _malformed_line(root: Path) -> tuple[Path, str]:
    d = _chapter(root, "test-clean", "1", "2", n=1)
    with open(d / "1-2.trans.txt", "a") as f:
        f.write("1-2-0001\n")
    return d / "1-2.trans.txt", r":2: expected 'ID TEXT'"


def _foreign_id(root: Path) -> tuple[Path, str]:
    d = _chapter(root, "test-clean", "1", "2", n=1)
    with open(d / "1-2.trans.txt", "a") as f:
        f.write("3-4-0000 HELLO\n")
    return d / "1-2.trans.txt", r":2: id '3-4-0000' does not belong to chapter 1-2"


@pytest.mark.parametrize("make", [
    _missing_root, _missing_split, _empty_split, _missing_transcript, _audio_without_line,
    _line_without_audio, _unreadable_audio, _malformed_line, _foreign_id,
])
def test_librispeech_errors(tmp_path: Path, make) -> None:
    named, message = make(tmp_path)
    root = named if make is _missing_root else tmp_path
    split = "test-clean"
    with pytest.raises(DataError) as info:
        read_librispeech(root, split)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(named)), text  # the message leads with the offending path
    assert __import__("re").search(message, text), text


def test_librispeech_skip_mode_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = _chapter(tmp_path, "test-clean", "1", "1", n=3)
    (good / "1-1-0002.flac").write_bytes(b"garbage")  # unreadable
    no_trans = _chapter(tmp_path, "test-clean", "2", "1", n=2)
    (no_trans / "2-1.trans.txt").unlink()  # 2 files without a transcript file
    extra = _chapter(tmp_path, "test-clean", "3", "1", n=2)
    _flac(extra / "3-1-0009.flac")  # audio without a line
    (extra / "3-1-0000.flac").unlink()  # line without audio
    with pytest.raises(DataError):
        read_librispeech(tmp_path, "test-clean")
    with caplog.at_level(logging.WARNING, logger="asr_stream.data.corpus"):
        utts, report = read_librispeech_report(tmp_path, "test-clean", on_error="skip")
    assert [u.id for u in utts] == ["1-1-0000", "1-1-0001", "3-1-0001"]
    assert report.kept == 3
    assert report.skipped == {"unreadable_audio": 1, "missing_transcript": 2, "no_transcript_line": 1,
                              "no_audio": 1}
    assert report.total_skipped == 5 and len(report.examples) == 4
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1 and "skipped 5" in summary[0] and "missing_transcript=2" in summary[0]
    assert read_librispeech(tmp_path, "test-clean", on_error="skip") == utts
    with pytest.raises(ValueError, match="on_error"):
        read_librispeech(tmp_path, "test-clean", on_error="ignore")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- manifests


def test_manifest_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _chapter(tmp_path / "corpus", "dev", "5", "6", n=3)
    outside = _flac(tmp_path / "other" / "x.flac")
    utts = read_librispeech(tmp_path / "corpus", "dev")
    utts.append(Utterance("x", outside, "SOME TEXT ÄÖ", 0.25))
    manifest = write_manifest(utts, tmp_path / "corpus" / "dev.jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert rows[0]["audio_filepath"] == "dev/5/6/5-6-0000.flac"  # inside the folder: relative, movable
    assert rows[-1]["audio_filepath"] == str(outside)  # outside: absolute
    assert "speaker" not in rows[-1] and rows[0]["speaker"] == "5"
    monkeypatch.chdir(tmp_path / "other")  # relative paths resolve against the manifest, not the cwd
    assert read_manifest(manifest) == utts
    # A hand-written NeMo line without id/speaker: id defaults to the file stem.
    (tmp_path / "corpus" / "nemo.jsonl").write_text(
        '{"audio_filepath": "dev/5/6/5-6-0001.flac", "duration": 0.3, "text": "hi there"}\n\n')
    (u,) = read_manifest(tmp_path / "corpus" / "nemo.jsonl")
    assert u == Utterance("5-6-0001", tmp_path / "corpus" / "dev/5/6/5-6-0001.flac", "hi there", 0.3, "")


@pytest.mark.parametrize("line,message,reason", [
    ('{"audio_filepath": "a.flac", "duration": 1.0, "text": "x"', r":2: invalid JSON \(Expecting ',' delimiter at column 58\)$",
     "bad_line"),
    ('{"audio_filepath": "a.flac', r":2: invalid JSON \(Unterminated string starting at column 20\)$", "bad_line"),
    ('["a.flac", 1.0, "x"]', ":2: expected a JSON object, got list", "bad_line"),
    ('{"audio_filepath": "a.flac", "duration": 1.0}', ":2: missing field 'text'", "bad_line"),
    ('{"audio_filepath": "a.flac", "duration": -1, "text": "x"}', ":2: 'duration' must be a positive", "bad_line"),
    ('{"audio_filepath": "gone.flac", "duration": 1.0, "text": "x"}', ":2: audio file not found: ", "no_audio"),
    ('{"audio_filepath": "bad.flac", "duration": 1.0, "text": "x"}', r":2: .*bad.flac: unreadable audio",
     "unreadable_audio"),
    ('{"audio_filepath": "a.flac", "duration": 1.0, "text": "y"}', ":2: id 'a' repeats line 1", "duplicate_id"),
])
def test_manifest_errors(tmp_path: Path, line: str, message: str, reason: str) -> None:
    _flac(tmp_path / "a.flac")
    (tmp_path / "bad.flac").write_bytes(b"junk")
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio_filepath": "a.flac", "duration": 0.25, "text": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        read_manifest(m)
    assert str(info.value).startswith(f"{m}:2: ") and "\n" not in str(info.value)
    utts, report = read_manifest_report(m, on_error="skip")
    assert [u.id for u in utts] == ["a"] and report.skipped == {reason: 1} and report.kept == 1


def test_manifest_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest does not exist"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="e.jsonl: manifest is empty"):
        read_manifest(tmp_path / "e.jsonl")


# ---------------------------------------------------------------------------------------------------- batching


def _fake_utts(n: int, seed: int = 0) -> list[Utterance]:
    rng = random.Random(seed)
    return [Utterance(f"u{i:04d}", Path(f"/x/u{i}.flac"), "T", round(rng.uniform(0.5, 16.0), 3)) for i in range(n)]


def test_duration_batches_invariants() -> None:
    utts = _fake_utts(500)
    batches = duration_batches(utts, max_seconds=60.0, shuffle=True, seed=3, bucket_count=8)
    flat = [u.id for b in batches for u in b]
    assert sorted(flat) == sorted(u.id for u in utts) and len(flat) == len(set(flat))  # each exactly once
    assert all(b and padded_seconds(b) <= 60.0 for b in batches)
    # Packing is tight: the padded total is close to the real audio total (similar lengths per batch).
    total = sum(u.duration for u in utts)
    assert sum(padded_seconds(b) for b in batches) < 1.15 * total
    # Deterministic for a seed and independent of input order; another seed only reorders the same batches.
    again = duration_batches(list(reversed(utts)), 60.0, shuffle=True, seed=3, bucket_count=8)
    assert [[u.id for u in b] for b in again] == [[u.id for u in b] for b in batches]
    other = duration_batches(utts, 60.0, shuffle=True, seed=4, bucket_count=8)
    key = lambda bs: [[u.id for u in b] for b in bs]  # noqa: E731
    assert key(other) != key(batches) and sorted(key(other)) == sorted(key(batches))
    # Without shuffle: increasing durations.
    plain = [u.duration for b in duration_batches(utts, 60.0, shuffle=False, bucket_count=8) for u in b]
    assert plain == sorted(plain)


def test_duration_batches_limits() -> None:
    utts = _fake_utts(100)
    capped = duration_batches(utts, 1000.0, shuffle=False, max_batch_size=7, bucket_count=1)
    assert max(len(b) for b in capped) == 7 and sum(map(len, capped)) == 100
    assert duration_batches([], 10.0, shuffle=True) == []
    with pytest.raises(DataError, match="lasts 16.00 s, more than the batch budget"):
        duration_batches([Utterance("long", Path("l.flac"), "T", 16.0)], 10.0)
    with pytest.raises(ValueError):
        duration_batches(utts, 0.0)
    one = duration_batches(utts[:3], 100.0, bucket_count=50)  # more buckets than utterances is fine
    assert sum(map(len, one)) == 3


def test_alignment_lines(tmp_path: Path) -> None:
    from asr_stream.data import WordTiming
    from asr_stream.data.corpus import format_alignment_line, parse_alignment_line

    words = (WordTiming("GO", 0.49, 0.89), WordTiming("DO", 1.27, 1.38), WordTiming("YOU", 1.38, 1.49))
    line = format_alignment_line("84-121123-0000", words, 2.25)
    assert line == '84-121123-0000 ",GO,,DO,YOU," "0.490,0.890,1.270,1.380,1.490,2.250"'
    assert parse_alignment_line(line) == ("84-121123-0000", words)
    for bad, why in [('x ",A,B," "0.1,0.2,0.3"', "4 words but"), ('x "A" "0.5,"', "bad end times"),
                     ('x "A,B" "0.5,0.4"', "non-decreasing"), ("x A 0.5", "expected ID")]:
        with pytest.raises(ValueError, match=why):
            parse_alignment_line(bad)

    d = _chapter(tmp_path, "dev", "12", "3", n=2)
    (d / "12-3.alignment.txt").write_text('12-3-0000 "WORDS,OF,12-3-0000" "0.1,0.2,0.25"\n'
                                          '12-3-0001 "WORDS,OF" "0.1,0.2"\n')
    with pytest.raises(DataError, match=r"12-3.alignment.txt:2: words of '12-3-0001' differ from its transcript"):
        read_librispeech(tmp_path, "dev")
    utts, rep = read_librispeech_report(tmp_path, "dev", on_error="skip")
    assert [u.words is not None for u in utts] == [True, False] and rep.skipped == {"bad_alignment": 1}
    assert utts[0].words[-1] == WordTiming("12-3-0000", 0.2, 0.25)
