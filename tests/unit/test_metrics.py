"""Evaluation metrics against hand-computed values (worked out in the comments)."""

from __future__ import annotations

import math

import pytest

from asr_stream.evaluation import (
    LatencyRecord,
    aggregate,
    average_lagging,
    computation_aware_delays,
    first_word_delay,
    last_word_delay,
    latency_summary,
    length_adaptive_average_lagging,
    normalize_text,
    pr_summary,
    real_time_factor,
    wer_details,
    word_lags,
)

approx = pytest.approx

# ---------------------------------------------------------------- AL / LAAL


def test_al_basic_worked_example():
    # source 1000 ms, 3 reference words -> gamma = 3/1000, ideal spacing 1/gamma = 333.33 ms
    # i=1: 200  - 0*333.33 = 200
    # i=2: 400  - 1*333.33 =  66.67
    # i=3: 1000 - 2*333.33 = 333.33   (1000 >= 1000 -> tau = 3, stop)
    # AL = (200 + 66.67 + 333.33) / 3 = 600 / 3 = 200
    assert average_lagging([200, 400, 1000], 1000, 3) == approx(200.0)


def test_al_stops_at_first_word_reaching_end_of_audio():
    # source 1000, ref 4 -> 1/gamma = 250
    # i=1: 300; i=2: 1000 - 250 = 750, 1000 >= 1000 -> tau = 2; words 3 and 4 ignored
    # AL = (300 + 750) / 2 = 525   (averaging all four would give 1800/4 = 450)
    assert average_lagging([300, 1000, 1000, 1000], 1000, 4) == approx(525.0)


def test_al_includes_word_emitted_after_audio_end():
    # Current SimulEval breaks on d >= |X| *after* adding the term, so a word
    # emitted past the end still counts (older versions skipped d > |X|: 200).
    # source 1000, ref 2 -> 1/gamma = 500; i=1: 200; i=2: 1500 - 500 = 1000 -> tau = 2
    # AL = (200 + 1000) / 2 = 600
    assert average_lagging([200, 1500], 1000, 2) == approx(600.0)


def test_al_all_words_after_audio_end_returns_first_delay():
    # delays[0] = 1200 > 1000 -> SimulEval returns delays[0]
    assert average_lagging([1200, 1300], 1000, 2) == approx(1200.0)
    # delays[0] == source: loop adds 1000 - 0, stops at tau = 1 -> 1000
    assert average_lagging([1000, 1000], 1000, 2) == approx(1000.0)


def test_hypothesis_longer_than_reference_al_vs_laal():
    # source 1000, hyp 4 words, ref 2 words; no delay reaches 1000 so tau = 4.
    # AL, gamma = 2/1000, 1/gamma = 500:
    #   100 - 0 = 100; 200 - 500 = -300; 300 - 1000 = -700; 400 - 1500 = -1100
    #   sum = -2000 -> AL = -500 (over-generation rewarded with negative lag)
    # LAAL, gamma = max(4, 2)/1000, 1/gamma = 250:
    #   100; 200 - 250 = -50; 300 - 500 = -200; 400 - 750 = -350
    #   sum = -500 -> LAAL = -125
    d = [100, 200, 300, 400]
    assert average_lagging(d, 1000, 2) == approx(-500.0)
    assert length_adaptive_average_lagging(d, 1000, 4, 2) == approx(-125.0)


def test_laal_equals_al_when_reference_is_longer():
    # source 1000, hyp 2, ref 4 -> both use 4 words, 1/gamma = 250
    # 500 - 0 = 500; 1000 - 250 = 750 (tau = 2) -> (500 + 750) / 2 = 625
    assert average_lagging([500, 1000], 1000, 4) == approx(625.0)
    assert length_adaptive_average_lagging([500, 1000], 1000, 2, 4) == approx(625.0)


def test_laal_without_reference_uses_hypothesis_length():
    # ref_len None -> target = hyp = 4 -> same as the LAAL above: -125
    assert length_adaptive_average_lagging([100, 200, 300, 400], 1000) == approx(-125.0)


def test_empty_hypothesis_is_nan():
    assert math.isnan(average_lagging([], 1000, 3))
    assert math.isnan(length_adaptive_average_lagging([], 1000, 0, 3))
    assert math.isnan(first_word_delay([]))
    assert math.isnan(last_word_delay([], 1000))


@pytest.mark.parametrize(
    "delays",
    [[400, 200], [-1.0, 10.0], [float("nan")], [0.0, float("inf")]],
    ids=["unsorted", "negative", "nan", "inf"],
)
def test_invalid_delays_raise(delays):
    with pytest.raises(ValueError):
        average_lagging(delays, 1000, 2)
    with pytest.raises(ValueError):
        length_adaptive_average_lagging(delays, 1000)
    with pytest.raises(ValueError):
        first_word_delay(delays)


@pytest.mark.parametrize("source_ms", [0, -5, float("nan")])
def test_invalid_source_raises(source_ms):
    with pytest.raises(ValueError):
        average_lagging([100], source_ms, 1)
    with pytest.raises(ValueError):
        last_word_delay([100], source_ms)


