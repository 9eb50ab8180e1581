"""The synthetic corpus (asr_stream.corpus): sentence cleaning, the espeak-ng library against its command line, word
spans, the corpus tool on tiny runs, and the deprecated asr_stream.data names of the corpus tooling."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream import corpus
from asr_stream.data import read_librispeech

from ..sysdeps import needs

SR = 16_000
REPO = Path(__file__).resolve().parents[2]
needs_espeak = needs("espeak-ng")


@pytest.mark.parametrize("raw,expected", [
    ("A visit to a strange place will bring fresh work.",
     ("A VISIT TO A STRANGE PLACE WILL BRING FRESH WORK", "a visit to a strange place will bring fresh work.")),
    ("\"Well, I don't know; ask the long-forgotten one,\" she said!",
     ("WELL I DON'T KNOW ASK THE LONG FORGOTTEN ONE SHE SAID", "well, i don't know, ask the long forgotten one, "
                                                               "she said!")),
    ("Is it `true' -- or not?", ("IS IT TRUE OR NOT", "is it true, or not?")),
    ("Only 3 days remain for us.", None),  # digits
    ("See http://example.com for the details.", None),  # URL
    ("Q: what is the answer here", None),  # dialogue label
    ("Mr Smith went to the city.", None),  # espeak-ng says "mister"
    ("King Henry VIII had many wives.", None),  # espeak-ng says "roman eight"
    ("Hmm that is very strange.", None),  # vowel-less word, spelt out by espeak-ng
    ("Too short here.", None),
    (" ".join(["word"] * 21) + ".", None),
])
def test_clean_sentence(raw: str, expected) -> None:
    got = corpus.clean_sentence(raw)
    assert (None if got is None else (got.text, got.spoken)) == expected


def test_split_sentences_keeps_abbreviations() -> None:
    text = "I met Mr. Jones today. He said hi! Did J. R. R. Tolkien write it? Yes."
    assert corpus.split_sentences(text) == ["I met Mr. Jones today.", "He said hi!",
                                           "Did J. R. R. Tolkien write it?", "Yes."]


@needs("fortunes")
def test_fortunes_text_is_big_enough() -> None:
    sents = corpus.clean_sentences(corpus.fortune_sentences())
    train = sents[600:]  # what is left after the default 300 dev + 300 test
    assert len({w for s in train for w in s.text.split()}) >= 2000
    assert len({s.text for s in sents}) == len(sents)
    top = corpus.clean_sentences(corpus.fortune_sentences(), top_words=500)
    vocab = {w for s in top for w in s.text.split()}
    assert 0 < len(vocab) <= 500 and len(top) < len(sents)


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A visit to a strange place will bring fresh work.",
    "Never put off until tomorrow what you can do today.",
    "All that glitters is not gold, they say.",
    "Time flies like an arrow; fruit flies like a banana.",
    "Numbers like 42 are dropped from the text.",  # cleaned away: 6 usable sentences remain
]
TINY = dict(num_dev=1, num_test=1, voices=("en-us", "en-gb"), unseen_voice="en-us+f3", min_train_vocab=0,
            snr_db=30.0)


def _cli():
    spec = importlib.util.spec_from_file_location("synth_corpus_cli", REPO / "tools" / "corpus" / "synth_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, corpus.SynthReport]:
    base = tmp_path_factory.mktemp("synth")
    text = base / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    a, b, c = base / "a", base / "b", base / "c"
    report = corpus.synthesize_corpus(corpus.SynthConfig(out_dir=a, seed=7, text_file=text, jobs=1, **TINY))
    # Same seed through the CLI with 2 parallel jobs: must give the same corpus.
    rc = _cli().main([str(b), "--seed", "7", "--text-file", str(text), "--num-dev", "1", "--num-test", "1",
                      "--voices", "en-us,en-gb", "--unseen-voice", "en-us+f3", "--min-train-vocab", "0",
                      "--snr-db", "30", "--jobs", "2", "--quiet"])
    assert rc == 0
    corpus.synthesize_corpus(corpus.SynthConfig(out_dir=c, seed=8, text_file=text, **TINY))
    return a, b, c, report


@needs_espeak
def test_synth_layout_and_splits(tiny_corpora) -> None:
    a, _, _, report = tiny_corpora
    assert report.utterances == {"train": 4, "dev": 1, "test": 1, "test-unseen-voice": 1}
    assert (a / "SPEAKERS.TXT").is_file() and (a / "synth_config.json").is_file()
    splits = {s: read_librispeech(a, s) for s in corpus.SPLITS}
    for s, utts in splits.items():
        assert len(utts) == report.utterances[s]
        for u in utts:
            assert u.audio_path.parent.parent.parent.name == s
            info = sf.info(str(u.audio_path))
            assert info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
            assert 0.5 < u.duration < 10.0
            assert set(u.text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    texts = {s: {u.text for u in utts} for s, utts in splits.items()}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    assert len(texts["train"] | texts["dev"] | texts["test"]) == 6
    assert texts["test-unseen-voice"] == texts["test"]
    train_speakers = {u.speaker for u in splits["train"]}
    assert len(train_speakers) == 2
    assert not {u.speaker for u in splits["test-unseen-voice"]} & train_speakers
    speakers = (a / "SPEAKERS.TXT").read_text()
    assert "en-us+f3" in speakers and "test-unseen-voice" in speakers


@needs_espeak
def test_synth_word_alignments(tiny_corpora) -> None:
    a, _, _, report = tiny_corpora
    assert report.timed == sum(report.utterances.values())
    assert sorted(p.name for p in (a / "train").rglob("*.alignment.txt")) == \
        sorted(p.name.replace(".trans.", ".alignment.") for p in (a / "train").rglob("*.trans.txt"))
    for split in corpus.SPLITS:
        for u in read_librispeech(a, split):
            assert u.words is not None and [w.word for w in u.words] == u.text.split()
            times = [t for w in u.words for t in (w.start, w.end)]
            assert times == sorted(times) and times[0] == 0.0 and times[-1] <= u.duration
            assert all(w.end - w.start > 0.03 for w in u.words)  # every word has sound


@needs_espeak
def test_espeak_library_is_the_command_line(tmp_path: Path) -> None:
    """Same samples as ``espeak-ng -w``, whatever was spoken before in this process; "en-gb" is a language,
    which the command line resolves to a voice, and so must we."""
    import subprocess

    from asr_stream.corpus import espeak

    text = "well, i don't know, ask the long forgotten one, she said!"
    settings = [("en-us", 175, 50), ("en-gb+f2", 163, 41), ("en-us", 175, 50), ("en-gb", 150, 30),
                ("en-us-nyc+f2", 201, 62)]
    for voice, rate, pitch in settings:
        wav = tmp_path / "cli.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav), text], check=True)
        want, sr = sf.read(str(wav), dtype="int16")
        got = espeak.engine().speak(text, voice, rate, pitch)
        assert got.sample_rate == sr and np.array_equal(got.samples, want), (voice, rate, pitch)
        assert [p for p, _ in got.word_starts][:3] == [0, 6, 8]  # "well," "i" "don't"
    with pytest.raises(espeak.EspeakError, match="no voice 'xx-nothing'"):
        espeak.engine().speak(text, "xx-nothing")
    with pytest.raises(espeak.EspeakError, match="timed out after 0 s"):  # the child is killed, not waited for
        espeak.engine().speak(text, "en-us", timeout=0.0)


@needs_espeak
def test_espeak_library_does_not_depend_on_the_processes_rand_state(tmp_path: Path) -> None:
    """libespeak-ng 1.51 draws the breath noise of breathy variants (+f2, +f3) from the C library's rand(),
    whose state a forked child inherits. Any rand() call in this process (by any library) must not change
    what we speak: still the command line's samples, which always start from srand(1)."""
    import ctypes
    import subprocess

    from asr_stream.corpus import espeak

    libc = ctypes.CDLL(None)
    text = "well, i don't know, ask the long forgotten one, she said!"
    for voice, rate, pitch in [("en-us-nyc+f2", 201, 62), ("en-us+f3", 175, 50)]:
        wav = tmp_path / "cli.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav), text], check=True)
        want, _ = sf.read(str(wav), dtype="int16")
        for _ in range(3):  # what another library in this process might do, at any time
            libc.rand()
        got = espeak.engine().speak(text, voice, rate, pitch)
        assert np.array_equal(got.samples, want), voice


