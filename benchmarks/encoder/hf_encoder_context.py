"""What the HF encoder's left context costs, and why none of it is cached.

``EncoderConfig(kind="hf")`` encodes each chunk on its own window [left context | chunk | right pad]
(``asr_stream/encoder/hf.py``) and keeps only the chunk's frames, so a chunk's output is final once computed.
The context is re-encoded for every chunk. This script builds a HuBERT with random weights (no download),
shaped like HuBERT-large's front end (7 convs of 512 channels, layer norm, 128-frame positional conv) with a
smaller transformer by default, and prints:

- the work ratio (context + chunk + pad) / chunk in samples and in transformer frames;
- measured time per chunk when streaming with the configured context, with no context, and the time per
  chunk of one pass over the whole utterance (the floor: no chunking at all, not streamable);
- the share of the convolutional front end in the window's time;
- why the context cannot be cached exactly: the difference between a chunk's frames as computed for that
  chunk and the same frames one chunk later, when they are part of the next window's left context
  (final hidden states: bidirectional attention and the non-causal positional conv; conv features: the
  per-window normalisation ``hf_normalize``, and for group-norm front ends the group norm).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/encoder/hf_encoder_context.py [--size tiny|moderate|large]
        [--seconds 10] [--chunk-ms 320] [--context-ms 960] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

SIZES = {  # HubertConfig overrides; every size keeps HuBERT-large's layer-norm front end and stable layer norm
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7,
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
    "moderate": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def build(size: str, chunk_ms: int, context_ms: int, normalize: bool, path: str):
    from transformers import HubertConfig, HubertModel

    from asr_stream.config import EncoderConfig
    from asr_stream.encoder import build_encoder

    torch.manual_seed(0)
    cfg = HubertConfig(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, **SIZES[size])
    HubertModel(cfg).save_pretrained(path)
    return build_encoder(EncoderConfig(kind="hf", hf_name_or_path=path, chunk_ms=chunk_ms, hf_left_context_ms=context_ms,
                                       hf_normalize=normalize)).eval()


def stream_times(enc, wave: torch.Tensor) -> list[float]:
    """Seconds per chunk, streaming chunk by chunk."""
    st, cs, out = enc.init_state(1), enc.chunk_samples, []
    for i in range(wave.shape[1] // cs):
        t0 = time.perf_counter()
        _, st = enc.stream(wave[:, i * cs : (i + 1) * cs], st)
        out.append(time.perf_counter() - t0)
    return out


def window_macs(config, samples: int) -> dict:
    """Multiply-accumulates of one window of ``samples``: conv front end, positional conv, transformer."""
    conv, length, ch = 0, samples, 1
    for dim, k, st in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        length = (length - k) // st + 1
        conv += length * dim * ch * k
        ch = dim
    d, T = config.hidden_size, length
    pos = T * d * (d // config.num_conv_pos_embedding_groups) * config.num_conv_pos_embeddings
    proj = T * ch * d  # feature projection
    layer = T * (4 * d * d + 2 * d * config.intermediate_size) + 2 * T * T * d
    return {"conv": conv, "pos_conv": pos, "transformer": proj + config.num_hidden_layers * layer}


def best_of(fn, reps: int = 3) -> float:
    """Fastest of ``reps`` timed calls after one warm-up call, in seconds."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="moderate")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--context-ms", type=int, default=960)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    res: dict = {"size": a.size, "seconds": a.seconds, "chunk_ms": a.chunk_ms, "context_ms": a.context_ms,
                 "threads": a.threads, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        enc = build(a.size, a.chunk_ms, a.context_ms, True, d)
        flat = build(a.size, a.chunk_ms, 0, True, d)  # the same weights, no left context
        cs, F = enc.chunk_samples, enc.frames_per_chunk
        n = int(a.seconds * 16000) // cs
        wave = torch.from_numpy((0.1 * rng.standard_normal(n * cs)).astype(np.float32))[None]
        window = enc.context + cs + enc.rf - enc.stride
        macs = window_macs(enc.model.config, window)
        res.update(chunks=n, window_samples=window, sample_ratio=window / cs,
                   frame_ratio=((window - enc.rf) // enc.stride + 1) / F,
                   params_m=sum(p.numel() for p in enc.parameters()) / 1e6,
                   window_gmacs={k: v / 1e9 for k, v in macs.items()}, conv_mac_share=macs["conv"] / sum(macs.values()))
        large = window_macs(type(enc.model.config)(**SIZES["large"]), window)
        res["large_conv_mac_share"] = large["conv"] / sum(large.values())
        stream_times(enc, wave[:, : 2 * cs])  # warm-up
        ctx = stream_times(enc, wave)
        none = stream_times(flat, wave)
        one = best_of(lambda: enc.model(input_values=wave)) / n  # one pass, whole utterance
        windows = torch.nn.functional.pad(enc._windows(torch.zeros(1, enc.context), wave), (0, enc.rf - enc.stride))
        conv = best_of(lambda: enc.model.feature_extractor(windows)) / n  # the front end of every chunk's window
        ctx_ms = 1000 * statistics.median(ctx)
        res.update(stream_context_ms_per_chunk=ctx_ms, stream_no_context_ms_per_chunk=1000 * statistics.median(none),
                   one_pass_ms_per_chunk=1000 * one, conv_front_end_ms_per_chunk=1000 * conv,
                   conv_share=conv / statistics.median(ctx), rtf_context=statistics.median(ctx) / (cs / 16000))

        # exactness: chunk c's frames computed for chunk c, and again as left context of the next window
        if enc.context >= cs:
            c = 2
            out_c = enc(wave[:, : (c + 1) * cs])[:, c * F :]
            w_next = enc._windows(torch.zeros(1, enc.context), wave[:, : (c + 2) * cs])[-1:]  # window of chunk c + 1
            norm = (w_next - w_next.mean(1, keepdim=True)) / torch.sqrt(w_next.var(1, keepdim=True, unbiased=False) + 1e-7)
            hidden = enc.model(input_values=torch.nn.functional.pad(norm, (0, enc.rf - enc.stride))).last_hidden_state
            again = hidden[:, -2 * F : -F]  # the same audio, now the last context chunk of window c + 1
            res["context_hidden_rel_diff"] = ((again - out_c).abs().max() / out_c.abs().max()).item()
            raw = build(a.size, a.chunk_ms, a.context_ms, False, d)  # hf_normalize off: conv features alone
            w_c = raw._windows(torch.zeros(1, raw.context), wave[:, : (c + 1) * cs])[-1:]
            f_c = raw.model.feature_extractor(torch.nn.functional.pad(w_c, (0, raw.rf - raw.stride)))[..., -F:]
            f_n = raw.model.feature_extractor(torch.nn.functional.pad(w_next[:, :], (0, raw.rf - raw.stride)))[..., -2 * F : -F]
            per_frame = (f_n - f_c).abs().amax(1)[0] / f_c.abs().max()
            res["conv_features_rel_diff_all_but_last_frame"] = per_frame[:-1].max().item()
            res["conv_features_rel_diff_last_frame"] = per_frame[-1].item()

    print(f"HuBERT ({a.size}: {res['params_m']:.1f} M parameters, layer-norm conv front end), {a.chunk_ms} ms chunks, "
          f"{a.context_ms} ms left context, {a.seconds:g} s of audio, {a.threads} thread(s), torch {torch.__version__}")
    print(f"window per chunk: {res['window_samples']} samples = {res['sample_ratio']:.2f} x the chunk "
          f"({res['frame_ratio']:.2f} x its transformer frames)")
    print(f"streaming with context : {res['stream_context_ms_per_chunk']:.1f} ms per chunk (RTF {res['rtf_context']:.3f})")
    print(f"streaming, no context  : {res['stream_no_context_ms_per_chunk']:.1f} ms per chunk "
          f"(context costs {res['stream_context_ms_per_chunk'] / res['stream_no_context_ms_per_chunk']:.2f}x)")
    print(f"one pass, whole audio  : {res['one_pass_ms_per_chunk']:.1f} ms per chunk "
          f"(streaming with context costs {res['stream_context_ms_per_chunk'] / res['one_pass_ms_per_chunk']:.2f}x)")
    print(f"conv front end         : {res['conv_front_end_ms_per_chunk']:.1f} ms per chunk window "
          f"({100 * res['conv_share']:.0f} % of the window's time; {100 * res['conv_mac_share']:.0f} % of its "
          f"{sum(res['window_gmacs'].values()):.1f} GMAC; HuBERT-large: {100 * res['large_conv_mac_share']:.0f} %)")
    if "context_hidden_rel_diff" in res:
        print(f"a chunk's final frames, recomputed as next window's context: max rel. diff "
              f"{res['context_hidden_rel_diff']:.2g} (not reusable: attention is bidirectional, the positional conv non-causal)")
        print(f"conv features without hf_normalize, recomputed as context: max rel. diff {res['conv_features_rel_diff_all_but_last_frame']:.2g} "
              f"(all but the last frame), {res['conv_features_rel_diff_last_frame']:.2g} (last frame: it saw the zero right pad)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
