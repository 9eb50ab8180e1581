"""The robustness test set: each condition is what it says, non-speech has empty transcripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream.data import Utterance, WordTiming, read_manifest
from asr_stream.corpus.robust import CONDITIONS, LEAD_SILENCE_S, make_robustness_set

SR = 16_000
REPO = Path(__file__).resolve().parents[2]


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))


def _source(tmp_path: Path, n: int = 2) -> list[Utterance]:
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        t = np.arange(SR) / SR
        x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 6000 * t) + 0.001 * rng.standard_normal(SR))
        p = tmp_path / "src" / f"u{i}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), x.astype(np.float32), SR)
        utts.append(Utterance(f"u{i}", p, "HELLO WORLD", 1.0, "s", (WordTiming("HELLO", 0.1, 0.4), WordTiming("WORLD", 0.5, 0.9))))
    return utts


def test_conditions(tmp_path: Path) -> None:
    src = _source(tmp_path)
    out = tmp_path / "robust"
    manifests = make_robustness_set(src, out, seed=1)
    assert sorted(manifests) == sorted(CONDITIONS)
    sets = {c: read_manifest(m) for c, m in manifests.items()}
    clean = sf.read(str(sets["clean"][0].audio_path), dtype="float32")[0]
    lead = sf.read(str(sets["lead-silence"][0].audio_path), dtype="float32")[0]
    n = int(LEAD_SILENCE_S * SR)
    assert not lead[:n].any() and np.allclose(lead[n:], clean, atol=1e-4)
    quiet = sf.read(str(sets["gain-20db"][0].audio_path), dtype="float32")[0]
    assert _db(quiet) - _db(clean) == pytest.approx(-20.0, abs=0.05)
    narrow, rate = sf.read(str(sets["8khz"][0].audio_path), dtype="float32")
    assert rate == 8000 and len(narrow) == SR // 2
    noisy = sf.read(str(sets["noise-snr10"][0].audio_path), dtype="float32")[0]
    assert _db(clean) - _db(noisy - clean) == pytest.approx(10.0, abs=0.2)
    assert all(u.text == "HELLO WORLD" for c in CONDITIONS if c != "nonspeech" for u in sets[c])
    non = sets["nonspeech"]
    assert len(non) >= 10 and all(u.text == "" for u in non)
    assert any("silence" in u.id for u in non) and any("white" in u.id for u in non)
    levels = [np.max(np.abs(sf.read(str(u.audio_path), dtype="float32")[0])) for u in non]
    assert min(levels) == 0.0 and max(levels) > 0.1
    with pytest.raises(ValueError, match="not empty"):  # never overwrites
        make_robustness_set(src, out)
    again = make_robustness_set(src, tmp_path / "again", seed=1)  # seeded: the same noise
    a = sf.read(str(read_manifest(again["noise-snr10"])[1].audio_path), dtype="int16")[0]
    b = sf.read(str(sets["noise-snr10"][1].audio_path), dtype="int16")[0]
    assert np.array_equal(a, b)


def test_tool_refuses_missing_input(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(REPO / "tools" / "corpus" / "make_robust_set.py"),
                        str(tmp_path / "none.jsonl"), str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "error" in r.stderr