@needs_espeak
def test_word_spans_leave_pauses_out() -> None:
    words = "the captain of the guard asked him, where are you going?".split()
    audio, spans = corpus.speak(" ".join(words), "en-us", 160, 50)
    assert spans is not None and len(spans) == len(words)
    starts, ends = [a for a, _ in spans], [b for _, b in spans]
    assert starts[0] == 0.0 and all(e > s for s, e in spans) and ends[-1] < len(audio) / SR - 0.1  # end pause
    assert all(e <= s for e, s in zip(ends, starts[1:]))
    comma = words.index("him,")
    assert starts[comma + 1] - ends[comma] > 0.08  # the pause after "him," belongs to neither word


@needs_espeak
def test_synth_deterministic(tiny_corpora) -> None:
    a, b, c, _ = tiny_corpora
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith(".flac"):
            xa, _ = sf.read(str(a / name), dtype="int16")
            xb, _ = sf.read(str(b / name), dtype="int16")
            assert np.array_equal(xa, xb), name
        else:  # transcripts, SPEAKERS.TXT and the config: byte-identical
            assert fa[name] == fb[name], name
    fc = _files(c)
    assert {k: v for k, v in fa.items() if k.endswith(".txt")} != {k: v for k, v in fc.items()
                                                                   if k.endswith(".txt")}


