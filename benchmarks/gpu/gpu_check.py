#!/usr/bin/env python
"""GPU readiness check of the real-scale path: Phi-3-mini + HuBERT-large in bf16, random weights, no download.

One script, meant to finish in under 8 minutes on one GPU (an H200 was the target), that runs what
conf/phi3_librispeech.yaml runs, at its real sizes:

- models: a random HuBERT-large-sized encoder (hidden 1024, 24 layers, 16 heads, FFN 4096, the standard
  7-layer conv front end: 20 ms frames) and a random Phi-3-mini (hidden 3072, 32 layers, 32 heads, FFN 8192,
  vocabulary 32,064) built on the device in bfloat16 by tools/model/make_tiny_twin.py and saved to a temporary
  folder, then loaded as the config loads them (``from_pretrained`` of a directory, decoder dtype bfloat16,
  LoRA r = 16 on the decoder, frozen encoder, the same projector and prompt) -> section ``load``: time and
  memory (``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS);
- ``train``: LoRA training steps (AdamW on the trainable weights, bf16 autocast as ``bf16-mixed``) on batches
  of ``--train-batch`` utterances holding ``--train-seconds`` of audio in all (60 s), group layout, k drawn
  from the config's set: step time (median) and peak memory;
- ``stream``: one utterance of 60 s and one of 120 s streamed one 320 ms chunk per push in group,
  interleaved and batch + KV re-encoding, with a forced transcript of one word per chunk (as
  benchmarks/streaming/streaming.py, whose helpers it uses): per-chunk latency p50 / p95 (synchronised), RTF,
  decoder positions computed, decoder KV bytes, peak memory;
- ``batched``: ``BatchedStreams`` at 1, 8 and 64 streams of ``--batched-seconds`` each (group, serving rounds of
  one chunk per stream): audio seconds per second, decoder steps, PAD share, peak memory.

The JSON (``--output``) is rewritten after every measurement, so a run stopped by a time limit keeps what it
finished. ``--tiny`` runs the same code with tiny models and short audio on the CPU in seconds (the test).

    python benchmarks/gpu/gpu_check.py --device cuda --output benchmarks/results/gpu_check.json
    python benchmarks/gpu/gpu_check.py --tiny --device cpu --output /tmp/gpu_check_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "benchmarks" / "streaming", ROOT / "tools" / "model"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import make_tiny_twin as twin  # noqa: E402
import streaming as bench  # noqa: E402

from asr_stream.config import DecoderConfig, EncoderConfig, ModelConfig, ProjectorConfig  # noqa: E402
from asr_stream.model import Batch, SpeechLLM  # noqa: E402

# (real, tiny) settings; the real ones are conf/phi3_librispeech.yaml's
SIZES = {
    False: dict(hubert=twin.HUBERT_LARGE, phi3=twin.PHI3_MINI, projector_hidden=2048, vocab=1000,
                stream_seconds=[60.0, 120.0], train_seconds=60.0, batched_seconds=20.0),
    True: dict(hubert=twin.TINY_HUBERT, phi3=twin.TINY_PHI3, projector_hidden=128, vocab=200,
               stream_seconds=[3.0, 6.0], train_seconds=4.0, batched_seconds=1.5),
}
STREAM_MODES = ["group", "interleaved", "batch-kv"]


class Report:
    """The JSON result, written again (atomically) after every measurement."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=float))
        os.replace(tmp, self.path)


class Memory:
    """Peak memory of the device since the last reset: CUDA's allocator, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        if self.cuda:
            torch.cuda.synchronize()
            return {"max_memory_allocated_GiB": torch.cuda.max_memory_allocated() / 2**30,
                    "memory_allocated_GiB": torch.cuda.memory_allocated() / 2**30}
        # ru_maxrss is in KiB on Linux; it never decreases, so on CPU it is the peak of the whole run so far
        return {"peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def model_config(dirs: dict, projector_hidden: int) -> ModelConfig:
    """conf/phi3_librispeech.yaml's model section, with the directories written here."""
    return ModelConfig(
        encoder=EncoderConfig(kind="hf", hf_name_or_path=str(dirs["hubert"]), chunk_ms=320, hf_left_context_ms=960,
                              freeze=True),
        projector=ProjectorConfig(stack=4, hidden=projector_hidden),
        decoder=DecoderConfig(name_or_path=str(dirs["phi3"]), lora_r=16, lora_alpha=32, freeze=True, dtype="bfloat16"),
        prompt="Transcribe the speech:", ctc_weight=0.0, train_mode="group", train_k=(1, 3, 5, 7), phi=0.0)


