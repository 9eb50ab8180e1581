"""Restarts (asr_stream.streaming.restart): fluent speech is read in pieces, each restarted at the end of the last
word the model wrote, with nothing left unread and nothing unread left unreported; SegmentedSession and
SegmentedStreams restart at the same samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asr_stream.streaming import StreamingSession
from asr_stream.streaming.restart import RestartRule, word_end
from asr_stream.streaming.segment import EndpointConfig, Segment, SegmentedSession, SegmentedStreams, unheard

from ..conftest import noise_audio
from ..sysdeps import needs

REPO = Path(__file__).resolve().parents[2]
needs_espeak = needs("espeak-ng")


def test_restart_rules_long_segment_and_stall_need_a_word():
    r = RestartRule(max_s=4.0, stall_chunks=2)
    # rule 1: 4 s of audio read, once there is a word to restart after
    assert r.due(64000, words=3, k_extra=0, chunks_read=12, last_word_chunk=12)
    assert not r.due(63999, words=3, k_extra=0, chunks_read=12, last_word_chunk=12)
    assert not r.due(64000 * 5, words=0, k_extra=4, chunks_read=60, last_word_chunk=0)
    # rule 2: the model asked to end (k_extra) and wrote no word for 2 chunks
    assert r.due(16000, words=2, k_extra=1, chunks_read=7, last_word_chunk=5)
    assert not r.due(16000, words=2, k_extra=1, chunks_read=6, last_word_chunk=5)
    assert not r.due(16000, words=2, k_extra=0, chunks_read=9, last_word_chunk=5)  # no early EOS: still writing
    for bad in (dict(max_s=0), dict(stall_chunks=0), dict(reread_ms=float("nan"))):
        with pytest.raises(ValueError, match="restart"):
            RestartRule(**bad)


def test_word_end_is_found_by_aligning_the_words_with_the_ctc_transcript():
    """The end of the last word: the boundary after the CTC token that ends it, halfway to the next token; words the
    decoder made up, or spelt otherwise, do not move it."""
    suffix = {1: "THE ", 2: "CA", 3: "T ", 4: "SAT "}  # end-of-word tokens carry the space
    ids = [0, 1, 1, 0, 2, 0, 3, 0, 0, 4, 0]  # frame by frame, 0 = blank
    end = lambda words, text=suffix.get, frames=ids: word_end(words, frames, 0, text, 640)  # noqa: E731
    assert end(["THE", "CAT"]) == (7 + 9) // 2 * 640  # "T " ends on frame 6; "SAT " starts on frame 9
    assert end(["THE"]) == (3 + 4) // 2 * 640
    assert end(["THE", "CAT", "SAT"]) == 10 * 640  # nothing after it yet: the token's end
    assert end(["THE", "DOG", "CAT"]) == end(["THE", "CAT"])  # a made-up word is left out
    assert end(["THE", "KAT"]) == end(["THE", "CAT"])  # a word spelt otherwise
    assert end(["XYZ"]) is None and end([]) is None
    # prefix style (word-start tokens): the space after the last word is the next word's start
    prefix = {1: " THE", 2: " CA", 3: "T", 4: " SAT"}
    assert end(["THE", "CAT"], prefix.get) == (7 + 9) // 2 * 640


def test_unheard_counts_speech_after_the_last_word_but_not_before_a_restart():
    from asr_stream.streaming.session import Word

    w = [Word("A", 100.0, (1,))]
    segs = [Segment(0, 0, 64000, 64000, "restart", w, heard_end=64000),  # the next segment reads on
            Segment(1, 64000, 120000, 112000, "silence", w, heard_end=80000),  # 2 s of speech after its last word
            Segment(2, 130000, 150000, 146000, "silence", w, heard_end=140000),  # 0.375 s: within the estimate's error
            Segment(3, 160000, 180000, 176000, "silence", [], heard_end=160000)]  # no words at all: 1 s
    assert unheard(segs) == (pytest.approx(2.0 + 1.0), [1, 3])


def stall_session(model, codec, restart: RestartRule) -> StreamingSession:
    """A session whose model writes two words, then asks for EOS at every row (a model that stops in speech)."""
    s = StreamingSession(model, mode="group", k=2)
    s.restart, s.track_words = restart, True
    seq = codec.encode("THE QUICK")
    s._choose = lambda row, logits: seq[row] if row < len(seq) else codec.eos_id
    return s


def test_a_session_that_stops_writing_stops_reading_for_a_restart(make_model, codec):
    """Rule 2 with a test model that writes two words and then only asks to end: two chunks after its last word the
    session stops before reading another chunk (the audio waits in its buffer), at the end of its last word."""
    model = make_model(160, ctc_embed=True)
    s = stall_session(model, codec, RestartRule(max_s=60.0, stall_chunks=2))
    words = s.push(noise_audio(3.0, seed=5))
    assert [w.text for w in words] == ["THE", "QUICK"]
    st = s.state
    assert st.k_extra >= 1 and st.chunks_read == st.last_word_chunk + 2  # stopped two chunks after the last word
    assert 0 < st.restart_at <= st.last_word_chunk * model.chunk_samples and st.restart_at == s.heard_to()
    read = st.chunks_read
    s.push(noise_audio(1.0, seed=6))
    s.finish()
    assert s.state.chunks_read == read and [w.text for w in s.words] == ["THE", "QUICK"]  # nothing more read or written
    # without the rule the same model reads on to the end
    free = stall_session(model, codec, RestartRule(max_s=60.0, stall_chunks=2))
    free.restart = None
    free.push(noise_audio(3.0, seed=5))
    assert free.state.restart_at == -1 and free.state.chunks_read == 3 * 16000 // model.chunk_samples


def test_a_finished_segment_whose_speech_goes_on_after_its_last_word_is_read_again_once(make_model, codec):
    """Rule 3: the model wrote two words and then only asked to end (the stall rule is off here); when the pause closes
    the segment, the speech after its last word is read again as a fresh utterance, once; what that leaves unread is
    reported. SegmentedStreams does the same."""
    model = make_model(160, ctc_embed=True)
    rule = RestartRule(max_s=60.0, stall_chunks=1000)
    quiet = (1e-4 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    wave = np.concatenate([noise_audio(3.0, seed=7), quiet])
    s = SegmentedSession(stall_session(model, codec, rule), EndpointConfig(restart_s=60.0))
    s.session.restart = rule
    s.push(wave)
    s.finish()
    first, second = s.segments
    assert [w.text for w in first.words] == [w.text for w in second.words] == ["THE", "QUICK"]
    assert first.rule == "restart" and first.end == second.start == first.heard_end < 16000
    assert second.rule == "silence" and second.speech_end == 48000 and second.heard_end < second.speech_end - 8000
    assert s.unheard == (pytest.approx((second.speech_end - second.heard_end) / 16000), [1])
    eng = SegmentedStreams(model, 1, endpoint=EndpointConfig(restart_s=60.0), mode="group", k=2)
    eng.engine.sessions[0] = stall_session(model, codec, rule)
    eng.engine.reset(0)
    eng.feed(0, wave)
    eng.end(0)
    eng.drain()
    assert [(g.start, g.end, g.rule, g.heard_end) for g in eng.segments(0)] == [(g.start, g.end, g.rule, g.heard_end) for g in s.segments]
    assert [(w.text, w.time_ms) for w in eng.words(0)] == [(w.text, w.time_ms) for w in s.words]


class Recording(StreamingSession):
    """Records the audio pushed into each utterance (between resets)."""

    def reset(self) -> None:
        self.fed = getattr(self, "fed", []) + [[]]
        super().reset()

    def push(self, samples):
        self.fed[-1].append(np.asarray(samples))
        return super().push(samples)


def test_restarts_read_on_from_the_last_word_and_batched_streams_restart_alike(make_model):
    """Rule 1 on a test model with a CTC head (restart_s = 1 s here): a restarted segment ends where its last word
    ends and the next one starts there, on the same audio again (nothing skipped); SegmentedStreams gives the same
    segments and words, whatever the block size."""
    model = make_model(160, ctc_embed=True)
    quiet = lambda s, seed: (1e-4 * np.random.default_rng(seed).standard_normal(int(s * 16000))).astype(np.float32)  # noqa: E731
    waves = [np.concatenate([quiet(0.3, 1), noise_audio(4.0, 1), quiet(0.6, 2), noise_audio(1.5, 2)]),
             np.concatenate([noise_audio(3.5, 4), quiet(0.9, 4), noise_audio(2.0, 5)])]
    ep = EndpointConfig(restart_s=1.0, eos_silence_ms=60_000, pause_after_s=60.0)
    alone = []
    for w in waves:
        s = SegmentedSession(Recording(model, mode="group", k=2), ep)
        for j in range(0, len(w), 1000):
            s.push(w[j : j + 1000])
        s.finish()
        alone.append(s)
        segs = s.segments
        assert sum(g.rule == "restart" for g in segs) >= 3
        fed = [np.concatenate(f) for f in s.session.fed if f]  # the audio of each utterance
        assert len(fed) == len(segs)
        for g, nxt, audio in zip(segs, segs[1:] + [None], fed):
            assert np.array_equal(audio[: g.end - g.start], w[g.start : g.end])  # each reads its own audio, from its start
            if g.rule == "restart":
                assert nxt.start == g.end == g.heard_end > g.start and g.words  # the next starts at its last word's end
        # a restart leaves nothing unheard (checked above: the next segment starts at its last word). A segment that
        # a rule of the endpointer closed may end before speech its CTC head heard, and then that is reported: which
        # segments do is this random model's argmax near-ties, which flip with the memory layout of a run (CI saw
        # 0.78 s after the last word of segment 10 once), so only the report's consistency is asserted here
        secs, idx = s.unheard
        assert all(segs[i].rule != "restart" for i in idx), (s.unheard, [g.rule for g in segs])
        assert secs == pytest.approx(sum((segs[i].speech_end - max(segs[i].start, segs[i].heard_end)) / 16000 for i in idx))
        # emission times go forward (eval's latencies refuse anything else)
        times = [x.time_ms for x in s.words]
        assert times == sorted(times)
    for block in (5120, 64000):
        eng = SegmentedStreams.run(model, waves, endpoint=ep, block=block, mode="group", k=2)
        for i, s in enumerate(alone):
            assert [(g.start, g.end, g.rule) for g in eng.segments(i)] == [(g.start, g.end, g.rule) for g in s.segments]
            assert [(x.text, x.time_ms) for x in eng.words(i)] == [(x.text, x.time_ms) for x in s.words]
            assert eng.done(i)


# -- the bundled model on fluent speech (the issue: half the words lost, unheard_s 0, no warning) -------------
@pytest.fixture(scope="module")
def fluent(tmp_path_factory):
    """Five held-out sentences (never trained on, spoken by a training voice) cut to their speech and joined with no
    pause at all: 11 s of fluent speech."""
    import soundfile as sf

    from asr_stream.corpus.longform import trim_silence
    from asr_stream.corpus.synth import synthesize

    items = json.loads((REPO / "tests" / "data" / "heldout.json").read_text())[4:9]
    audio = np.concatenate([trim_silence(synthesize(it["spoken"], it["voice"], it["rate"], it["pitch"])) for it in items])
    path = tmp_path_factory.mktemp("fluent") / "fluent.wav"
    sf.write(path, audio, 16000)
    return audio, " ".join(it["text"] for it in items), path


@needs_espeak
def test_fluent_speech_comes_back_and_what_is_not_read_is_reported(fluent, tmp_path):
    """Before restarts, `transcribe` gave 41 % WER here (one 11 s segment: the model looped, then stopped; the last
    sentence was lost) with unheard_s 0. Now the segments restart at their last words: 2.3 % WER, nothing unheard.
    With restarts off, the speech after the last word (about 2.3 s) is reported as unheard."""
    from asr_stream import default_model_dir
    from asr_stream.evaluation.wer import wer_details
    from asr_stream.model import SpeechLLM

    audio, ref, path = fluent
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "asr_stream", "transcribe", str(path), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())["files"][0]
    assert wer_details([ref], [r["text"]])["wer"] <= 0.10, r["text"]
    assert r["text"].endswith("WHAT IS THE REASON FOR THIS")  # the last sentence is there
    segs = r["segments"]
    assert [s["rule"] for s in segs].count("restart") >= 2
    assert all(a["end_ms"] == b["start_ms"] for a, b in zip(segs, segs[1:]) if a["rule"] == "restart")
    assert r["unheard_s"] == 0 and not r["warnings"]

    off = SegmentedSession(StreamingSession(SpeechLLM.load(default_model_dir())), EndpointConfig(restart_s=None))
    for j in range(0, len(audio), 1600):
        off.push(audio[j : j + 1600])
    off.finish()
    assert wer_details([ref], [off.text])["wer"] >= 0.25  # the failure restarts fix
    seconds, which = off.unheard
    assert seconds >= 1.5 and which == [len(off.segments) - 1]


def test_unheard_counts_speech_after_the_last_word_except_where_a_restart_reads_it_again():
    """unheard(): speech after a closed segment's last word counts (all of it with no words; at least reread_ms);
    a segment closed by a restart never counts, whatever its speech_end says: the next segment reads on from its
    last word (the suite once saw restart segments counted, when a random model's near-tied CTC argmax flipped)."""
    from asr_stream.streaming.segment import Segment, unheard
    from asr_stream.streaming.session import Word

    w = [Word("A", 100.0, [5])]
    segs = [Segment(0, start=0, end=32000, speech_end=30000, rule="restart", words=w, heard_end=16000),
            Segment(1, start=16000, end=64000, speech_end=60000, rule="silence", words=w, heard_end=40000),
            Segment(2, start=64000, end=80000, speech_end=79000, rule="silence", words=[], heard_end=64000),
            Segment(3, start=80000, end=96000, speech_end=90000, rule="end", words=w, heard_end=89000),
            Segment(4, start=96000, end=-1, speech_end=-1, rule="", words=[], heard_end=-1)]
    seconds, which = unheard(segs)
    assert which == [1, 2] and seconds == (20000 + 15000) / 16000


def test_a_lookahead_encoder_s_ctc_word_ends_are_moved_back_by_its_lag(make_model, codec):
    """With Whisper look-ahead (L = 1) the encoder's frame f holds the audio of frame f - L F, so the end of the last
    word that the CTC tokens give is L chunks earlier in the audio than the frame index says; the same tokens on the
    model without look-ahead give the end L chunks later."""
    ends = []
    for encoder in ("whisper", "whisper-lookahead"):
        model = make_model(160, encoder=encoder)
        s = StreamingSession(model, k=2)
        st = s.state
        st.texts, st.last_word_chunk, st.samples_in = ["THE"], 8, 8 * model.chunk_samples
        st.ctc_ids = [codec.pad_id] * 30 + codec.encode("THE") + [codec.pad_id] * 20
        ends.append(s.heard_to())
    assert 30 * 320 < ends[0] < 8 * 2560 and ends[0] - ends[1] == 2560


def test_a_segment_s_words_never_come_before_the_last_segment_s_last_words():
    """A restarted segment's last words are written up to k chunks after its audio ended (here at 3,840 and 4,160 ms
    of the stream), while the next segment starts at the restart point (2,720 ms) and writes its first word k
    chunks after that (3,680 ms by its own reckoning). That word was emitted after the others: it gets their time,
    and times go forward (`eval --segment on` refused the whole run with 'delays_ms must be non-decreasing'
    on a robustness set: seen with the bundled model and the Whisper model)."""
    from asr_stream.streaming.segment import _Segments
    from asr_stream.streaming.session import Word

    segs = _Segments(None)
    first = segs.open(0)
    segs.audio.add(np.zeros(16000 * 5, np.float32))
    segs.add(first, [Word("A", 2240.0, (1,)), Word("B", 3840.0, (2,)), Word("C", 4160.0, (3,))])
    segs.restart(2720 * 16)
    out = segs.add(segs.current, [Word("D", 960.0, (4,)), Word("E", 1600.0, (5,))])
    assert [w.time_ms for w in out] == [4160.0, 2720.0 + 1600.0]
    assert [w.time_ms for w in segs.words] == [2240.0, 3840.0, 4160.0, 4160.0, 4320.0]
