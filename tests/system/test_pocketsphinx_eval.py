"""tools/baselines/pocketsphinx_eval.py: a one-line skip without pocketsphinx; with it, records and the shared WER."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ..sysdeps import needs

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "baselines" / "pocketsphinx_eval.py"


def _manifest(tmp_path: Path) -> Path:
    from asr_stream.data import Utterance, write_manifest
    from asr_stream.corpus.synth import speak

    utts = []
    for i, text in enumerate(["the cat sat on the mat.", ""]):
        p = tmp_path / f"u{i}.flac"
        audio = speak(text, "en-us", 150, 50)[0] if text else np.zeros(32000, np.float32)
        sf.write(str(p), audio, 16000)
        utts.append(Utterance(f"u{i}", p, text.upper().rstrip("."), len(audio) / 16000))
    return write_manifest(utts, tmp_path / "m.jsonl")


def test_skips_in_one_line_without_pocketsphinx(tmp_path: Path) -> None:
    code = ("import sys, runpy; sys.modules['pocketsphinx'] = None; "
            f"sys.argv = ['x', 'a=nothing.jsonl', '--output', {str(tmp_path / 'o')!r}]; "
            f"runpy.run_path({str(TOOL)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip().count("\n") == 0
    assert "skipped: pocketsphinx is not installed" in r.stdout and not (tmp_path / "o").exists()


@needs("espeak-ng")
@pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None,
                    reason="pocketsphinx is not installed (the dev extra has it: make install)")
def test_scores_with_the_shared_normalisation(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    ours = tmp_path / "ours" / "set"
    ours.mkdir(parents=True)
    (ours / "summary.json").write_text(json.dumps({"wer": 0.25, "ref_words": 6}))
    r = subprocess.run([sys.executable, str(TOOL), f"set={m}", "--output", str(tmp_path / "ps"), "--ours",
                        str(tmp_path / "ours")], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in (tmp_path / "ps" / "set" / "records.jsonl").read_text().splitlines()]
    assert [x["id"] for x in recs] == ["u0", "u1"] and recs[1]["reference"] == ""
    summary = json.loads((tmp_path / "ps" / "set" / "summary.json").read_text())
    from asr_stream.evaluation.wer import wer_details

    want = wer_details([x["reference"] for x in recs], [x["hypothesis"] for x in recs])
    assert summary["wer"] == want["wer"] and summary["ref_words"] == 6
    assert summary["words_output"] == sum(len(x["hypothesis"].split()) for x in recs)
    assert "| set | 2 | 6 |" in r.stdout and "| 25.0 |" in r.stdout
