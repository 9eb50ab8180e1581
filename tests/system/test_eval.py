import json

import numpy as np
import pytest
import soundfile as sf

from asr_stream.data import Utterance, WordTiming, write_manifest
from asr_stream.evaluation.runner import Setting, evaluate, summarize
from asr_stream.evaluation.sweep import flat, grid, run_sweep

from ..conftest import SENTENCES, noise_audio


@pytest.fixture
def corpus(tmp_path):
    utts = []
    for i, text in enumerate(SENTENCES[:3]):
        p = tmp_path / f"u{i}.flac"
        sf.write(p, noise_audio(0.6 + 0.3 * i, seed=i), 16000)
        utts.append(Utterance(f"u{i}", p, text, 0.6 + 0.3 * i))
    return utts


def test_evaluate_records_and_summary(tmp_path, make_model, corpus):
    model = make_model(160)
    s = evaluate(model, corpus, Setting("group", 2, 0.5), tmp_path / "cell", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "cell" / "records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["u0", "u1", "u2"]
    for r in recs:
        assert r["hypothesis"] == " ".join(w["text"] for w in r["words"])
        times = [w["time_ms"] for w in r["words"]]
        assert times == sorted(times) and all(t <= r["audio_ms"] + 160 for t in times)
        computes = [w["compute_ms"] for w in r["words"]]
        assert computes == sorted(computes) and all(c <= 1000 * r["compute_s"] + 1e-6 for c in computes)
    assert s["utterances"] == 3 and s["ref_words"] == sum(len(t.split()) for t in SENTENCES[:3])
    assert s["wer"] == pytest.approx((s["substitutions"] + s["deletions"] + s["insertions"]) / s["ref_words"])
    assert s["rtf"] > 0 and json.loads((tmp_path / "cell" / "summary.json").read_text())["wer"] == s["wer"]


def test_evaluate_resumes_from_records(tmp_path, make_model, corpus):
    import shutil

    model = make_model(160)
    full = evaluate(model, corpus, Setting("interleaved", 1), tmp_path / "a", progress=False)
    # a run "killed" after its first record: the folder holds its settings and one line
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "settings.json", tmp_path / "b" / "settings.json")
    first = (tmp_path / "a" / "records.jsonl").read_text().splitlines(keepends=True)[0]
    (tmp_path / "b" / "records.jsonl").write_text(first)
    resumed = evaluate(model, corpus, Setting("interleaved", 1), tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "records.jsonl").read_text().startswith(first)  # finished work kept, not redone
    assert len((tmp_path / "b" / "records.jsonl").read_text().splitlines()) == 3
    assert resumed["wer"] == full["wer"]


def test_resume_rescores_utterances_whose_audio_changed(tmp_path, make_model, corpus):
    """A rerun into the same folder after the audio at the same paths was replaced reports the new audio's result
    (as a fresh run does), not the old records; only the changed utterance is streamed again, and it says so."""
    import os
    import warnings

    model = make_model(160)
    wav = [tmp_path / f"w{i}.wav" for i in range(3)]  # WAV: the same duration gives the same size
    for i, (u, p) in enumerate(zip(corpus, wav)):
        sf.write(p, noise_audio(u.duration, seed=i), 16000)
    utts = [Utterance(u.id, p, u.text, u.duration) for u, p in zip(corpus, wav)]
    out = tmp_path / "e"
    old = evaluate(model, utts, Setting("group", 2), out, progress=False)
    rec = out / "records.jsonl"
    kept = rec.read_text()

    sf.write(wav[1], noise_audio(2.5, seed=7), 16000)  # other audio, longer, at the same path
    with pytest.warns(UserWarning, match=r"1 utterances re-scored: audio changed .*\(e\.g\. u1\)"):
        new = evaluate(model, utts, Setting("group", 2), out, progress=False)
    fresh = evaluate(model, utts, Setting("group", 2), tmp_path / "fresh", progress=False)
    assert rec.read_text().startswith(kept) and len(rec.read_text().splitlines()) == 4  # only u1 streamed again
    assert new["audio_s"] > old["audio_s"] + 1.5  # the longer audio is in the result
    for key in ("wer", "audio_s", "LAAL", "substitutions", "deletions", "insertions"):
        assert new[key] == fresh[key]

    # the same size, and its old modification time put back: the hash of the file's ends still tells
    before = os.stat(wav[2])
    sf.write(wav[2], noise_audio(utts[2].duration, seed=8), 16000)
    os.utime(wav[2], ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(wav[2]).st_size == before.st_size
    with pytest.warns(UserWarning, match="1 utterances re-scored: audio changed"):
        evaluate(model, utts, Setting("group", 2), out, progress=False)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        again = evaluate(model, utts, Setting("group", 2), out, progress=False)
    assert not [w for w in said if "re-scored" in str(w.message)]  # nothing changed: nothing re-scored, nothing said
    assert len(rec.read_text().splitlines()) == 5 and again["utterances"] == 3

    # records written before the audio was recorded with them cannot be checked: re-scored, and said so
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    rec.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "audio"}) + "\n" for r in lines))
    with pytest.warns(UserWarning, match="3 utterances re-scored: their records predate audio identity"):
        evaluate(model, utts, Setting("group", 2), out, progress=False)


