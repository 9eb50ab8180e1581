"""The tools that tabulate and plot eval results (tools/report/): WER per voice and engine, the ablation table over
models on the same utterances, the trajectory plot; on records written here. Their peer, wer_laal_plot.py:
test_wer_laal_plot.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_wer_by_voice_groups_records_by_voice_and_engine(tmp_path, capsys):
    """tools/report/wer_by_voice.py: each utterance goes to its speaker's voice (SPEAKERS.TXT) and that voice's engine."""
    import json

    from ..conftest import import_script

    tool = import_script("tools/report", "wer_by_voice")
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    corpus.mkdir()
    run.mkdir()
    (corpus / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET |MINUTES| NAME\n1000 | M | test | 0.1 | en-us\n"
                                         "2000 | F | test | 0.1 | mb-us1\n3000 | M | test | 0.1 | festival:ked_diphone\n")
    recs = [("1000-3-0000", "A B C D", "A B C D"), ("1000-3-0001", "E F", "E X"),
            ("2000-3-0002", "G H", ""), ("3000-3-0003", "I J", "I J K")]
    (run / "records.jsonl").write_text("".join(json.dumps({"id": i, "reference": r, "hypothesis": h}) + "\n" for i, r, h in recs))
    rows = dict(tool.table(corpus, [run]))
    assert rows["en-us"][0][0] == pytest.approx(100 / 6) and rows["en-us"][0][1:] == (2, 6)
    assert rows["mb-us1"][0][:2] == (100.0, 1) and rows["[mbrola]"][0][:2] == (100.0, 1)
    assert rows["[festival]"][0][:2] == (50.0, 1)
    assert rows["[all]"][0][0] == pytest.approx(40.0) and rows["[all]"][0][1:] == (4, 10)
    assert tool.main([str(corpus), str(run)]) == 0
    assert "| [all] | 40.0 (4) |" in capsys.readouterr().out


def write(d: Path, recs) -> None:
    """An eval folder's records.jsonl: (id, reference, hypothesis) per utterance."""
    d.mkdir(parents=True)
    (d / "records.jsonl").write_text("".join(json.dumps({"id": i, "reference": r, "hypothesis": h}) + "\n" for i, r, h in recs))


def test_ablation_table_scores_every_model_on_the_same_utterances(tmp_path, capsys):
    """tools/report/ablation_table.py: a cell uses the utterances all models have (the first --limit in the first model's
    order), finds <set> or <set>-k3 folders, splits test by engine, and counts words written on non-speech."""
    import json

    from ..conftest import import_script

    tool = import_script("tools/report", "ablation_table")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET |MINUTES| NAME\n1000 | M | test | 0.1 | en-us\n"
                                         "2000 | M | test | 0.1 | flite:awb\n")

    # model a: 3 test utterances; model b: only the first two (as if stopped early), in a <set>-k3 folder
    write(tmp_path / "a" / "test", [("1000-1-0000", "A B", "A B"), ("2000-1-0001", "C D", "C"), ("1000-1-0002", "E F", "X Y")])
    write(tmp_path / "b" / "test-k3", [("2000-1-0001", "C D", "C D"), ("1000-1-0000", "A B", "A Z")])
    write(tmp_path / "a" / "robust-nonspeech", [("n1", "", "AH AH"), ("n2", "", "")])
    lines = tool.table([("a", tmp_path / "a"), ("b", tmp_path / "b")], ["test", "robust-nonspeech"], None, corpus)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert rows["test (2)"] == "| test (2) | 25.0 (0/1/0) | 25.0 (1/0/0) |"  # utterance 0002 is left out: b lacks it
    assert rows["test, espeak voices (1)"] == "| test, espeak voices (1) | 0.0 (0/0/0) | 50.0 (1/0/0) |"
    assert rows["test, flite voices (1)"] == "| test, flite voices (1) | 50.0 (0/1/0) | 0.0 (0/0/0) |"
    assert rows["robust-nonspeech (2)"] == "| robust-nonspeech (2) | 2 words (1 of 2 clips) | – |"
    assert tool.table([("a", tmp_path / "a")], ["test"], 1, None)[2] == "| test (1) | 0.0 (0/0/0) |"  # --limit
    assert tool.main(["a=" + str(tmp_path / "a"), "--sets", "test"]) == 0
    assert "| test (3) | 50.0 (2/1/0) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="NAME=DIR"):
        tool.main([str(tmp_path / "a"), "--sets", "test"])


def test_ablation_table_plot(tmp_path):
    """--plot draws the table's numbers (WER and non-speech words) into a new PNG and never overwrites one."""
    import json

    from ..conftest import import_script

    tool = import_script("tools/report", "ablation_table")
    for m, hyp in (("a", "A B"), ("b", "A")):
        d = tmp_path / m / "test"
        d.mkdir(parents=True)
        (d / "records.jsonl").write_text(json.dumps({"id": "1-1-0", "reference": "A B", "hypothesis": hyp}) + "\n")
        d = tmp_path / m / "robust-nonspeech"
        d.mkdir(parents=True)
        (d / "records.jsonl").write_text(json.dumps({"id": "n", "reference": "", "hypothesis": hyp}) + "\n")
    values: dict = {}
    tool.table([("a", tmp_path / "a"), ("b", tmp_path / "b")], ["test", "robust-nonspeech"], None, None, values)
    assert values == {"test (1)": (False, [0.0, 50.0]), "robust-nonspeech (1)": (True, [2.0, 1.0])}
    png = tmp_path / "out" / "ablation.png"
    # b's sets in two folders (e.g. eval and eval-robust): NAME=DIR,DIR2 finds each in the first that has it
    (tmp_path / "b2").mkdir()
    (tmp_path / "b" / "robust-nonspeech").rename(tmp_path / "b2" / "robust-nonspeech")
    assert tool.find_run([tmp_path / "b", tmp_path / "b2"], "robust-nonspeech") == tmp_path / "b2" / "robust-nonspeech"
    args = ["a=" + str(tmp_path / "a"), f"b={tmp_path / 'b'},{tmp_path / 'b2'}", "--sets", "test,robust-nonspeech", "--plot", str(png)]
    assert tool.main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    before = png.read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        tool.main(args)
    assert png.read_bytes() == before