def build(work: Path, device: torch.device, sizes: dict) -> tuple[dict, dict]:
    """Random models of the real sizes written as hub-style directories (built on ``device``)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    tok = twin.train_word_start_tokenizer(bench.sentences(3000, seed=1), sizes["vocab"])
    dirs = {"hubert": twin.make_hubert(work / "hubert", device=str(device), **sizes["hubert"]),
            "phi3": twin.make_phi3(work / "phi3", tok, device=str(device), **sizes["phi3"])}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dirs, {"build_and_save_s": time.perf_counter() - t0, "tokenizer_tokens": len(tok)}


def load_section(dirs: dict, sizes: dict, device: torch.device, mem: Memory) -> tuple[SpeechLLM, dict]:
    mem.reset()
    t0 = time.perf_counter()
    model = SpeechLLM(model_config(dirs, sizes["projector_hidden"])).to(device).eval()
    mem.sync()
    load_s = time.perf_counter() - t0
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    out = {"load_s": load_s, "llm_dtype": str(model.llm_dtype), "encoder_dtype": str(next(model.encoder.parameters()).dtype),
           "params": {"encoder": count(model.encoder), "projector": count(model.projector), "llm": count(model.llm),
                      "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)},
           "vocab_rows": model.llm.config.vocab_size, "chunk_ms": model.chunk_ms,
           "embeds_per_chunk": model.embeds_per_chunk, **mem.peak()}
    return model, out


def train_section(model: SpeechLLM, sizes: dict, args, device: torch.device, mem: Memory, report: Report) -> dict:
    """LoRA steps on batches holding train_seconds of audio (train_batch utterances of equal length)."""
    n = args.train_batch
    per = sizes["train_seconds"] / n
    utts = [bench.utterance(model, per, 1000.0 / model.chunk_ms, seed=900 + i) for i in range(n)]
    waves = torch.from_numpy(np.stack([u[0] for u in utts]))
    batch = Batch(waves, torch.full((n,), waves.shape[1]), [u[1] for u in utts])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()  # as Lightning does at fit time
    rng = random.Random(0)
    out = {"batch_utterances": n, "audio_s_per_batch": n * waves.shape[1] / 16000,
           "target_tokens_per_batch": sum(len(u[1]) for u in utts), "steps": [], "trainable_params": sum(p.numel() for p in params)}
    mem.reset()
    for step in range(args.train_steps + 1):  # step 0: warm-up (kernels, allocator), not in the median
        k = rng.choice(model.cfg.train_k)
        mem.sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(batch, mode="group", k=k).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        mem.sync()
        out["steps"].append({"k": k, "step_s": time.perf_counter() - t0, "loss": float(loss.detach())})
        out.update(mem.peak())
        report.data["train"] = out
        report.save()
    times = [s["step_s"] for s in out["steps"][1:]]
    out["step_s_median"] = statistics.median(times)
    out["audio_s_per_s"] = out["audio_s_per_batch"] / out["step_s_median"]
    del opt
    model.eval()
    for p in params:
        p.grad = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def stream_section(model: SpeechLLM, sizes: dict, args, mem: Memory, report: Report) -> dict:
    out: dict = {"k": args.k, "words_per_s": 1000.0 / model.chunk_ms, "utterances": []}
    report.data["stream"] = out
    with torch.inference_mode():
        w, t, _ = bench.utterance(model, 2.0, out["words_per_s"], seed=1)
        bench.stream_once(model, w, t, "group", args.k, mem.sync)  # warm-up
        for di, seconds in enumerate(sizes["stream_seconds"]):
            wave, tokens, n_words = bench.utterance(model, seconds, out["words_per_s"], seed=100 + di)
            audio_s = len(wave) / 16000
            d = {"audio_s": audio_s, "chunks": len(wave) // model.chunk_samples, "words": n_words, "tokens": len(tokens),
                 "modes": {}}
            out["utterances"].append(d)
            for name in args.modes:
                mem.reset()
                r = bench.stream_once(model, wave, tokens, name, args.k, mem.sync)
                pc = [1e3 * x for x in r["per_chunk"]]
                d["modes"][name] = {"total_s": r["total"], "rtf": r["total"] / audio_s, "chunk_ms_p50": percentile(pc, 50),
                                    "chunk_ms_p95": percentile(pc, 95), "chunk_ms_max": max(pc), "finish_ms": 1e3 * r["finish"],
                                    "decoder_positions": r["positions"], "decoder_kv_bytes": r["kv_bytes"], **mem.peak()}
                report.save()
                print(f"  stream {audio_s:5.1f} s {name:>11}: RTF {r['total'] / audio_s:.4f}, chunk p50 "
                      f"{percentile(pc, 50):.1f} ms p95 {percentile(pc, 95):.1f} ms, {r['positions']} positions", flush=True)
    return out


def batched_section(model: SpeechLLM, sizes: dict, args, mem: Memory, report: Report) -> list:
    out: list = []
    report.data["batched"] = out
    wps = 1000.0 / model.chunk_ms
    with torch.inference_mode():
        for n in args.streams:
            base = sizes["batched_seconds"]
            lens = [base] if n == 1 else [base * (0.75 + 0.5 * i / (n - 1)) for i in range(n)]
            utts = [bench.utterance(model, s, wps, seed=500 + i) for i, s in enumerate(lens)]
            waves, forced = [u[0] for u in utts], [u[1] for u in utts]
            audio = sum(len(w) for w in waves) / 16000
            mem.reset()
            b = bench.batched_once(model, waves, forced, args.k, True, mem.sync)
            out.append({"streams": n, "audio_s": audio, "compute_s": b["total"], "audio_s_per_s": audio / b["total"],
                        "decoder_steps": b["steps"], "pad_share": b["pad_positions"] / (b["pad_positions"] + b["positions"]),
                        "encoder_batch": b["encoder_chunks"] / b["encoder_calls"], **mem.peak()})
            report.save()
            print(f"  batched {n:3d} streams: {audio / b['total']:.1f} audio s / s", flush=True)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models and short audio (CPU, seconds): a smoke test")
    p.add_argument("--output", type=Path, required=True, help="JSON file to write (rewritten after every measurement)")
    p.add_argument("--work", type=Path, help="folder for the model directories (default: a temporary one, removed)")
    p.add_argument("--sections", nargs="+", default=["train", "stream", "batched"], choices=["train", "stream", "batched"],
                   help="what to run after loading (default: all)")
    p.add_argument("--train-steps", type=int, default=5, help="timed training steps after one warm-up (default 5)")
    p.add_argument("--train-batch", type=int, default=4, help="utterances per training batch (default 4 x 15 s)")
    p.add_argument("--modes", nargs="+", default=STREAM_MODES, choices=list(bench.MODES), help="streaming modes")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8, 64], help="BatchedStreams sizes (default 1 8 64)")
    p.add_argument("--k", type=int, default=3, help="wait-k in chunks (default 3)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"gpu_check: error: --device {args.device!r} is not a torch device", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: error: --device {args.device} requested but CUDA is not available "
              f"(torch {torch.__version__}); use --device cpu with --tiny", file=sys.stderr)
        return 2
    if not args.output.parent.is_dir():
        print(f"gpu_check: error: --output {args.output}: folder {args.output.parent} does not exist", file=sys.stderr)
        return 2
    sizes = SIZES[args.tiny]
    t_start = time.perf_counter()
    report = Report(args.output, {
        "command": "python benchmarks/gpu/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "tiny": args.tiny, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "sizes": {"hubert": sizes["hubert"], "phi3": sizes["phi3"]}, "done": []})
    mem = Memory(device)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print(f"building random models ({'tiny' if args.tiny else 'Phi-3-mini + HuBERT-large sizes'}) in {work}", flush=True)
        dirs, built = build(work, device, sizes)
        model, loaded = load_section(dirs, sizes, device, mem)
        report.data["load"] = {**built, **loaded}
        report.data["done"].append("load")
        report.save()
        print(f"  loaded: {loaded['params']['llm'] / 1e9:.2f} B decoder + {loaded['params']['encoder'] / 1e6:.0f} M encoder "
              f"parameters in {loaded['load_s']:.1f} s; {json.dumps({k: v for k, v in loaded.items() if 'GiB' in k})}",
              flush=True)
        if "train" in args.sections:
            t = train_section(model, sizes, args, device, mem, report)
            report.data["train"] = t
            report.data["done"].append("train")
            report.save()
            print(f"  train: {t['step_s_median']:.3f} s per step of {t['audio_s_per_batch']:.0f} s of audio", flush=True)
        if "stream" in args.sections:
            report.data["stream"] = stream_section(model, sizes, args, mem, report)
            report.data["done"].append("stream")
            report.save()
        if "batched" in args.sections:
            report.data["batched"] = batched_section(model, sizes, args, mem, report)
            report.data["done"].append("batched")
            report.save()
    report.data["wall_s"] = time.perf_counter() - t_start
    report.save()
    print(f"wrote {args.output} ({report.data['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
