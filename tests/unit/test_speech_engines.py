"""Speech engines beside espeak-ng (Flite, Festival), per-split voice lists and the evaluation-only speakers."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream.audio.io import to_mono_16k
from asr_stream import corpus
from asr_stream.corpus import engines
from asr_stream.data import read_librispeech

from ..sysdeps import needs

TEXT = "well, i don't know, ask the long forgotten one, she said!"


def test_voice_names_and_speakers() -> None:
    assert engines.split_voice("en-us+f3") == ("espeak", "en-us+f3")
    assert engines.canonical_voice("espeak:en-us+f3") == "en-us+f3"  # espeak-ng voices keep their bare names
    assert engines.canonical_voice("flite:awb") == "flite:awb"
    for v in ("flite:kal", "flite:kal16", "festival:kal_diphone"):
        assert engines.speaker_of(v) == "kal"
    for v in ("flite:slt", "festival:cmu_us_slt_arctic_hts"):
        assert engines.speaker_of(v) == "slt"
    assert engines.speaker_of("flite:awb") == "awb" and engines.speaker_of("en-gb") == "en-gb"
    with pytest.raises(engines.EngineError, match="bad voice 'mbrola:us1'"):
        engines.split_voice("mbrola:us1")
    assert not engines.voice_works("flite:no-such") and not engines.voice_works("festival:no_such")


@pytest.mark.parametrize("voices", [("en-us", "flite:kal16"), ("festival:cmu_us_slt_arctic_hts",),
                                    ("flite:awb", "espeak:en-gb", "festival:kal_diphone"), ("flite:slt",)])
def test_evaluation_only_speakers_never_train(tmp_path: Path, voices) -> None:
    """kal and slt, in any engine, are refused as train/dev voices, before anything is synthesised (so also
    where the engine is not installed), by the corpus and by the planner."""
    text = tmp_path / "s.txt"
    text.write_text("\n".join(f"sentence number {w} is here." for w in "one two three four five".split()) + "\n")
    cfg = corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text, num_dev=1, num_test=1, voices=voices,
                            min_train_vocab=0)
    with pytest.raises(corpus.SynthError, match="evaluation-only and must not be training voices"):
        corpus.synthesize_corpus(cfg)
    assert not (tmp_path / "o").exists()
    with pytest.raises(corpus.SynthError, match="evaluation-only"):
        corpus.plan_corpus(cfg, corpus.load_sentences(cfg), voices)


def test_eval_splits_must_be_unseen_speakers(tmp_path: Path) -> None:
    text = tmp_path / "s.txt"
    text.write_text("\n".join(f"sentence number {w} is here." for w in "one two three four five".split()) + "\n")
    cfg = corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text, num_dev=1, num_test=1, min_train_vocab=0,
                            eval_voices=(("test-awb", ("flite:awb",)),))
    with pytest.raises(corpus.SynthError, match="test-awb: voice.*flite:awb are training speakers"):
        corpus.plan_corpus(cfg, corpus.load_sentences(cfg), ["en-us", "flite:awb"])
    for bad in [(("train", ("flite:kal",)),), (("test", ("flite:kal",)),), (("test-x", ()),),
                (("test-x", ("flite:kal",)), ("test-x", ("flite:slt",)))]:
        with pytest.raises(corpus.SynthError, match="bad synth setting"):
            corpus.SynthConfig(out_dir=tmp_path / "o", eval_voices=bad)


@needs("flite:awb", "flite:kal")
@pytest.mark.parametrize("voice", ["awb", "kal"])  # awb: clustergen (rand() excitation), kal: 8 kHz diphone
def test_flite_library_is_the_command_line(tmp_path: Path, voice: str) -> None:
    """Same samples as ``flite -voice V -o``, call after call and whatever rand() calls happen in between."""
    wav = tmp_path / "cli.wav"
    subprocess.run(["flite", "-voice", voice, "-t", TEXT, "-o", str(wav)], check=True)
    pcm, sr = sf.read(str(wav), dtype="int16")
    want = to_mono_16k(pcm, sr)
    for _ in range(2):
        ctypes.CDLL(None).rand()
        got, spans = engines.speak(TEXT, f"flite:{voice}")
        assert got.dtype == np.float32 and np.array_equal(got, want)
        assert spans is not None and len(spans) == len(TEXT.split())
        flat = [t for s in spans for t in s]
        assert flat == sorted(flat) and flat[-1] <= len(got) / 16000
        assert all(b - a > 0.03 for a, b in spans)
    comma = TEXT.split().index("know,")
    assert spans[comma + 1][0] - spans[comma][1] > 0.05  # the pause after "know," belongs to no word


@needs("flite:awb")
def test_flite_rate_and_pitch() -> None:
    import librosa

    base, _ = engines.speak(TEXT, "flite:awb", 175, 50)
    slow, _ = engines.speak(TEXT, "flite:awb", 140, 50)
    high, _ = engines.speak(TEXT, "flite:awb", 175, 80)
    assert len(slow) / len(base) == pytest.approx(175 / 140, rel=0.05)
    assert len(high) == pytest.approx(len(base), rel=0.02)
    f0 = [np.nanmedian(librosa.pyin(x, fmin=60, fmax=400, sr=16000)[0]) for x in (base, high)]
    assert f0[1] / f0[0] == pytest.approx(engines.pitch_factor(80), rel=0.08)  # 2 ** 0.3 = 1.23
    again, _ = engines.speak(TEXT, "flite:awb", 175, 50)  # settings do not carry over to the next call
    assert np.array_equal(again, base)


@needs("festival:ked_diphone")
def test_festival_deterministic_with_word_timings() -> None:
    a, sa = engines.speak(TEXT, "festival:ked_diphone", 160, 60)
    b, sb = engines.speak(TEXT, "festival:ked_diphone", 160, 60)
    assert np.array_equal(a, b) and sa == sb
    assert sa is not None and len(sa) == len(TEXT.split())
    assert [t for s in sa for t in s] == sorted(t for s in sa for t in s)
    slow, _ = engines.speak(TEXT, "festival:ked_diphone", 120, 60)
    assert len(slow) > 1.2 * len(a)
    low, _ = engines.speak(TEXT, "festival:ked_diphone", 160, 30)
    assert not np.array_equal(low[: len(a)], a[: len(low)])  # pitch reaches the diphone voice
    with pytest.raises(engines.EngineError, match="no voice 'nope'"):
        engines.speak(TEXT, "festival:nope")


@pytest.mark.parametrize("voice", [pytest.param(v, marks=needs(v)) for v in engines.TRAIN_VOICES_OTHER_ENGINES])
def test_every_other_engine_training_voice_speaks(voice: str) -> None:
    """Each non-espeak training voice (Flite awb, rms; Festival ked; rab and don from `make corpus-sysdeps`, Debian
    contrib) speaks the words with timings in order, and is not an evaluation-only speaker."""
    assert engines.voice_works(voice)
    x, spans = engines.speak(TEXT, voice, 175, 50)
    assert x.dtype == np.float32 and 0.5 < len(x) / 16000 < 10 and np.abs(x).max() > 0.05
    assert spans is not None and len(spans) == len(TEXT.split())
    assert [t for sp in spans for t in sp] == sorted(t for sp in spans for t in sp)
    assert engines.speaker_of(voice) not in engines.EVAL_ONLY_SPEAKERS


SENTENCES = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
             "A stitch in time saves nine, they say.", "Every cloud has a silver lining somewhere.",
             "Time flies like an arrow, fruit flies like a banana.", "Actions speak louder than words ever do."]


@needs("espeak-ng", "flite:awb", "flite:kal", "flite:kal16", "flite:slt")
def test_corpus_with_flite_voices_and_unseen_speaker_splits(tmp_path: Path) -> None:
    """Training voices of two engines; kal / slt splits speak the test sentences; adding those splits leaves
    every other file of the corpus exactly as it was; the same seed gives the same corpus."""
    text = tmp_path / "s.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    cfg = dict(seed=1, text_file=text, num_dev=1, num_test=2, voices=("en-us", "flite:awb"), unseen_voice="en-us+f3",
               min_train_vocab=0)
    evals = (("test-kal", ("flite:kal16", "flite:kal")), ("test-slt", ("flite:slt",)))
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    corpus.synthesize_corpus(corpus.SynthConfig(out_dir=a, **cfg))
    report = corpus.synthesize_corpus(corpus.SynthConfig(out_dir=b, eval_voices=evals, **cfg))
    corpus.synthesize_corpus(corpus.SynthConfig(out_dir=c, eval_voices=evals, jobs=2, **cfg))
    assert report.utterances == {"train": 3, "dev": 1, "test": 2, "test-unseen-voice": 2, "test-kal": 2, "test-slt": 2}
    assert report.timed == 12  # word timings from both engines

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    fa, fb, fc = files(a), files(b), files(c)
    for name, data in fa.items():
        if name.endswith(".flac"):
            assert np.array_equal(sf.read(str(a / name))[0], sf.read(str(b / name))[0]), name
        elif name.startswith(("train/", "dev/", "test/", "test-unseen-voice/")):
            assert fb[name] == data, name
    assert sorted(fb) == sorted(fc)
    for name in fb:  # jobs=2 gives the same corpus
        if name.endswith(".flac"):
            assert np.array_equal(sf.read(str(b / name))[0], sf.read(str(c / name))[0]), name
        else:
            assert fb[name] == fc[name], name
    test = {u.text for u in read_librispeech(b, "test")}
    for split, speaker in (("test-kal", "kal"), ("test-slt", "slt")):
        utts = read_librispeech(b, split)
        assert {u.text for u in utts} == test
        assert all(u.words is not None and [w.word for w in u.words] == u.text.split() for u in utts)
    speakers = (b / "SPEAKERS.TXT").read_text()
    train_ids = {u.speaker for s in ("train", "dev") for u in read_librispeech(b, s)}
    eval_ids = {u.speaker for s in ("test-kal", "test-slt") for u in read_librispeech(b, s)}
    assert not train_ids & eval_ids and "flite:slt" in speakers and "flite:kal16" in speakers

    # Test sets alone (no training audio): the same utterances, sample for sample, and the same transcripts.
    d = tmp_path / "d"
    sub = corpus.synthesize_test_sets(corpus.SynthConfig(out_dir=d, eval_voices=evals, **cfg), ["test", "test-kal"], limit=1)
    assert sub.utterances == {"test": 1, "test-kal": 1}
    fd = files(d)
    audio = [n for n in fd if n.endswith(".flac")]
    assert len(audio) == 2 and {n.split("/")[0] for n in audio} == {"test", "test-kal"}
    for n in audio:
        assert np.array_equal(sf.read(str(d / n))[0], sf.read(str(b / n))[0]), n
    for split in ("test", "test-kal"):
        full = {u.id: u.text for u in read_librispeech(b, split)}
        assert all(full[u.id] == u.text for u in read_librispeech(d, split))
    with pytest.raises(corpus.SynthError, match="test sets only: got train"):
        corpus.synthesize_test_sets(corpus.SynthConfig(out_dir=tmp_path / "e", **cfg), ["train"])
    with pytest.raises(corpus.SynthError, match="no split test-slt"):
        corpus.synthesize_test_sets(corpus.SynthConfig(out_dir=tmp_path / "e", **cfg), ["test-slt"])


def test_test_sets_tool_refuses_training_splits(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(repo / "tools" / "corpus" / "synth_test_sets.py"), str(tmp_path / "o"),
                        "--splits", "test", "train"], capture_output=True, text=True, cwd=repo,
                       env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and r.stderr.strip() == "synth_test_sets: error: test sets only: got train"
    assert not (tmp_path / "o").exists()
