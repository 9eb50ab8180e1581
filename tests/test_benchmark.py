"""The streaming benchmark runs end to end on a test-sized model and its counts are consistent."""

import json

import torch

from asr_stream import presets
from asr_stream.decoder import train_bpe
from asr_stream.model import SpeechLLM

from .conftest import import_script


def test_benchmark_smoke(tmp_path):
    bench = import_script("benchmarks", "streaming")
    codec = train_bpe(bench.sentences(300, seed=1), vocab_size=200)  # covers the benchmark's pseudo-words
    torch.manual_seed(0)
    model_dir = SpeechLLM(presets.test_sized(320, ctc_embed=True), codec).save(tmp_path / "model")
    res = bench.main(["--model", str(model_dir), "--durations", "2", "--repeats", "1", "--streams", "1", "2",
                      "--no-memory", "--out", str(tmp_path / "out")])
    d = res["durations"][0]
    group, kv = d["modes"]["group"], d["modes"]["batch-kv"]
    assert group["positions"] == d["floor"]["positions"]  # group streaming computes each slot exactly once
    assert kv["positions"] > group["positions"]  # KV re-encoding recomputes
    assert d["chunked_floor"]["decoder_calls"] > 0
    assert [b["streams"] for b in res["batched"]] == [1, 2]
    saved = json.loads((tmp_path / "out" / "streaming.json").read_text())
    assert saved["durations"][0]["modes"]["group"]["positions"] == group["positions"]
    assert (tmp_path / "out" / "per_chunk_2s.png").exists()