def test_resume_refuses_other_settings_and_repairs_a_torn_line(tmp_path, make_model, corpus):
    """A folder's records are reused only for the settings that made them (k, φ, mode, data, --limit, model by
    content); a mismatch is a one-line error, never the old numbers under a new title."""
    model = make_model(160)
    out = tmp_path / "e"
    evaluate(model, corpus, Setting("group", 3), out, progress=False)
    for other, what in [(dict(setting=Setting("group", 5)), "k=5"), (dict(setting=Setting("group", 3, 0.5)), "phi=0.5"),
                        (dict(utts=corpus[:2]), "data: "), (dict(model=make_model(160, seed=1)), "model: ")]:
        kw = {**dict(model=model, utts=corpus, setting=Setting("group", 3)), **other}
        with pytest.raises(ValueError, match=f"holds results of other settings .*{what}"):
            evaluate(kw["model"], kw["utts"], kw["setting"], out, progress=False)
    # the encoder's compute dtype decides the records too, either way round; a folder written before the key
    # existed holds float32's results
    import torch

    key = json.loads((out / "settings.json").read_text())
    assert key.pop("encoder_dtype") == "float32"
    (out / "settings.json").write_text(json.dumps(key))

    model.encoder.compute_dtype = torch.bfloat16
    try:
        with pytest.raises(ValueError, match="holds results of other settings .*encoder_dtype: float32 -> bfloat16"):
            evaluate(model, corpus, Setting("group", 3), out, progress=False)
        bf = evaluate(model, corpus, Setting("group", 3), tmp_path / "bf16", progress=False)
    finally:
        model.encoder.compute_dtype = None
    assert bf["encoder_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="encoder_dtype: bfloat16 -> float32"):
        evaluate(model, corpus, Setting("group", 3), tmp_path / "bf16", progress=False)
    # a kill mid-write leaves half a line: it is dropped (with a warning naming the file) and evaluated again
    rec = out / "records.jsonl"
    lines = rec.read_text().splitlines(keepends=True)
    rec.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    with pytest.warns(UserWarning, match="records.jsonl: dropped a torn last line"):
        s = evaluate(model, corpus, Setting("group", 3), out, progress=False)
    assert len(rec.read_text().splitlines()) == 3 and s["utterances"] == 3
    # results from before settings were recorded are not trusted either
    (out / "settings.json").unlink()
    with pytest.raises(ValueError, match="without their settings"):
        evaluate(model, corpus, Setting("group", 3), out, progress=False)


def test_sweep_tables_plots_and_resume(tmp_path, make_model, corpus):
    model = make_model(160)
    calls = []

    def load(mode):
        calls.append(mode)
        return model

    cells = grid(["group", "batch-kv"], [1, 2], [0.0], [None])
    rows = run_sweep(load, corpus, cells, tmp_path / "sw", progress=False)
    assert len(rows) == 4 and len(calls) == 4
    for f in ("results.csv", "results.json", "results.md", "wer_vs_k.png", "wer_vs_laal.png"):
        assert (tmp_path / "sw" / f).stat().st_size > 0
    table = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert {(t["mode"], t["k"]) for t in table} == {("group", 1), ("group", 2), ("batch-kv", 1), ("batch-kv", 2)}
    assert "| group | 1 |" in (tmp_path / "sw" / "results.md").read_text()
    # a killed sweep: remove one cell's summary; the rerun streams nothing again (every record is there)
    (tmp_path / "sw" / "cells" / "group-k2-phi0" / "summary.json").unlink()
    before = {p: p.read_text() for p in (tmp_path / "sw" / "cells").glob("*/records.jsonl")}
    rows2 = run_sweep(load, corpus, cells, tmp_path / "sw", progress=False)
    assert {p: p.read_text() for p in (tmp_path / "sw" / "cells").glob("*/records.jsonl")} == before
    assert (tmp_path / "sw" / "cells" / "group-k2-phi0" / "summary.json").exists()
    assert [r["wer"] for r in rows2] == [r["wer"] for r in rows]


def test_eval_cli_on_manifest(tmp_path, make_model, corpus, capsys):
    from asr_stream.cli.evaluation import eval_cmd
    from asr_stream.cli.options import EvalStreamOptions

    model_dir = make_model(160).save(tmp_path / "model")
    manifest = write_manifest(corpus, tmp_path / "m.jsonl")
    s = eval_cmd(str(manifest), EvalStreamOptions(model=str(model_dir), k=2), output=str(tmp_path / "out"))
    assert s["utterances"] == 3
    assert "WER" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown mode"):
        Setting("zigzag").stream_config()
    assert np.isfinite(s["rtf"])


def test_eval_refuses_and_announces_a_chunk_override_as_transcribe_does(tmp_path, make_model, corpus, capsys):
    """eval loads its model through asr_stream.loading, as transcribe does: a chunk over 4x the trained one is a
    one-line error before any work, and any other length than the trained one is announced."""
    from asr_stream.cli import main

    model_dir = make_model(160).save(tmp_path / "model")
    manifest = write_manifest(corpus, tmp_path / "m.jsonl")
    with pytest.raises(SystemExit) as e:
        main(["eval", "--data", str(manifest), "--model", str(model_dir), "--chunk-ms", "800", "--output", str(tmp_path / "no")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err == ["asr-stream: error: --chunk-ms 800: more than 4x the 160 ms the model was "
                                         "trained with (it would read most utterances in one chunk)"]
    assert not (tmp_path / "no").exists()
    main(["eval", "--data", str(manifest), "--model", str(model_dir), "--chunk-ms", "320", "--output", str(tmp_path / "out")])
    assert ("asr-stream: warning: streaming differently from how the model was trained: chunk_ms=320 (trained: 160)"
            in capsys.readouterr().err)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["setting"]["chunk_ms"] == 320


@pytest.mark.filterwarnings("ignore:--encoder-dtype bfloat16:UserWarning")  # a CPU without bfloat16 instructions
def test_sweep_takes_the_encoder_dtype(tmp_path, make_model, corpus):
    from asr_stream.cli import main

    model_dir = make_model(160).save(tmp_path / "model")
    manifest = write_manifest(corpus, tmp_path / "m.jsonl")
    main(["sweep", "--data", str(manifest), "--output", str(tmp_path / "sw"), "--model", str(model_dir), "--ks", "2",
          "--encoder-dtype", "bfloat16"])
    [cell] = (tmp_path / "sw" / "cells").glob("*/summary.json")
    assert json.loads(cell.read_text())["encoder_dtype"] == "bfloat16"


def test_word_alignments_give_pr50_pr90(tmp_path, make_model, corpus):
    timed = [Utterance(u.id, u.audio_path, u.text, u.duration, words=tuple(
        WordTiming(w, 0.1 * i, 0.1 * (i + 1)) for i, w in enumerate(u.text.split()))) for u in corpus]
    evaluate(make_model(160), timed, Setting("group", 2), tmp_path / "c", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "c" / "records.jsonl").read_text().splitlines()]
    assert [r["ref_word_end_ms"] for r in recs] == [[100.0 * (i + 1) for i in range(len(u.text.split()))]
                                                    for u in corpus]
    untimed = evaluate(make_model(160), corpus, Setting("group", 2), tmp_path / "d", progress=False)
    assert untimed["PR_words"] == 0 and np.isnan(untimed["PR50"])

    # the summary pools the lags of every record that has word ends (a random model gets few words right,
    # so the pooling is checked on records made by hand)
    base = {"audio_ms": 1000.0, "compute_s": 0.1}
    rows = [dict(base, id="a", reference="ONE TWO", hypothesis="ONE TWO", ref_word_end_ms=[200.0, 500.0],
                 words=[{"text": "ONE", "time_ms": 320.0}, {"text": "TWO", "time_ms": 640.0}]),
            dict(base, id="b", reference="THREE FOUR", hypothesis="THREE", ref_word_end_ms=[300.0, 900.0],
                 words=[{"text": "THREE", "time_ms": 960.0}]),
            dict(base, id="c", reference="FIVE", hypothesis="FIVE", words=[{"text": "FIVE", "time_ms": 10.0}])]
    s = summarize(rows)  # lags 120, 140, 660; record c has no alignment and adds none
    assert s["PR_words"] == 3 and s["PR50"] == pytest.approx(140.0) and s["PR_mean"] == pytest.approx(920 / 3)
    with pytest.raises(ValueError, match="2 reference words but 1 word ends"):
        summarize([dict(rows[0], ref_word_end_ms=[200.0])])


def test_words_on_non_speech_are_counted_and_do_not_enter_the_latencies(capsys):
    """Utterances without reference words (a robustness set's non-speech clips): the words written on them are
    counted; latencies are means over the spoken utterances only (a word on silence lags behind nothing: its
    record's LAAL was a negative number that dragged the set's mean below zero); a set of non-speech alone says
    its WER is undefined instead of printing 'inf %'."""
    from asr_stream.cli.evaluation import _print_summary
    from asr_stream.evaluation.runner import summarize

    base = {"audio_ms": 1000.0, "compute_s": 0.1, "words": []}
    spoken = [dict(base, id="a", reference="ONE TWO", hypothesis="ONE TWO", lat_LAAL=400.0),
              dict(base, id="b", reference="THREE", hypothesis="THREE", lat_LAAL=600.0)]
    silent = [dict(base, id="s1", reference="", hypothesis="THE WORLD", lat_LAAL=-900.0),
              dict(base, id="s2", reference="", hypothesis="", lat_LAAL=float("nan"))]
    s = summarize(spoken + silent)
    assert s["LAAL"] == pytest.approx(500.0) and s["LAAL_ci"][0] >= 400.0
    assert (s["nonspeech_utterances"], s["nonspeech_with_words"], s["nonspeech_words"]) == (2, 1, 2)
    assert s["insertions"] == 2 and s["wer"] == pytest.approx(2 / 3)
    assert "nonspeech_words" not in summarize(spoken)
    only = summarize(silent)
    only.update(name="nonspeech", rtf=0.1)
    _print_summary(only)
    out = capsys.readouterr().out
    assert "2 words written on 1 of 2 utterances" in out and "WER undefined" in out and "inf" not in out


def test_sweep_with_policy_grid(tmp_path, make_model, corpus):
    """Policy parameters are a grid axis: wait-k cells per k, adaptive cells per grid point, all on one LAAL plot;
    each cell records its schedule (wait-k: rows before the end of the audio at lag k, + 1 per early EOS)."""
    from asr_stream.evaluation.sweep import policy_settings

    model = make_model(160, ctc_embed=True)
    words = [tuple(WordTiming(w, 0.1 * i, 0.1 * (i + 1)) for i, w in enumerate(u.text.split())) for u in corpus]
    timed = [Utterance(u.id, u.audio_path, u.text, u.duration, words=w) for u, w in zip(corpus, words)]
    cells = policy_settings(grid(["group"], [1, 2], [0.0], [None]), ["waitk", "ctc"],
                            {"ctc": {"threshold": [0.5, 1.0], "k_max": [3]}})
    assert [(c.policy, c.k, c.policy_args) for c in cells] == [
        ("waitk", 1, ()), ("waitk", 2, ()), ("ctc", None, (("k_max", 3.0), ("threshold", 0.5))),
        ("ctc", None, (("k_max", 3.0), ("threshold", 1.0)))]
    rows = run_sweep(lambda mode: model, timed, cells, tmp_path / "sw", progress=False)
    table = json.loads((tmp_path / "sw" / "results.json").read_text())
    # the adaptive cells' k_min is the model's smallest training k (this test model: trained with k = 3 only)
    assert [t["policy"] for t in table] == ["waitk", "waitk", "ctc-k_max3-k_min3-threshold0.5", "ctc-k_max3-k_min3-threshold1"]
    for row, k in zip(rows[:2], (1, 2)):  # wait-k: lag k, more only after an early EOS (k grows by one each)
        assert min(map(int, row["lag_share"])) == k and row["lag_share"][str(k)] > 0.5
    assert (tmp_path / "sw" / "wer_vs_laal.png").stat().st_size > 0
    assert not (tmp_path / "sw" / "wer_vs_pr90.png").exists()  # a random model gets no word right: no PR90
    from asr_stream.evaluation.sweep import _by, plot

    rows = [dict(r, PR90=100.0 * i) for i, r in enumerate(rows)]  # as a trained model's cells would have
    assert tmp_path / "sw" / "wer_vs_pr90.png" in plot(rows, tmp_path / "sw")
    assert {k: v[0] for k, v in _by([flat(r) for r in rows], "PR90").items()} == {"group waitk": [0.0, 100.0], "group ctc": [200.0, 300.0]}
    assert "ctc-k_max3-k_min3-threshold0.5" in (tmp_path / "sw" / "results.md").read_text()
    with pytest.raises(ValueError, match="unknown or unselected"):
        policy_settings(cells[:1], ["waitk"], {"ctc": {"threshold": [0.5]}})
