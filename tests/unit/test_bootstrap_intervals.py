"""Bootstrap intervals over utterances (asr_stream.evaluation.stats) and how eval / sweep report them."""

import json

import numpy as np
import pytest

from asr_stream.evaluation.stats import (RESAMPLES, SEED, compare, mean_interval, paired_mean_difference,
                                         paired_wer_difference, resample_indices, wer_interval)
from asr_stream.evaluation.wer import utterance_errors, wer_details


def corpus(n: int, seed: int, p: float = 0.1):
    """n utterances of 5-20 words with errors drawn at rate p: (errors, words)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(5, 21, n)
    return rng.binomial(words, p), words


def test_utterance_errors_add_up_to_the_corpus_wer():
    refs = ["the cat sat", "a b c d", "", "hello world", "x"]
    hyps = ["the cat sat down", "a c d e", "noise here", "", "X."]
    errors, words = utterance_errors(refs, hyps)
    # an insertion; a deletion and an insertion; an empty reference (all insertions); two deletions; none (normalised)
    assert errors == [1, 2, 2, 2, 0] and words == [3, 4, 0, 2, 1]
    d = wer_details(refs, hyps)
    assert sum(errors) == d["substitutions"] + d["deletions"] + d["insertions"] and sum(words) == d["ref_words"]


def test_interval_holds_the_estimate_and_shrinks_with_more_utterances():
    widths = []
    for n in (50, 800):
        e, w = corpus(n, seed=1)
        lo, hi = wer_interval(e, w)
        assert lo < e.sum() / w.sum() < hi
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # 16x the utterances: about a quarter of the width
    assert wer_interval(*corpus(50, seed=1)) == wer_interval(*corpus(50, seed=1))  # fixed seed: reproducible


def test_hand_computed_two_utterance_case():
    """Two utterances, errors (1, 0) of (1, 3) words: a resample is {0,0} (WER 1), {0,1} (1/4) or {1,1} (0), with
    probabilities 1/4, 1/2, 1/4. The interval is computed here by hand from the same seeded draws."""
    idx = np.random.default_rng(SEED).integers(0, 2, size=(RESAMPLES, 2))
    values = [[1.0, 0.25, 0.0][int(row.sum())] for row in idx]
    assert np.mean(np.array(values) == 0.25) == pytest.approx(0.5, abs=0.03)
    assert np.mean(np.array(values) == 1.0) == pytest.approx(0.25, abs=0.03)
    assert wer_interval([1, 0], [1, 3]) == tuple(np.percentile(values, [2.5, 97.5])) == (0.0, 1.0)
    assert wer_interval([1, 0], [1, 3], level=0.4) == (0.25, 0.25)  # the middle 40 %: all at 1/4
    assert np.array_equal(resample_indices(2), idx)


def test_pairing_narrows_the_difference_of_correlated_systems():
    """B makes A's errors plus or minus a few: unpaired, the difference inherits the spread of both systems; paired,
    only their disagreement counts."""
    e, w = corpus(300, seed=2, p=0.15)
    rng = np.random.default_rng(3)
    e2 = np.maximum(e + rng.integers(-1, 2, e.size) * (rng.random(e.size) < 0.1), 0)
    paired = paired_wer_difference(e, e2, w)
    assert paired["lo"] <= paired["diff"] <= paired["hi"]
    assert paired["diff"] == pytest.approx((e2.sum() - e.sum()) / w.sum())
    lo_a, hi_a = wer_interval(e, w)
    lo_b, hi_b = wer_interval(e2, w, seed=1)  # independent draws: what an unpaired comparison has
    unpaired_width = np.hypot(hi_a - lo_a, hi_b - lo_b)
    assert paired["hi"] - paired["lo"] < 0.3 * unpaired_width
    same = paired_wer_difference(e, e, w)
    assert (same["diff"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)


def test_mean_interval_agrees_with_scipy_and_skips_undefined_values():
    from scipy.stats import bootstrap

    x = np.random.default_rng(4).gamma(2.0, 300.0, 200)
    ours = mean_interval(x)
    ref = bootstrap((x,), np.mean, n_resamples=RESAMPLES, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, rel=0.03) and ours[1] == pytest.approx(ref.high, rel=0.03)
    with_nan = np.concatenate([x, [np.nan] * 5])
    d = paired_mean_difference(with_nan, with_nan + 10.0)
    assert d["diff"] == pytest.approx(10.0) and d["lo"] == pytest.approx(10.0) and d["hi"] == pytest.approx(10.0)


def test_compare_pairs_records_by_id_and_refuses_other_data():
    def rec(i, ref, hyp, laal):
        return {"id": i, "reference": ref, "hypothesis": hyp, "lat_LAAL": laal}

    base = [rec("a", "one two three", "one two three", 500.0), rec("b", "four five", "four", 600.0),
            rec("c", "six", "", float("nan"))]
    other = [rec("c", "six", "six", 300.0), rec("a", "one two three", "one too three", 400.0),
             rec("b", "four five", "four five", 500.0)]
    c = compare(base, other)
    assert c["utterances"] == 3 and c["better"] == 2 and c["worse"] == 1
    assert c["wer_diff"] == pytest.approx((1 - 2) / 6)
    assert c["LAAL_diff"] == pytest.approx((300 + 400 + 500) / 3 - (500 + 600) / 2)
    assert c["wer_diff_ci"][0] <= c["wer_diff"] <= c["wer_diff_ci"][1]
    with pytest.raises(ValueError, match="different utterances .*1 only in the baseline"):
        compare(base, other[:2])
    with pytest.raises(ValueError, match="other references"):
        compare(base, [rec("a", "one two", "", 1.0), other[0], other[2]])


def test_eval_and_sweep_report_intervals_and_paired_differences(tmp_path, make_model, capsys):
    import soundfile as sf

    from asr_stream.data import Utterance, write_manifest
    from asr_stream.cli.evaluation import eval_cmd
    from asr_stream.cli.options import EvalStreamOptions
    from asr_stream.evaluation.runner import Setting
    from asr_stream.evaluation.sweep import baseline_index, grid, run_sweep

    from ..conftest import SENTENCES, noise_audio

    utts = []
    for i, text in enumerate(SENTENCES[:4]):
        p = tmp_path / f"u{i}.wav"
        sf.write(p, noise_audio(0.6 + 0.2 * i, seed=i), 16000)
        utts.append(Utterance(f"u{i}", p, text, 0.6 + 0.2 * i))
    model = make_model(160)
    model_dir = model.save(tmp_path / "model")
    manifest = write_manifest(utts, tmp_path / "m.jsonl")
    s = eval_cmd(str(manifest), EvalStreamOptions(model=str(model_dir), k=1), output=str(tmp_path / "k1"))
    lo, hi = s["wer_ci"]
    assert lo <= s["wer"] <= hi and s["ci_resamples"] == RESAMPLES
    assert f"[{100 * lo:.2f}, {100 * hi:.2f}]" in capsys.readouterr().out
    s3 = eval_cmd(str(manifest), EvalStreamOptions(model=str(model_dir), k=3), output=str(tmp_path / "k3"),
                  baseline=str(tmp_path / "k1"))
    vs = s3["vs_baseline"]
    assert vs["utterances"] == 4 and vs["wer_diff"] == pytest.approx(s3["wer"] - s["wer"])
    assert vs["LAAL_diff"] == pytest.approx(s3["LAAL"] - s["LAAL"])
    assert "against" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no records.jsonl"):
        eval_cmd(str(manifest), EvalStreamOptions(model=str(model_dir), k=3), baseline=str(tmp_path / "nowhere"))
    eval_cmd(str(write_manifest(utts[:2], tmp_path / "m2.jsonl")), EvalStreamOptions(model=str(model_dir), k=3),
             output=str(tmp_path / "two"))
    with pytest.raises(ValueError, match="not an eval of this data .2 of these 4 utterances missing"):
        eval_cmd(str(manifest), EvalStreamOptions(model=str(model_dir), k=1), output=str(tmp_path / "never"),
                 baseline=str(tmp_path / "two"))
    assert not (tmp_path / "never").exists()  # refused before anything was evaluated

    cells = grid(["group"], [1, 2, 3], [0.0], [None])
    rows = run_sweep(lambda mode: model, utts, cells, tmp_path / "sw", progress=False, baseline="group-k3-phi0")
    table = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert [t["baseline"] for t in table] == [False, False, True]
    for t, r in zip(table, rows):
        assert t["wer_lo"] <= t["wer"] <= t["wer_hi"]
    assert table[0]["dwer"] == pytest.approx(rows[0]["wer"] - rows[2]["wer"])
    assert table[0]["dwer_lo"] <= table[0]["dwer"] <= table[0]["dwer_hi"]
    md = (tmp_path / "sw" / "results.md").read_text()
    assert "ΔWER pts [95 %]" in md and "| baseline |" in md and "minus row 3 (group-k3-phi0)" in md
    assert baseline_index("2", cells) == 1 and baseline_index(None, cells) == 0
    with pytest.raises(ValueError, match="no such cell"):
        baseline_index("group-k9-phi0", cells)
    assert Setting("group", 3, 0.0).name == "group-k3-phi0"


def test_the_f1_interval_is_the_micro_f1_over_resampled_utterances():
    from asr_stream.evaluation.stats import f1_interval

    # utterances alike: every resample has the same F1, so the interval is that point
    lo, hi = f1_interval([3] * 10, [1] * 10, [1] * 10)
    assert lo == pytest.approx(0.75) and hi == pytest.approx(0.75)
    # half perfect, half all wrong: the micro F1 of the whole set (0.5) lies inside a wide interval
    tp, fp, fn = [2] * 20 + [0] * 20, [0] * 20 + [2] * 20, [0] * 20 + [2] * 20
    lo, hi = f1_interval(tp, fp, fn)
    assert lo < 0.5 < hi and hi - lo > 0.2
    assert f1_interval(tp, fp, fn) == (lo, hi)  # fixed draws
    with pytest.raises(ValueError, match="counts of"):
        f1_interval([1], [1, 2], [1])