def test_invalid_lengths_raise():
    with pytest.raises(ValueError):
        average_lagging([100], 1000, 0)  # gamma would be 0
    with pytest.raises(ValueError):
        length_adaptive_average_lagging([100, 200], 1000, 3, 2)  # hyp_len != len(delays)
    with pytest.raises(TypeError):
        average_lagging([100], 1000, 2.5)  # word counts are integers


# ------------------------------------------------------- computation-aware


def test_computation_aware_delays_and_al_ca():
    # CA delay = source ms read + cumulative compute ms: [200+50, 400+100, 1000+300]
    ca = computation_aware_delays([200, 400, 1000], [50, 100, 300])
    assert ca == approx([250.0, 500.0, 1300.0])
    # source 1000, ref 3, 1/gamma = 333.33:
    # 250; 500 - 333.33 = 166.67; 1300 - 666.67 = 633.33 (tau = 3)
    # AL_CA = 1050 / 3 = 350
    assert average_lagging(ca, 1000, 3) == approx(350.0)


def test_computation_aware_first_word_past_end():
    # 900 ms read + 200 ms compute = 1100 > 1000 -> AL_CA = delays[0] = 1100
    ca = computation_aware_delays([900], [200])
    assert average_lagging(ca, 1000, 1) == approx(1100.0)


def test_computation_aware_validation():
    with pytest.raises(ValueError):
        computation_aware_delays([100, 200], [10])  # length mismatch
    with pytest.raises(ValueError):
        computation_aware_delays([100, 200], [50, 40])  # cumulative time went back
    with pytest.raises(ValueError):
        computation_aware_delays([100], [-1])


# ------------------------------------------------------ first/last word, RTF


def test_first_and_last_word_delay():
    assert first_word_delay([200, 400, 1000]) == approx(200.0)
    assert last_word_delay([200, 400, 1000], 1000) == approx(0.0)  # at end of audio
    assert last_word_delay([200, 400, 900], 1000) == approx(-100.0)  # 100 ms before end
    assert last_word_delay([200, 1250], 1000) == approx(250.0)  # 250 ms after end


def test_real_time_factor():
    assert real_time_factor(30.0, 120.0) == approx(0.25)  # 30 s compute for 2 min audio
    assert real_time_factor(3.0, 2.0) == approx(1.5)
    with pytest.raises(ValueError):
        real_time_factor(1.0, 0.0)
    with pytest.raises(ValueError):
        real_time_factor(-1.0, 1.0)


# ------------------------------------------------------- summary / aggregate


def test_latency_summary_full():
    # Values from the worked examples above: AL = LAAL = 200 (hyp = ref = 3),
    # AL_CA = LAAL_CA = 350; first 200 / 250 (CA), last 0 / 1300 - 1000 = 300 (CA).
    s = latency_summary([200, 400, 1000], 1000, 3, compute_ms=[50, 100, 300])
    expected = dict(
        AL=200.0, LAAL=200.0, AL_CA=350.0, LAAL_CA=350.0,
        first_word_delay=200.0, last_word_delay=0.0,
        first_word_delay_CA=250.0, last_word_delay_CA=300.0,
        hyp_len=3, source_ms=1000.0,
    )  # fmt: skip
    assert s == approx(expected)


def test_latency_summary_edge_cases():
    s = latency_summary([], 1000, 3)
    assert s["hyp_len"] == 0
    assert all(math.isnan(s[k]) for k in ("AL", "LAAL", "first_word_delay", "last_word_delay"))
    # no compute timestamps -> CA metrics undefined
    s = latency_summary([200, 400, 1000], 1000, 3)
    assert math.isnan(s["AL_CA"]) and math.isnan(s["LAAL_CA"])
    # ref_len None -> AL uses the hypothesis length 4 -> -125 (as LAAL above)
    s = latency_summary([100, 200, 300, 400], 1000, None)
    assert s["AL"] == approx(-125.0) and s["LAAL"] == approx(-125.0)
    # ref_len 0 -> AL undefined (gamma = 0), LAAL falls back to hyp length -> -125
    s = latency_summary([100, 200, 300, 400], 1000, 0)
    assert math.isnan(s["AL"]) and s["LAAL"] == approx(-125.0)


def test_aggregate_ignores_nan_and_counts():
    r1 = LatencyRecord.compute([200, 400, 1000], 1000, 3)  # AL 200, first 200, last 0
    # source 1000, ref 4, 1/gamma = 250: 500; 900 - 250 = 650 -> AL = 1150/2 = 575
    # first 500, last 900 - 1000 = -100
    r2 = latency_summary([500, 900], 1000, 4)  # dicts are accepted too
    r3 = LatencyRecord.compute([], 1000, 5)  # empty: skipped, but counted in n_utterances
    agg = aggregate([r1, r2, r3])
    assert agg["n_utterances"] == 3
    assert agg["AL"] == approx((200 + 575) / 2) and agg["AL_count"] == 2
    assert agg["first_word_delay"] == approx((200 + 500) / 2)
    assert agg["last_word_delay"] == approx((0 - 100) / 2)
    assert math.isnan(agg["AL_CA"]) and agg["AL_CA_count"] == 0
    empty = aggregate([])
    assert empty["n_utterances"] == 0 and math.isnan(empty["LAAL"])