def test_ablation_table_takes_the_columns_of_an_earlier_table(tmp_path, capsys):
    """--earlier: a table whose eval folders are gone gives its columns first, copied by row label, and their
    numbers to the plot; a row it lacks is '-'; a file that is not such a table is refused."""
    from ..conftest import import_script

    tool = import_script("tools/report", "ablation_table")
    write(tmp_path / "a" / "test", [("1-1-0", "A B", "A B"), ("1-1-1", "C D", "C")])
    write(tmp_path / "a" / "robust-nonspeech", [("n", "", "AH AH AH")])
    assert tool.main(["a=" + str(tmp_path / "a"), "--sets", "test,robust-nonspeech"]) == 0
    old = tmp_path / "old.md"
    old.write_text(capsys.readouterr().out)
    write(tmp_path / "c" / "test", [("1-1-0", "A B", "X B"), ("1-1-1", "C D", "C D")])
    write(tmp_path / "c" / "robust-8khz", [("1-1-0", "A B", "A B")])
    values: dict = {}
    lines = tool.table([("c", tmp_path / "c")], ["test", "robust-nonspeech", "robust-8khz"], None, None, values,
                       tool.read_table(old))
    assert lines[0] == "| set (utterances) | a | c |"
    assert lines[2:] == ["| test (2) | 25.0 (0/1/0) | 25.0 (1/0/0) |",
                         "| robust-nonspeech (1) | 3 words (1 of 1 clips) | – |",  # c has no such set: '-' (copied)
                         "| robust-8khz (1) | – | 0.0 (0/0/0) |"]  # the earlier table has no such row
    assert values == {"test (2)": (False, [25.0, 25.0]), "robust-nonspeech (1)": (True, [3.0, None]),
                      "robust-8khz (1)": (False, [None, 0.0])}
    (tmp_path / "notes.md").write_text("| a | b |\n|---|---|\n")
    with pytest.raises(SystemExit, match="not a table of tools/report/ablation_table.py"):
        tool.read_table(tmp_path / "notes.md")


def test_trajectory_plot_scores_models_and_reference_on_the_same_utterances(tmp_path, capsys):
    """tools/report/trajectory_plot.py: per set, every model and the reference are scored on the utterances all of them
    have; the table has one row per model (steps, voices) plus the reference and the goal; the plot is a new file."""
    from ..conftest import import_script

    tool = import_script("tools/report", "trajectory_plot")

    write(tmp_path / "m0" / "test-kal", [("k1", "A B", "A"), ("k2", "C D", "X Y"), ("k3", "E F", "E F")])
    write(tmp_path / "m1" / "test-kal-k3", [("k1", "A B", "A B"), ("k2", "C D", "C Y")])
    write(tmp_path / "ps" / "test-kal", [("k2", "C D", "C D"), ("k1", "A B", "A B")])
    png = tmp_path / "t.png"
    args = [f"scratch:0:15={tmp_path / 'm0'}", f"ft:700:24={tmp_path / 'm1'}", "--sets", "test-kal",
            "--reference", f"PS={tmp_path / 'ps'}", "--goal", "30", "--output", str(png)]
    assert tool.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| # | model | fine-tuning steps | training voices | test-kal (2) |"  # k3: only m0 has it
    assert out[2:] == ["| 1 | scratch | 0 | 15 | 75.0 |", "| 2 | ft | 700 | 24 | 25.0 |", "| | PS | – | – | 0.0 |",
                       "| | goal | | | ≤ 30 |"]
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="exists"):
        tool.main(args)
    with pytest.raises(SystemExit, match="LABEL:STEPS:VOICES=DIR"):
        tool.main([f"ft:700={tmp_path / 'm1'}"])


def test_compare_evals_pairs_two_finished_runs(tmp_path, capsys):
    """tools/report/compare_evals.py: the paired difference of two eval folders (asr_stream.evaluation.stats.compare),
    refusing folders of other utterances and an existing --json file."""
    from ..conftest import import_script

    tool = import_script("tools/report", "compare_evals")
    refs = [(f"1-1-{i:04d}", "A B C D") for i in range(6)]
    write(tmp_path / "base", [(i, r, "A B C D") for i, r in refs])
    write(tmp_path / "run", [(i, r, "A B X D" if n < 3 else r) for n, (i, r) in enumerate(refs)])
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"wer": 3 / 24, "punct_f1": 0.5}))
    assert tool.main([str(tmp_path / "base"), str(tmp_path / "run"), "--json", str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())["runs"][0]
    assert c["wer_diff"] == pytest.approx(3 / 24) and c["worse"] == 3 and c["better"] == 0 and c["punct_f1"] == 0.5
    assert "+12.50 points" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists"):
        tool.main([str(tmp_path / "base"), str(tmp_path / "run"), "--json", str(tmp_path / "c.json")])
    write(tmp_path / "other", [("9-9-0000", "A", "A")])
    with pytest.raises(SystemExit, match="different utterances"):
        tool.main([str(tmp_path / "base"), str(tmp_path / "other")])
