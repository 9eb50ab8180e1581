"""The streaming benchmark runs end to end on a test-sized model and its counts are consistent."""

import json

import torch

from asr_stream import presets
from asr_stream.decoder import train_bpe
from asr_stream.model import SpeechLLM

from ..conftest import import_script


def test_benchmark_smoke(tmp_path):
    bench = import_script("benchmarks/streaming", "streaming")
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


def test_serve_benchmark_decides_held_by_the_median_of_repeats():
    """benchmarks/serving/serve.py --repeats: one row per (scheduler, count); held means the median p95 is <= 1 s, so one
    slow or fast run near the limit does not decide it; --grid gives one scheduler its own counts."""
    import pytest

    bench = import_script("benchmarks/serving", "serve")

    def run(sched, n, p95):
        return {"scheduler": sched, "clients": n, "words": 10 * n, "p50_ms": p95 / 2, "p95_ms": p95, "max_ms": p95 + 1}

    rows = bench.summarize([run("batched", 40, 900), run("batched", 40, 2500), run("batched", 40, 950),
                            run("batched", 44, 700), run("batched", 44, 1100), run("batched", 44, 1200),
                            run("per-client", 12, 800)])
    by = {(r["scheduler"], r["clients"]): r for r in rows}
    assert by[("batched", 40)]["held"] and by[("batched", 40)]["p95_ms"] == 950  # one slow run: still held
    assert not by[("batched", 44)]["held"] and by[("batched", 44)]["p95_each_ms"] == [700, 1100, 1200]  # one fast run: not
    assert by[("per-client", 12)]["repeats"] == 1 and by[("per-client", 12)]["held"]
    assert bench.parse_grids([4], ["per-client=10,12"], ["batched", "per-client"]) == {"batched": [4], "per-client": [10, 12]}
    with pytest.raises(SystemExit, match="SCHED=N"):
        bench.parse_grids([4], ["percilent=10"], ["batched", "per-client"])