# ------------------------------------------------ partial-recognition lag


def test_word_lags_counts_only_correct_words():
    ref = [("The", 300), ("cat", 700), ("sat", 1100), ("down.", 1500), ("Today", 2000)]
    # "the" right (emitted at 640: lag 340); "cat" -> "hat" substituted; "sat" right (1280 - 1100 = 180);
    # "down" deleted; "extra" inserted; "today" right but emitted 20 ms before its end (-20)
    hyp = [("THE", 640), ("HAT", 960), ("SAT", 1280), ("EXTRA", 1600), ("TODAY", 1980)]
    assert word_lags(ref, hyp) == approx([340, 180, -20])
    # normalisation as for WER: a hyphenated word becomes two tokens, each with its word's time
    assert word_lags([("state-of-the-art", 900)], [("state", 950), ("of", 950), ("the", 960), ("art", 1000)]) \
        == approx([50, 50, 60, 100])
    assert word_lags(ref, []) == [] and word_lags([], hyp) == []
    with pytest.raises(ValueError, match="not finite"):
        word_lags([("a", float("nan"))], [("a", 1)])


def test_pr_summary_percentiles():
    s = pr_summary([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
    # numpy's linear percentiles: median of ten = (500 + 600) / 2; p90 = 900 + 0.1 * 100
    assert s == approx({"PR50": 550.0, "PR90": 910.0, "PR_mean": 550.0, "PR_words": 10})
    empty = pr_summary([])
    assert empty["PR_words"] == 0 and math.isnan(empty["PR50"]) and math.isnan(empty["PR90"])


# ---------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Don't STOP \u2014 it\u2019s \u201cgreat\u201d!", "don't stop it's great"),
        ("'Quoted' words", "quoted words"),
        ("state-of-the-art", "state of the art"),
        ("Hello,   world!!\n", "hello world"),
        ("\uff21\uff22\uff23 \ufb01ne", "abc fine"),  # full-width ABC, fi ligature (NFKC)
        ("U.S. 1,000 $5", "us 1000 $5"),  # punctuation deleted, symbols kept
        ("rock'n'roll students' don`t", "rock'n'roll students don't"),
        ("  ...  ", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


# ------------------------------------------------------------------- WER


def test_wer_counts_corpus_level():
    # utt 1: "the cat sat on the mat" (6) vs "the cat sit on mat":
    #        sat->sit = 1 S, second "the" missing = 1 D, 4 hits
    # utt 2: "hello world" (2) vs "hello big world": 1 I, 2 hits
    # corpus: S=1 D=1 I=1 hits=6 N=8 -> WER = 3/8 = 0.375
    out = wer_details(
        ["The cat sat on the mat.", "Hello, world!"],
        ["the cat sit on mat", "hello big world"],
    )
    assert out == dict(wer=approx(0.375), substitutions=1, deletions=1, insertions=1,
                       hits=6, ref_words=8)  # fmt: skip


def test_wer_normalize_flag_matters():
    # normalised: "don't stop" vs "don't stop" -> 0 errors
    assert wer_details(["Don't stop."], ["don't STOP"])["wer"] == 0.0
    # raw: "Don't"/"don't" and "stop."/"STOP" differ -> 2 S out of 2 words
    raw = wer_details(["Don't stop."], ["don't STOP"], normalize=False)
    assert raw["substitutions"] == 2 and raw["wer"] == approx(1.0)


def test_wer_empty_hypothesis_is_all_deletions():
    out = wer_details(["a b c"], [""])
    assert (out["deletions"], out["ref_words"], out["wer"]) == (3, 3, approx(1.0))


def test_wer_empty_reference_counts_insertions():
    # utt 1's reference is empty after normalisation ("..."): "uh huh" = 2 I
    # utt 2 is correct: 2 hits. WER = 2 / 2 = 1.0
    out = wer_details(["...", "a b"], ["uh huh", "a b"])
    assert (out["insertions"], out["hits"], out["ref_words"]) == (2, 2, 2)
    assert out["wer"] == approx(1.0)


def test_wer_no_reference_words_at_all():
    out = wer_details([""], ["x y"])  # 2 errors / 0 words
    assert out["insertions"] == 2 and out["ref_words"] == 0 and math.isinf(out["wer"])
    assert math.isnan(wer_details([""], [""])["wer"])  # 0 / 0
    out = wer_details([], [])
    assert math.isnan(out["wer"]) and out["ref_words"] == 0 and out["insertions"] == 0


def test_wer_bad_input():
    with pytest.raises(ValueError):
        wer_details(["a"], ["a", "b"])
    with pytest.raises(TypeError):
        wer_details("a b", "a b")
