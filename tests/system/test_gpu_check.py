"""benchmarks/gpu/gpu_check.py runs on the CPU with --tiny, so the GPU script cannot rot between GPU runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ..conftest import import_script


def _gpu_check():
    return import_script("benchmarks/gpu", "gpu_check")


def test_gpu_check_tiny_writes_every_section(tmp_path):
    out = tmp_path / "gc.json"
    assert _gpu_check().main(["--tiny", "--device", "cpu", "--output", str(out), "--train-steps", "3"]) == 0
    r = json.loads(out.read_text())
    assert r["done"] == ["load", "train", "stream", "batched"] and r["tiny"] and r["wall_s"] > 0

    load = r["load"]
    assert load["llm_dtype"] == "torch.bfloat16" and load["embeds_per_chunk"] == 4 and load["chunk_ms"] == 320
    assert 0 < load["params"]["trainable"] < load["params"]["llm"] + load["params"]["projector"]
    assert load["peak_rss_GiB"] > 0

    train = r["train"]
    assert len(train["steps"]) == 4 and train["step_s_median"] > 0 and train["audio_s_per_batch"] >= 4
    losses = [s["loss"] for s in train["steps"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]  # the same batch: LoRA steps learn it
    assert all(s["k"] in (1, 3, 5, 7) for s in train["steps"])

    stream = r["stream"]["utterances"]
    assert len(stream) == 2 and stream[1]["audio_s"] > stream[0]["audio_s"]
    ratios = []
    for d in stream:
        m = d["modes"]
        assert set(m) == {"group", "interleaved", "batch-kv"}
        for v in m.values():
            assert 0 < v["chunk_ms_p50"] <= v["chunk_ms_p95"] <= v["chunk_ms_max"] and v["rtf"] > 0
        # group and interleaved compute each decoder position once: prompt + every chunk's embeddings + BOS and tokens
        assert m["group"]["decoder_positions"] == m["interleaved"]["decoder_positions"]
        assert m["group"]["decoder_positions"] >= d["chunks"] * load["embeds_per_chunk"] + d["tokens"] + 1
        ratios.append(m["batch-kv"]["decoder_positions"] / m["group"]["decoder_positions"])
    assert 1 < ratios[0] < ratios[1]  # KV re-encoding recomputes the prefix, more so the longer the audio

    batched = r["batched"]
    assert [b["streams"] for b in batched] == [1, 8, 64]
    for b in batched:
        assert b["audio_s_per_s"] > 0 and 0 <= b["pad_share"] < 1 and b["decoder_steps"] > 0


def test_gpu_check_keeps_finished_sections_and_refuses_missing_cuda(tmp_path, capsys):
    gc = _gpu_check()
    out = tmp_path / "gc.json"
    assert gc.main(["--tiny", "--device", "cpu", "--output", str(out), "--sections", "stream", "--modes", "group"]) == 0
    r = json.loads(out.read_text())
    assert r["done"] == ["load", "stream"] and "train" not in r and "batched" not in r
    if not torch.cuda.is_available():
        assert gc.main(["--tiny", "--device", "cuda", "--output", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "CUDA is not available" in err[0]
        assert not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):
        gc.main(["--tiny"])  # --output is required
