"""``eval --devices 2``: one evaluation over two processes through Lightning's DDP strategy (gloo on CPU), issue 30."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream.audio.io import load_audio
from asr_stream.data import Utterance, write_manifest

ROOT = Path(__file__).resolve().parents[2]
TEXT = "when it's dark enough you can see the stars"
# measured with the wall clock (and *_CA: computation-aware latencies): these differ between any two runs
TIMING = {"compute_s", "compute_ms", "rtf", "scored_by_rank"}


def corpus(tmp_path: Path) -> Path:
    """Five utterances of the bundled sample (shifted, quieter, twice, padded): different hypotheses and times."""
    s = load_audio(ROOT / "asr_stream" / "assets" / "sample.wav")
    z = lambda t: np.zeros(int(t * 16000), np.float32)  # noqa: E731
    waves = [s, np.concatenate([z(0.3), s]), 0.5 * s, np.concatenate([s, z(0.5), s]),
             np.concatenate([z(0.2), 0.8 * s, z(0.4)])]
    utts = []
    for i, w in enumerate(waves):
        sf.write(tmp_path / f"u{i}.wav", w, 16000)
        utts.append(Utterance(f"u{i}", tmp_path / f"u{i}.wav", TEXT if i != 3 else f"{TEXT} {TEXT}", len(w) / 16000))
    return write_manifest(utts, tmp_path / "m.jsonl")


def eval_2(manifest: Path, out: Path) -> dict:
    """`asr-stream eval --devices 2` (the bundled model) as a user runs it; its summary.json."""
    r = subprocess.run([sys.executable, "-m", "asr_stream", "eval", "--data", str(manifest), "--devices", "2",
                        "--output", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=280,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("percentile bootstrap over") == 1 and "Initializing distributed" not in r.stderr  # one table, from rank 0 only
    return json.loads((out / "summary.json").read_text())


def untimed(d) -> str:
    """A record or summary without its wall-clock fields, as JSON (NaN, a latency of no words, compares equal)."""
    def drop(d):
        if isinstance(d, dict):
            return {k: drop(v) for k, v in d.items() if k not in TIMING and "_CA" not in k}
        return [drop(v) for v in d] if isinstance(d, list) else d

    return json.dumps(drop(d), sort_keys=True)


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_two_processes_score_each_utterance_once_and_give_one_process_table(tmp_path):
    """Two processes: each of the five utterances scored by exactly one of them, the records and the table equal to
    one process's but for wall-clock fields. A folder a one-process run left with two records is resumed by two
    processes: only the other three are scored, and the table is again the same."""
    from asr_stream.cli.evaluation import eval_cmd

    manifest = corpus(tmp_path)
    eval_cmd(str(manifest), output=str(tmp_path / "one"))
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = eval_2(manifest, tmp_path / "two")
    assert sorted(two["scored_by_rank"]) == [2, 3]
    recs = lines(tmp_path / "two")
    assert [r["id"] for r in recs] == [f"u{i}" for i in range(5)]  # each once, in corpus order
    assert untimed(recs) == untimed(lines(tmp_path / "one"))
    assert untimed(two) == untimed(one)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["records.jsonl", "settings.json", "summary.json"]
    assert len({r["hypothesis"] for r in recs}) >= 3 and 0 < one["wer"] < 1

    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(tmp_path / "one" / "settings.json", part)
    (part / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines(tmp_path / "one")[:2]))
    resumed = eval_2(manifest, part)
    assert sorted(resumed["scored_by_rank"]) == [1, 2]
    assert [r["id"] for r in lines(part)] == [f"u{i}" for i in range(5)]
    assert untimed(resumed) == untimed(one)


@pytest.mark.timeout(600)
def test_each_process_keeps_its_records_as_it_goes(tmp_path):
    """A two-process run killed after rank 0 scored u0 and rank 1 scored u1 (their predict_step, in this process; the
    kill is that nothing more runs): each record is already on disk, in that rank's own file. The next run, two
    processes, scores only the other three, and its records and table are one process's."""
    from asr_stream.cli.evaluation import eval_cmd
    from asr_stream.cli.options import StreamOptions
    from asr_stream.data import read_corpus
    from asr_stream.evaluation.distributed import EvalModule
    from asr_stream.evaluation.runner import Setting, open_records

    manifest = corpus(tmp_path)
    eval_cmd(str(manifest), output=str(tmp_path / "one"))
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    utts, m, out = read_corpus(str(manifest)), StreamOptions().load(), tmp_path / "killed"
    for rank, i in ((0, 0), (1, 1)):
        module = type("Rank", (EvalModule,), {"global_rank": rank})(m, utts, Setting(), out, "auto")
        if rank == 0:  # rank 0 opens the folder (its settings) before anyone scores
            open_records(out, m, utts, module.cfg, module.setting, "auto")
        module.predict_step(i)
    kept = sorted(p.name for p in out.glob("records*.jsonl"))
    resumed = eval_2(manifest, out)
    assert kept == ["records.rank0.jsonl", "records.rank1.jsonl"]
    assert sorted(resumed["scored_by_rank"]) == [1, 2]
    assert [r["id"] for r in lines(out)] == [f"u{i}" for i in range(5)]
    assert untimed(lines(out)) == untimed(lines(tmp_path / "one")) and untimed(resumed) == untimed(one)
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl", "settings.json", "summary.json"]


def test_bad_process_counts_are_one_line_errors(tmp_path, capsys):
    from asr_stream.cli import main

    manifest = corpus(tmp_path)
    for flag, bad in (("--devices", "0"), ("--num-nodes", "-1")):
        with pytest.raises(SystemExit) as e:
            main(["eval", "--data", str(manifest), flag, bad])
        assert e.value.code == 2
        assert capsys.readouterr().err == f"asr-stream: error: {flag} must be a whole number >= 1, got {bad}\n"


@pytest.mark.timeout(300)
def test_a_bad_file_in_one_process_is_a_one_line_error_and_the_rest_is_kept(tmp_path):
    """u3 (rank 1's share) holds NaN samples: the run stops with one error line naming it and exit 2 (no process waits
    for it for ever), and the records of the other four are written, so a rerun scores only what is left."""
    manifest = corpus(tmp_path)
    bad = np.full(16000, np.nan, np.float32)  # a valid header (the manifest check passes), samples that are not
    sf.write(tmp_path / "u3.wav", bad, 16000, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "asr_stream", "eval", "--data", str(manifest), "--devices", "2",
                        "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=280,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"asr-stream: error: {tmp_path / 'u3.wav'}: "), r.stderr[-3000:]
    assert [x["id"] for x in lines(tmp_path / "out")] == ["u0", "u1", "u2", "u4"]
