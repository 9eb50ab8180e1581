#!/usr/bin/env python
"""Streaming cost benchmark: does group streaming cost what one pass costs?

For utterances of several lengths, stream audio one chunk at a time through

- ``group``        group positions, wait-k mask, one KV cache, nothing re-encoded;
- ``interleaved``  arrival-order positions, causal mask, append only;
- ``batch-kv``     batch positions with KV re-encoding (the whole cache is rebuilt at every chunk),

with the same forced transcript (one word per chunk by default, ~3.1 words/s: see --words-per-s), so every
mode writes the same tokens and reads every chunk. Per mode: total
compute, compute per chunk (each ``push`` of one chunk, with the writes it triggers) at the start and
at the end, RTF, decoder positions computed, decoder KV-cache bytes and their growth per second of audio,
and the peak RSS growth (measured in a fresh process). The FLOOR is one pass of the same work: the
encoder (+ projector) over the whole utterance once, plus one masked decoder forward over the training
layout of the same utterance (the positions group streaming computes, in one call).
``BatchedStreams`` throughput (audio seconds per compute second) is measured at 1, 4 and 16 streams.

Random weights are fine for cost (``tiny_offline()`` + a BPE of ~1000 tokens trained here on
pseudo-English), or pass ``--model DIR``. Writes a JSON with every number, a markdown copy of the
tables and a plot of per-chunk compute over the utterance.

    .venv/bin/python benchmarks/streaming/streaming.py                     # 10/30/60 s, 3 repeats, 1/4/16 streams
    .venv/bin/python benchmarks/streaming/streaming.py --durations 5 --repeats 1 --streams 1 2 --no-memory   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from asr_stream import decoder as dec
from asr_stream.config import EVAL_MODES, StreamConfig, split_eval_mode
from asr_stream.groups import (
    AUDIO,
    PROMPT,
    additive_mask,
    allowed,
    training_layout,
    units_done,
)
from asr_stream.model import Batch, SpeechLLM
from asr_stream.streaming import StreamingSession
from asr_stream.streaming.batched import BatchedStreams, rounds

MODES = EVAL_MODES  # a mode, or batch-<reencode> (asr_stream.config: the names, written once)
SYLLABLES = ["ba", "be", "bi", "bo", "da", "de", "di", "do", "ka", "ke", "ki", "ko", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to", "va", "ve", "vi", "vo", "an", "en", "in", "on", "ar", "er", "ir", "or", "st", "th", "sh", "ch"]
TARGETS = dict(reencode_ratio=10.0, last_first=1.5, floor_ratio=1.2, rtf=0.05)


# -- inputs ---------------------------------------------------------------------------------------
def lexicon(n: int = 3000, seed: int = 0) -> tuple[list[str], list[float]]:
    """Pseudo-English words with Zipf frequencies: a 1000-token BPE keeps frequent words whole, splits rare ones."""
    rng = random.Random(seed)
    words: list[str] = []
    seen = set()
    while len(words) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words, [1.0 / (r + 1) for r in range(n)]


def sentences(n: int, seed: int) -> list[str]:
    words, weights = lexicon()
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, weights, k=rng.randint(4, 16))) for _ in range(n)]


def build_model(model_dir: str | None) -> SpeechLLM:
    if model_dir:
        return SpeechLLM.load(model_dir).eval()
    from asr_stream.decoder import train_bpe
    from asr_stream.presets import tiny_offline

    codec = train_bpe(sentences(6000, seed=1), vocab_size=1000)
    torch.manual_seed(0)
    return SpeechLLM(tiny_offline(), codec).eval()


def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * 16000)
    env = 0.5 + 0.5 * np.sin(np.linspace(0, seconds * 2 * np.pi / 1.7, n, dtype=np.float32))
    return (0.1 * rng.standard_normal(n).astype(np.float32) * env).astype(np.float32)


def utterance(model: SpeechLLM, seconds: float, words_per_s: float, seed: int) -> tuple[np.ndarray, list[int], int]:
    """Whole chunks of audio (>= seconds) and a forced transcript of ~words_per_s words per second."""
    n_chunks = -(-round(seconds * 16000) // model.chunk_samples)
    wave = noise(n_chunks * model.chunk_samples / 16000, seed)
    words, weights = lexicon()
    rng = random.Random(seed)
    n_words = max(1, round(words_per_s * seconds))
    tokens = model.codec.encode(" ".join(rng.choices(words, weights, k=n_words)))
    return wave, tokens, n_words


def stream_config(name: str, k: int) -> StreamConfig:
    mode, reencode = split_eval_mode(name)
    return StreamConfig(mode=mode, reencode=reencode, k=k, max_tokens_per_s=100.0)  # the guard must not cut the forced text


def kv_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for ly in cache.layers for t in (getattr(ly, "keys", None), getattr(ly, "values", None))
               if t is not None)


# -- measurements ---------------------------------------------------------------------------------
def _no_sync() -> None:
    """CPU work is done when a call returns; on a GPU pass ``torch.cuda.synchronize`` as ``sync`` instead."""


def stream_once(model: SpeechLLM, wave: np.ndarray, tokens: list[int], name: str, k: int, sync=_no_sync) -> dict:
    """One streamed utterance, one chunk per push; every push timed (``sync()`` before each clock read)."""
    s = StreamingSession(model, stream_config(name, k))
    s.teacher_force(tokens, record_logits=False)
    cs = model.chunk_samples
    per_chunk = []
    sync()
    for i in range(0, len(wave), cs):
        t0 = time.perf_counter()
        s.push(wave[i : i + cs])
        sync()
        per_chunk.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    s.finish()
    sync()
    finish = time.perf_counter() - t0
    st = s.state
    if st.rows != len(tokens) + 1 or not st.ended:
        raise RuntimeError(f"{name}: wrote {st.rows} rows, expected {len(tokens) + 1} (forced tokens + EOS)")
    enc_kv = sum(t.numel() * t.element_size() for kv in getattr(st.enc, "kv", []) for t in kv)
    return dict(per_chunk=per_chunk, finish=finish, total=sum(per_chunk) + finish, positions=st.decoder_positions,
                kv_bytes=kv_bytes(st.cache), cache_slots=st.cache.get_seq_length(), enc_kv_bytes=enc_kv, rows=st.rows)


def floor_once(model: SpeechLLM, wave: np.ndarray, tokens: list[int], k: int, phi: float = 0.0) -> dict:
    """One pass: encoder + projector over the utterance, then one masked decoder forward of its group layout."""
    w = torch.from_numpy(wave)[None]
    t0 = time.perf_counter()
    _, src = model.embed_audio(w)
    t_enc = time.perf_counter() - t0
    # the group training layout of this utterance, as SpeechLLM.forward builds it (not timed: a training cost)
    P, E, N = len(model.prompt_ids), model.embeds_per_chunk, model.num_chunks(len(wave))
    els = training_layout("group", P, N, E, units_done(model.codec.boundaries(tokens)), k, phi)
    prompt = model.embed_tokens(model.prompt_ids) if P else src.new_zeros(0, src.shape[-1])
    canon = torch.cat([prompt, src[0], model.embed_tokens([model.codec.bos_id] + tokens)])
    offset = torch.where(els.kind == PROMPT, 0, torch.where(els.kind == AUDIO, P, P + N * E))
    x = canon[offset + els.index][None]
    mask = additive_mask(allowed("group", els, els), x.dtype)[None]
    t0 = time.perf_counter()
    dec.run(model.llm, x, mask, els.position[None])
    t_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    model(Batch(w, torch.tensor([len(wave)]), [tokens]), mode="group", k=k, phi=phi)
    t_fwd = time.perf_counter() - t0
    return dict(encoder=t_enc, decoder=t_dec, floor=t_enc + t_dec, training_forward=t_fwd, positions=len(els))


def chunked_floor_once(model: SpeechLLM, wave: np.ndarray, tokens: list[int], k: int) -> dict:
    """The computation group streaming implies, without the session: the encoder chunk by chunk (+ projector),
    then the decoder calls the session made (recorded: same inputs, masks, positions, sizes) replayed on a
    fresh cache. group / this = the session's own overhead; this / floor = the price of computing in chunks."""
    calls = []
    run = dec.run

    def record(llm, embeds, mask, positions, cache=None, last_only=False):
        calls.append((embeds, mask, positions, last_only))
        return run(llm, embeds, mask, positions, cache, last_only)

    dec.run = record
    try:
        stream_once(model, wave, tokens, "group", k)
    finally:
        dec.run = run
    cs = model.chunk_samples
    w = torch.from_numpy(wave)[None]
    st = model.encoder.init_state(1)
    t0 = time.perf_counter()
    for i in range(0, w.shape[1], cs):
        enc, st = model.encoder.stream(w[:, i : i + cs], st)
        model.project(enc)
    t_enc = time.perf_counter() - t0
    cache = dec.new_cache(model.llm)
    t0 = time.perf_counter()
    for embeds, mask, positions, last_only in calls:
        run(model.llm, embeds, mask, positions, cache, last_only)
    t_dec = time.perf_counter() - t0
    return dict(encoder=t_enc, decoder=t_dec, total=t_enc + t_dec, decoder_calls=len(calls))