COMMON = ["The cat sat on the mat.", "The dog sat on the mat.", "The cat saw the dog on the mat.",
          "The dog saw the cat on the mat."]
RARE = ["Zebras graze quietly near the rivers.", "Purple owls whisper ancient riddles."]


@needs_espeak
def test_synth_extra_train_text_changes_nothing_else(tmp_path: Path) -> None:
    """Sentences outside the top-words vocabulary go to train only, and every other utterance stays as it was."""
    text = tmp_path / "s.txt"
    text.write_text("\n".join(COMMON[:2] + RARE[:1] + COMMON[2:] + RARE[1:]) + "\n")
    cfg = dict(TINY, seed=3, text_file=text, top_words=7)  # the 7 words of COMMON: RARE is left out
    a, b = tmp_path / "a", tmp_path / "b"
    corpus.synthesize_corpus(corpus.SynthConfig(out_dir=a, **cfg))
    report = corpus.synthesize_corpus(corpus.SynthConfig(out_dir=b, extra_train_voices=2, **cfg))
    assert report.utterances == {"train": 2 + 2 * 2, "dev": 1, "test": 1, "test-unseen-voice": 1}

    fa, fb = _files(a), _files(b)
    for name, data in fa.items():
        if name.endswith(".flac"):
            assert np.array_equal(sf.read(str(a / name), dtype="int16")[0], sf.read(str(b / name), dtype="int16")[0])
        elif name.startswith(("dev/", "test")):
            assert fb[name] == data, name
    for split in ("dev", "test", "test-unseen-voice"):
        assert sorted(n for n in fa if n.startswith(split + "/")) == sorted(n for n in fb if n.startswith(split + "/"))
    train_a = {u.id: u.text for u in read_librispeech(a, "train")}
    train_b = read_librispeech(b, "train")
    assert {u.id: u.text for u in train_b if u.id in train_a} == train_a
    extra = [u for u in train_b if u.id not in train_a]
    want = [corpus.clean_sentence(r).text for r in RARE]
    assert sorted(u.text for u in extra) == sorted(want * 2)
    for t in want:  # each extra sentence by two different voices
        assert len({u.speaker for u in extra if u.text == t}) == 2
    held = {u.text for s in ("dev", "test") for u in read_librispeech(b, s)}
    assert not held & set(want) and len(held | {u.text for u in train_b}) == 6
    assert json.loads((b / "synth_config.json").read_text())["extra_train_voices"] == 2


