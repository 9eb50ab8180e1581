#!/usr/bin/env python3
"""How much of what Whisper's encoder hears survives chunk-wise encoding: a linear CTC probe.

For each way of computing the features, the frozen Whisper encoder (tiny.en from `make whisper-tiny` by default)
encodes N training utterances once; a linear layer (384 -> the bundled tokenizer's 300 BPE tokens + blank) is trained
with CTC on all but the last 50 for 300 steps of 16 utterances, and the held-out CTC loss (nats per target token, the
best of six checks) is printed. Lower = more of the transcript linearly readable from each frame. It is a proxy: the
projector and decoder are not linear, but a model's CTC head is, and its training loss plateaued where this probe does.

Ways (``--variants``, each CONTEXT_MS:LOOKAHEAD_MS:SILENCE_MS, or ``full``):
- ``full``: Whisper's own recipe, the utterance padded to 30 s (WhisperFeatureExtractor), frames cut to the audio;
- C:L:S: each 320 ms chunk on a window of C ms of left context, the chunk, L ms of the audio after it (look-ahead:
  adds L to the latency) and S ms of digital silence after that, frames at their stream positions; the chunk's
  frames are kept. 960:0:0 is what `encoder.kind: whisper` computes today (the training forward, equal to streaming).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/encoder/whisper_probe.py --corpus librispeech:data/synthetic_multi:train \\
        --variants full 960:0:0 960:0:640 3840:0:640 960:320:0 960:320:640
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def chunked_features(enc, wave, context_ms: int, lookahead_ms: int, silence_ms: int):
    """(1, n*5120) samples -> (n*16, d): each chunk's frames from its window (the stock modules, as the encoder's
    reference in tests/equivalence/test_whisper_encoder.py, plus look-ahead and trailing silence)."""
    import torch
    import torch.nn.functional as F

    m, Fc, M = enc.model, enc.frames_per_chunk, enc.mel_frames
    C, LA, S = context_ms // 20, lookahead_ms // 20, silence_ms // 20
    pre = 8  # mel frames of silence before the stream
    mel = enc.logmel(F.pad(wave, (pre * 160 + 240, 0))).transpose(1, 2)
    sil = torch.full((1, mel.shape[1], 2 * S + 2), enc.logmel.silence)
    outs = []
    for c in range(wave.shape[1] // enc.chunk_samples):
        x = torch.cat([mel[:, :, : pre + (c + 1) * M + 2 * LA], sil], 2)
        conv = F.gelu(m.conv2(F.gelu(m.conv1(x)))).transpose(1, 2)[:, pre // 2 :]
        end = (c + 1) * Fc
        start = max(0, end - C - Fc)
        h = conv[:, start : end + LA + S]
        h = h + m.embed_positions.weight[start : start + h.shape[1]]
        for layer in m.layers:
            h = layer(h, None)
        outs.append(m.layer_norm(h)[:, end - Fc - start : end - start])
    return torch.cat(outs, 1)[0]


def main(argv=None) -> None:
    import soundfile as sf
    import torch
    import torch.nn.functional as F

    from asr_stream.config import EncoderConfig
    from asr_stream.data import read_corpus
    from asr_stream.encoder import build_encoder
    from asr_stream.encoder.whisper import load_whisper_encoder
    from asr_stream.model import SpeechLLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="training utterances (librispeech:ROOT:SPLIT or a manifest)")
    ap.add_argument("--model", default=str(ROOT / "models" / "whisper-tiny.en"))
    ap.add_argument("--utts", type=int, default=400, help="utterances drawn (the last 50 are held out)")
    ap.add_argument("--variants", nargs="+", default=["full", "960:0:0", "960:0:640", "960:320:0", "960:320:640"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    codec = SpeechLLM.load(ROOT / "asr_stream" / "assets" / "default_model").codec
    utts = read_corpus(a.corpus)
    random.Random(a.seed).shuffle(utts)
    utts = [u for u in utts if u.duration <= 30.0][: a.utts]
    enc = build_encoder(EncoderConfig(kind="whisper", hf_name_or_path=a.model, chunk_ms=320)).eval()
    full_model, fe = load_whisper_encoder(a.model)
    full_model.eval()
    print("| features | held-out CTC nats/token | encode s |\n|---|---|---|", flush=True)
    for variant in a.variants:
        t0 = time.time()
        data = []
        with torch.no_grad():
            for u in utts:
                x, _ = sf.read(str(u.audio_path), dtype="float32")
                w = torch.from_numpy(x)[None]
                n = -(-w.shape[1] // enc.chunk_samples)
                w = F.pad(w, (0, n * enc.chunk_samples - w.shape[1]))
                if variant == "full":
                    feat = fe(w[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
                    f = full_model(feat).last_hidden_state[0, : w.shape[1] // 320]
                else:
                    c, la, s = (int(v) for v in variant.split(":"))
                    f = chunked_features(enc, w, c, la, s)
                data.append((f, torch.tensor(codec.encode(u.text))))
        took = time.time() - t0
        torch.manual_seed(a.seed)
        rng = random.Random(a.seed)
        head = torch.nn.Linear(f.shape[-1], len(codec))
        opt = torch.optim.Adam(head.parameters(), 3e-3)
        train, held = data[:-50], data[-50:]

        def loss(batch):
            lp = [head(e).log_softmax(-1) for e, _ in batch]
            T = max(x.shape[0] for x in lp)
            L = torch.stack([F.pad(x, (0, 0, 0, T - x.shape[0])) for x in lp], 1)
            return F.ctc_loss(L, torch.cat([y for _, y in batch]), torch.tensor([x.shape[0] for x in lp]),
                              torch.tensor([len(y) for _, y in batch]), blank=codec.pad_id, zero_infinity=True)

        best = float("inf")
        for step in range(300):
            lo = loss(rng.sample(train, 16))
            opt.zero_grad()
            lo.backward()
            opt.step()
            if step % 50 == 49:
                with torch.no_grad():
                    best = min(best, loss(held).item())
        print(f"| {variant} | {best:.2f} | {took:.0f} |", flush=True)


if __name__ == "__main__":
    main()