def batched_once(model: SpeechLLM, waves: list[np.ndarray], forced: list[list[int]], k: int, batched: bool,
                 sync=_no_sync) -> dict:
    """Serving rounds: every stream receives its next chunk, then the engine runs until all wait.

    batched=False: the same audio through one StreamingSession per stream, one chunk per push.
    """
    cfg = stream_config("group", k)
    cs = model.chunk_samples
    sync()
    t0 = time.perf_counter()
    if batched:
        eng = BatchedStreams(model, len(waves), cfg)
        for i in range(len(waves)):
            eng.sessions[i].teacher_force(forced[i], record_logits=False)
        for feed in rounds(waves, cs):
            for i, piece, last in feed:
                eng.feed(i, piece)
                if last:
                    eng.end(i)
            eng.drain()
        for i in range(len(waves)):
            eng.finish(i)
        sessions = eng.sessions
        extra = dict(steps=eng.steps, pad_positions=eng.pad_positions, encoder_calls=eng.encoder_calls,
                     encoder_chunks=eng.encoder_streams)
    else:
        sessions = []
        for wv, f in zip(waves, forced):
            s = StreamingSession(model, cfg)
            s.teacher_force(f, record_logits=False)
            for r in range(0, len(wv), cs):
                s.push(wv[r : r + cs])
            s.finish()
            sessions.append(s)
        extra = {}
    sync()
    total = time.perf_counter() - t0
    if [s.state.rows for s in sessions] != [len(f) + 1 for f in forced]:
        raise RuntimeError("streams did not write every forced token")
    return dict(total=total, positions=sum(s.state.decoder_positions for s in sessions), **extra)