@needs_espeak
def test_synth_refuses_bad_settings(tmp_path: Path) -> None:
    text = tmp_path / "s.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    cfg = dict(TINY, min_train_vocab=2000)
    with pytest.raises(corpus.SynthError, match="distinct words, fewer than min_train_vocab=2000"):
        corpus.synthesize_corpus(corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text, **cfg))
    with pytest.raises(corpus.SynthError, match="cannot use voice"):
        corpus.synthesize_corpus(corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text,
                                                  **dict(TINY, voices=("en-us", "no-such-voice"))))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    with pytest.raises(corpus.SynthError, match="directory is not empty"):
        corpus.synthesize_corpus(corpus.SynthConfig(out_dir=tmp_path / "full", text_file=text, **TINY))
    with pytest.raises(corpus.SynthError, match="extra_train_voices needs top_words"):
        corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text, extra_train_voices=1, **TINY)
    with pytest.raises(corpus.SynthError, match="extra_train_voices=3 exceeds the 2 training voices"):
        corpus.synthesize_corpus(corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text, top_words=20,
                                                  extra_train_voices=3, **TINY))
    with pytest.raises(corpus.SynthError, match="only 6 usable sentences, need 7"):
        corpus.synthesize_corpus(corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text,
                                                  **dict(TINY, num_train=5)))


@needs_espeak
def test_synth_only_splits_equal_the_full_corpus(tiny_corpora, tmp_path: Path) -> None:
    """--only-splits test: the same plan (ids, voices, audio) as a full run, only the test split written."""
    a, _, _, _ = tiny_corpora
    text = tmp_path / "s.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "only"
    rc = _cli().main([str(out), "--seed", "7", "--text-file", str(text), "--num-dev", "1", "--num-test", "1",
                      "--voices", "en-us,en-gb", "--unseen-voice", "en-us+f3", "--min-train-vocab", "0",
                      "--snr-db", "30", "--only-splits", "test", "--quiet"])
    assert rc == 0
    fo, fa = _files(out), _files(a)
    tests = sorted(n for n in fa if n.startswith("test/"))
    assert tests and sorted(n for n in fo if n.startswith(("train/", "dev/", "test"))) == tests
    for name in tests:
        if name.endswith(".flac"):
            assert np.array_equal(sf.read(str(a / name), dtype="int16")[0], sf.read(str(out / name), dtype="int16")[0])
        else:
            assert fo[name] == fa[name], name
    with pytest.raises(corpus.SynthError, match="only_splits"):
        corpus.SynthConfig(out_dir=tmp_path / "o", text_file=text, only_splits=("tset",), **TINY)


def test_the_old_import_paths_give_the_corpus_tooling() -> None:
    """asr_stream.data.{synth,engines,espeak,robust,longform} moved to asr_stream.corpus (and the noise to
    asr_stream.audio.noise); the old names still import the very same objects, for scripts written against them."""
    from asr_stream.audio import noise
    from asr_stream.corpus import engines, espeak, longform, plan, robust, text, voices
    from asr_stream.data import engines as old_engines
    from asr_stream.data import espeak as old_espeak
    from asr_stream.data import longform as old_longform
    from asr_stream.data import robust as old_robust
    from asr_stream.data import synth as old_synth

    for name in corpus.__all__:
        assert getattr(old_synth, name) is getattr(corpus, name), name
    assert old_synth.speaker_ids is voices.speaker_ids and old_synth.voice_works is engines.voice_works
    assert old_synth.load_extra_train_sentences is plan.load_extra_train_sentences
    assert old_synth.keep_top_words is text.keep_top_words and old_synth.check_training_voices is voices.check_training_voices
    assert old_engines.speak is engines.speak and old_engines.UNSEEN_SPEAKER_SPLITS is engines.UNSEEN_SPEAKER_SPLITS
    assert old_espeak.word_spans is espeak.word_spans and old_espeak.EspeakError is espeak.EspeakError
    assert old_longform.join_utterances is longform.join_utterances and old_longform.trim_silence is longform.trim_silence
    assert old_robust.make_robustness_set is robust.make_robustness_set and old_robust.CONDITIONS is robust.CONDITIONS
    assert old_robust.pink_noise is noise.pink_noise and old_robust.nonspeech_clips is noise.nonspeech_clips
