"""The LibriSpeech recipe, end to end, on the tiny twin of conf/phi3_librispeech.yaml (recipes/librispeech/rehearse.sh):
synthetic LibriSpeech-layout corpus -> tiny HuBERT + Phi-3 directories -> run.sh stages 1-5 (manifests, one model per
training φ, export, eval, sweeps). About 4 minutes on 2 CPU cores."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..sysdeps import needs

ROOT = Path(__file__).resolve().parents[2]
PHIS = ("0", "256")
TESTS = ("test", "test-unseen-voice")


@pytest.mark.slow
@needs("espeak-ng")
def test_librispeech_recipe_runs_the_tiny_twin_end_to_end(tmp_path):
    from asr_stream.model import SpeechLLM

    work = tmp_path / "rehearsal"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(ROOT / "recipes/librispeech/rehearse.sh"), "--work", str(work)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = work / "exp"

    # stage 1: a manifest per split, every utterance of the corpus
    for split, n in (("train", 80), ("dev", 8), ("test", 8), ("test-unseen-voice", 8)):
        assert len((exp / "manifests" / f"{split}.jsonl").read_text().splitlines()) == n
    for phi in PHIS:
        run = exp / f"phi{phi}"
        # stage 2: the run's config is the tiny conf with the run's paths, its own φ and the twin's directories
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["model"]["model"]["phi"] == float(phi) and cfg["model"]["export_dir"] == str(run / "model")
        assert cfg["model"]["model"]["decoder"]["name_or_path"] == str(work / "twin" / "phi3")
        assert cfg["trainer"]["precision"] == "bf16-mixed"
        assert (run / "ckpt" / "last.ckpt").is_file()
        metrics = (run / "logs" / "csv" / "version_0" / "metrics.csv").read_text()
        assert "train/loss" in metrics and "val/ce" in metrics
        # stage 3: the exported model loads as the real config would: bf16 Phi-3 + LoRA, frozen HF encoder, its φ
        model = SpeechLLM.load(run / "export")
        assert str(model.llm_dtype) == "torch.bfloat16" and model.codec.style == "prefix"
        assert model.cfg.phi == float(phi) and model.cfg.encoder.kind == "hf" and model.cfg.decoder.lora_r == 16
        for split in TESTS:
            # stage 4: eval at k = 3 and the run's own φ
            s = json.loads((run / f"eval-{split}-k3" / "summary.json").read_text())
            assert s["utterances"] == 8 and math.isfinite(s["wer"]) and s["setting"]["phi"] == float(phi)
            assert len((run / f"eval-{split}-k3" / "records.jsonl").read_text().splitlines()) == 8
            # stage 5: k sweep at the run's φ
            rows = json.loads((run / f"sweep-{split}" / "results.json").read_text())
            assert [(r["k"], r["phi"]) for r in rows] == [(1, float(phi)), (3, float(phi))]
            assert all(math.isfinite(r["wer"]) for r in rows)
    for split in TESTS:
        table = (exp / f"phi-table-{split}.md").read_text()
        assert "one model trained per φ" in table and "phi0/export" in table and "phi256/export" in table
        rows = json.loads((exp / f"sweep-{split}-inference-phi" / "results.json").read_text())
        assert [r["phi"] for r in rows] == [0.0, 256.0]
    assert "INFERENCE φ only" in proc.stdout