def median_runs(fn, repeats: int) -> tuple[dict, list[dict]]:
    fn()  # warm-up
    runs = [fn() for _ in range(repeats)]
    best = dict(runs[0])
    for key, v in runs[0].items():
        if isinstance(v, float):
            best[key] = statistics.median(r[key] for r in runs)
        elif key == "per_chunk":
            best[key] = [statistics.median(r[key][j] for r in runs) for j in range(len(v))]
    return best, runs


# -- peak memory in a fresh process ---------------------------------------------------------------
def probe_memory(spec: dict) -> dict:
    """Peak RSS growth of one streamed utterance (sampled every ms), in this fresh process."""
    import psutil

    model = SpeechLLM.load(spec["model"]).eval()
    proc = psutil.Process()
    wave, tokens, _ = utterance(model, spec["seconds"], spec["words_per_s"], spec["seed"])
    w0, t0, _ = utterance(model, 2.0, spec["words_per_s"], spec["seed"] + 1)
    with torch.inference_mode():
        stream_once(model, w0, t0, spec["mode"], spec["k"])  # warm-up: kernels, allocator
    base = proc.memory_info().rss
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    r = stream_once(model, wave, tokens, spec["mode"], spec["k"])
    stop.set()
    th.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return dict(peak_rss_delta=peak[0] - base, kv_bytes=r["kv_bytes"])


def run_probe(model_dir: str, mode: str, seconds: float, args, seed: int) -> dict:
    spec = dict(model=model_dir, mode=mode, seconds=seconds, k=args.k, words_per_s=args.words_per_s, seed=seed)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------
def window_means(per_chunk: list[float], k: int, window: int) -> tuple[float, float]:
    """Mean compute of the first `window` chunks after the wait-k lead-in (chunks k..) and of the last `window`."""
    first = per_chunk[min(k, max(0, len(per_chunk) - window)) :][:window]
    return statistics.fmean(first), statistics.fmean(per_chunk[-window:])


def tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    rows = []
    for d in res["durations"]:
        g = d["modes"].get("group")
        for name, m in d["modes"].items():
            rows.append([f"{d['audio_s']:.1f}", name, f"{m['total']:.3f}", f"{m['rtf']:.4f}", f"{m['first_ms']:.2f}",
                         f"{m['last_ms']:.2f}", f"{m['last_first']:.2f}", str(m["positions"]),
                         f"{m['kv_bytes'] / 2**20:.2f}", f"{m['kv_growth_Bps'] / 1024:.1f}",
                         "-" if m.get("peak_rss_delta") is None else f"{m['peak_rss_delta'] / 2**20:.1f}",
                         f"{m['total'] / g['total']:.1f}x" if g else "-"])
    out.append(("Streaming, one chunk per push (median of repeats)",
                ["audio s", "mode", "compute s", "RTF", "first chunks ms", "last chunks ms", "last/first", "decoder positions",
                 "decoder KV MiB", "KV growth KiB/s", "peak RSS Δ MiB", "vs group"], rows))
    rows = []
    for d in res["durations"]:
        f, m = d["floor"], d["modes"]
        g = m.get("group")
        rows.append([f"{d['audio_s']:.1f}", f"{f['encoder']:.3f}", f"{f['decoder']:.3f}", f"{f['floor']:.3f}",
                     f"{f['training_forward']:.3f}", f"{g['total']:.3f}" if g else "-", f"{g['total'] / f['floor']:.2f}" if g else "-",
                     f"{m['batch-kv']['total'] / g['total']:.1f}" if g and "batch-kv" in m else "-",
                     f"{f['positions']} / {g['positions']}" if g else str(f["positions"])])
    out.append(("Floor: the same work in one pass",
                ["audio s", "encoder 1 pass s", "decoder 1 pass s", "floor s", "training forward s", "group s",
                 "group / floor", "KV re-encode / group", "positions floor / group"], rows))
    crows = []
    for d in res["durations"]:
        c, f, g = d.get("chunked_floor"), d["floor"], d["modes"].get("group")
        if c and g:
            crows.append([f"{d['audio_s']:.1f}", f"{c['encoder']:.3f}", f"{c['decoder']:.3f}", str(c["decoder_calls"]),
                         f"{c['total']:.3f}", f"{g['total']:.3f}", f"{c['total'] / f['floor']:.2f}", f"{g['total'] / c['total']:.2f}"])
    if crows:
        out.append(("Where group streaming's time goes: the same calls without the session (chunked floor)",
                    ["audio s", "encoder, chunk by chunk s", "decoder, the session's calls replayed s", "decoder calls",
                     "chunked floor s", "group s", "chunked floor / floor", "group / chunked floor"], crows))
    if res.get("batched"):
        rows = [[str(b["streams"]), f"{b['audio_s']:.0f}", f"{b['batched_s']:.2f}", f"{b['throughput']:.0f}",
                 f"{b['sequential_s']:.2f}", f"{b['sequential_throughput']:.0f}", f"{b['speedup']:.2f}x",
                 f"{b['pad_share'] * 100:.1f}%", str(b["steps"]), f"{b['encoder_batch']:.1f}"] for b in res["batched"]]
        out.append(("BatchedStreams throughput, group mode, serving rounds of one chunk per stream (audio s per compute s)",
                    ["streams", "audio s", "batched s", "throughput", "sequential s", "sequential throughput",
                     "speedup", "PAD slots", "decoder steps", "mean encoder batch"], rows))
    if res.get("targets"):
        rows = [[t["target"], t["value"], "yes" if t["met"] else "NO"] for t in res["targets"]]
        out.append(("Targets (longest utterance)", ["target", "measured", "met"], rows))
    return out


def print_tables(ts) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    for title, cols, rows in ts:
        t = Table(title=title)
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i == 1 and c == "mode" else "right")
        for r in rows:
            t.add_row(*r)
        con.print(t)


def markdown(ts) -> str:
    parts = []
    for title, cols, rows in ts:
        parts.append(f"**{title}**\n")
        parts.append("| " + " | ".join(cols) + " |")
        parts.append("|" + "---|" * len(cols))
        parts += ["| " + " | ".join(r) + " |" for r in rows]
        parts.append("")
    return "\n".join(parts)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = res["durations"][-1]
    chunk_s = res["chunk_ms"] / 1000.0
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, log in zip(axes, (True, False)):
        for name, m in d["modes"].items():
            if not log and name.startswith("batch"):
                continue
            t = [(j + 1) * chunk_s for j in range(len(m["per_chunk"]))]
            ax.plot(t, [1e3 * v for v in m["per_chunk"]], label=name, lw=0.9)
        if not log:
            ax.axhline(1e3 * d["floor"]["floor"] / len(d["modes"]["group"]["per_chunk"]), color="k", ls="--", lw=0.8,
                       label="floor / chunks")
        ax.set_xlabel("audio read (s)")
        ax.set_ylabel("compute per chunk push (ms)")
        if log:
            ax.set_yscale("log")
        ax.set_title(("all modes (log)" if log else "append-only modes (linear)") + f", {d['audio_s']:.0f} s utterance")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"per-chunk compute, {res['chunk_ms']:.0f} ms chunks, k={res['k']}, {res['threads']} threads")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0, 60.0], help="utterance lengths in seconds")
    p.add_argument("--modes", nargs="+", default=["group", "interleaved", "batch-kv"], choices=list(MODES),
                   help="streaming modes (group is needed for the ratios)")
    p.add_argument("--model", default=None, help="model directory (default: random tiny_offline() + BPE 1000 built here)")
    p.add_argument("--k", type=int, default=3, help="wait-k in chunks")
    p.add_argument("--words-per-s", type=float, default=None,
                   help="forced transcript rate (default: one word per chunk, 3.125/s at 320 ms; with fewer words "
                        "than chunks wait-k writes EOS before the audio ends and the session stops reading)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median), after one warm-up")
    p.add_argument("--window", type=int, default=10, help="chunks averaged for the first / last per-chunk compute")
    p.add_argument("--streams", type=int, nargs="*", default=[1, 4, 16], help="BatchedStreams sizes (none: skip)")
    p.add_argument("--batched-seconds", type=float, default=30.0,
                   help="mean utterance length of the batched streams (lengths spread 0.75x..1.25x)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS probes (one fresh process per mode and length)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own, the core count)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output directory")
    p.add_argument("--plot", default=None, help="plot path (default: OUT/per_chunk_<longest>s.png)")
    p.add_argument("--json", default=None, help="JSON path (default: OUT/streaming.json)")
    p.add_argument("--markdown", default=None, help="markdown tables path (default: OUT/streaming.md)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        with torch.inference_mode():
            print(json.dumps(probe_memory(json.loads(args.probe))))
        return {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.model)
    if args.words_per_s is None:
        args.words_per_s = 1000.0 / model.chunk_ms
    tmp = None
    model_dir = args.model
    if not args.no_memory and model_dir is None:
        tmp = tempfile.TemporaryDirectory()
        model_dir = str(model.save(Path(tmp.name) / "model"))
    n_params = sum(p.numel() for p in model.parameters())
    res = dict(command="python benchmarks/streaming/streaming.py " + " ".join(sys.argv[1:] if argv is None else argv),
               machine=dict(cpu_count=os.cpu_count(), processor=platform.processor() or platform.machine(), python=platform.python_version(),
                            torch=torch.__version__, threads=torch.get_num_threads()),
               threads=torch.get_num_threads(), k=args.k, words_per_s=args.words_per_s, chunk_ms=model.chunk_ms, embeds_per_chunk=model.embeds_per_chunk,
               params=n_params, vocab=len(model.codec), durations=[], batched=[])
    print(f"model: {n_params / 1e6:.1f} M parameters, vocab {len(model.codec)}, chunk {model.chunk_ms:.0f} ms "
          f"({model.embeds_per_chunk} embeddings), k={args.k}, torch threads {torch.get_num_threads()}", flush=True)
    with torch.inference_mode():
        for di, seconds in enumerate(args.durations):
            wave, tokens, n_words = utterance(model, seconds, args.words_per_s, seed=100 + di)
            audio_s = len(wave) / 16000
            d = dict(seconds=seconds, audio_s=audio_s, chunks=len(wave) // model.chunk_samples, words=n_words, tokens=len(tokens), modes={})
            print(f"{audio_s:.1f} s: {d['chunks']} chunks, {n_words} words, {len(tokens)} tokens", flush=True)
            for name in args.modes:
                m, _ = median_runs(lambda w=wave, t=tokens, n=name: stream_once(model, w, t, n, args.k), args.repeats)
                first, last = window_means(m["per_chunk"], args.k, args.window)
                m.update(rtf=m["total"] / audio_s, first_ms=1e3 * first, last_ms=1e3 * last, last_first=last / first,
                         kv_growth_Bps=m["kv_bytes"] / audio_s, peak_rss_delta=None)
                if not args.no_memory:
                    m.update(peak_rss_delta=run_probe(model_dir, name, seconds, args, 100 + di)["peak_rss_delta"])
                d["modes"][name] = m
                print(f"  {audio_s:5.1f} s {name:>12}: {m['total']:.3f} s, RTF {m['rtf']:.4f}, last/first {m['last_first']:.2f}", flush=True)
            d["floor"], _ = median_runs(lambda w=wave, t=tokens: floor_once(model, w, t, args.k), args.repeats)
            d["chunked_floor"], _ = median_runs(lambda w=wave, t=tokens: chunked_floor_once(model, w, t, args.k), args.repeats)
            print(f"  {audio_s:5.1f} s        floor: {d['floor']['floor']:.3f} s", flush=True)
            res["durations"].append(d)
        for n in args.streams:
            base = args.batched_seconds
            lens = [base] if n == 1 else [base * (0.75 + 0.5 * i / (n - 1)) for i in range(n)]
            utts = [utterance(model, sec, args.words_per_s, seed=500 + i) for i, sec in enumerate(lens)]
            waves, forced = [u[0] for u in utts], [u[1] for u in utts]
            audio = sum(len(w) for w in waves) / 16000
            b, _ = median_runs(lambda w=waves, f=forced: batched_once(model, w, f, args.k, True), args.repeats)
            sq, _ = median_runs(lambda w=waves, f=forced: batched_once(model, w, f, args.k, False), args.repeats)
            res["batched"].append(dict(streams=n, audio_s=audio, batched_s=b["total"], throughput=audio / b["total"],
                                       sequential_s=sq["total"], sequential_throughput=audio / sq["total"],
                                       speedup=sq["total"] / b["total"], steps=b["steps"],
                                       pad_share=b["pad_positions"] / (b["pad_positions"] + b["positions"]),
                                       encoder_batch=b["encoder_chunks"] / b["encoder_calls"]))
            print(f"  {n:3d} streams: {audio / b['total']:.0f} audio s / s batched, {audio / sq['total']:.0f} sequential", flush=True)
    last = res["durations"][-1]
    g = last["modes"].get("group")
    if g:
        t = []
        if "batch-kv" in last["modes"]:
            r = last["modes"]["batch-kv"]["total"] / g["total"]
            t.append(dict(target=f"group >= {TARGETS['reencode_ratio']:.0f}x less compute than KV re-encoding",
                          value=f"{r:.1f}x", met=r >= TARGETS["reencode_ratio"]))
        t.append(dict(target=f"group last/first chunk <= {TARGETS['last_first']}", value=f"{g['last_first']:.2f}",
                      met=g["last_first"] <= TARGETS["last_first"]))
        r = g["total"] / last["floor"]["floor"]
        t.append(dict(target=f"group within {TARGETS['floor_ratio']}x of the floor", value=f"{r:.2f}x", met=r <= TARGETS["floor_ratio"]))
        t.append(dict(target=f"group RTF <= {TARGETS['rtf']}", value=f"{g['rtf']:.4f}", met=g["rtf"] <= TARGETS["rtf"]))
        for x in t:
            x["target"] += f" ({last['audio_s']:.0f} s)"
        res["targets"] = t
    ts = tables(res)
    print_tables(ts)
    plot_path = Path(args.plot) if args.plot else out / f"per_chunk_{last['seconds']:.0f}s.png"
    plot(res, plot_path)
    json_path = Path(args.json) if args.json else out / "streaming.json"
    json_path.write_text(json.dumps(res, indent=1))
    md_path = Path(args.markdown) if args.markdown else out / "streaming.md"
    md_path.write_text(f"`{res['command']}` — {res['machine']}\n\n" + markdown(ts))
    print(f"wrote {json_path}, {md_path}, {plot_path}")
    if tmp is not None:
        tmp.cleanup()
    return res


if __name__ == "__main__":
    main()
