#!/usr/bin/env python3
"""Where a context list's positions go: a prefix of the target group (what asr_stream does) or a group of its own.

Both layouts share the mask (asr_stream.groups: context tokens see only the context before them, the target sees
all of it, the source none of it); they differ only in the context's positions: ``prefix`` φ - C .. φ - 1 (the
code's rule), ``group`` 0 .. C - 1 (a group of its own starting where the source starts). For each, the bundled
model (its encoder frozen: its outputs are computed once) has its decoder and projector fine-tuned for --steps steps
of 8 utterances with training lists (asr_stream.context.ContextSampler: every utterance a list, 30 % distractors
only, 1-3 of its rare words, 0-20 distractors), then the held-out cross-entropy (nats per target token, teacher
forced, wait-k 3) is printed with three lists: the utterance's rare words + 10 distractors, 20 distractors only, and
none; at step 0 too (an untrained model given a list).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training/context_positions.py --train librispeech:data/synthetic_multi_part:train \\
        --heldout librispeech:data/synthetic_multi:dev --steps 60 --utts 160 --eval-utts 32   # benchmarks/RESULTS.md

A small proxy (a tiny decoder, minutes of fine-tuning): it says how readily each layout is picked up and whether an
untrained list disturbs the model, not what a full training reaches.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from asr_stream import groups
    from asr_stream.audio.io import load_audio
    from asr_stream.context import ContextDraw, ContextSampler, context_ids, context_rng
    from asr_stream.data import read_corpus
    from asr_stream.model import Batch, SpeechLLM

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--model", default=str(ROOT / "asr_stream/assets/default_model"))
    p.add_argument("--utts", type=int, default=400, help="training utterances (a random sample)")
    p.add_argument("--eval-utts", type=int, default=64)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    rnd = random.Random(a.seed)
    train_all = read_corpus(a.train)
    train = rnd.sample(train_all, min(a.utts, len(train_all)))
    held = rnd.sample(read_corpus(a.heldout), a.eval_utts)
    base = SpeechLLM.load(a.model)
    base.cfg = replace(base.cfg, context_max_tokens=512)
    sampler = ContextSampler(ContextDraw(prob=1.0, distractor_only_prob=0.3, true_words=(1, 3), distractors=(0, 20),
                                         rare_rank=1000), (u.text for u in train_all))

    def encode(utts):
        out = []
        with torch.no_grad():
            for u in utts:
                w = torch.from_numpy(load_audio(u.audio_path))
                n = base.num_chunks(len(w))
                w = F.pad(w, (0, n * base.chunk_samples - len(w)))[None]
                out.append((base.encoder(w)[0], len(w[0]), base.codec.encode(u.text), u.text))
        return out

    t0 = time.time()
    tr, he = encode(train), encode(held)
    print(f"encoded {len(tr)} + {len(he)} utterances in {time.time() - t0:.0f} s", file=sys.stderr)

    def batch(items, lists):
        T = max(e.shape[0] for e, *_ in items)
        enc = torch.stack([F.pad(e, (0, 0, 0, T - e.shape[0])) for e, *_ in items])
        return Batch(torch.zeros(len(items), 0), torch.tensor([n for _, n, _, _ in items]), [y for _, _, y, _ in items],
                     enc=enc, context=[context_ids(base.codec, c) for c in lists])

    def heldout_lists(kind):
        out = []
        for i, (_, _, _, text) in enumerate(he):
            rng = np.random.default_rng([a.seed, 99, i])
            rare = [w for w in dict.fromkeys(text.split()) if w not in sampler.common][:3]
            pool = [w for w in sampler.pool if w not in text.split()]
            d = [pool[j] for j in rng.choice(len(pool), 20, replace=False)]
            out.append({"true+10": rare + d[:10], "20 distractors": d, "none": []}[kind])
        return out

    def heldout_ce(model):
        model.eval()
        res = {}
        with torch.no_grad():
            for kind in ("true+10", "20 distractors", "none"):
                lists, tot, n = heldout_lists(kind), 0.0, 0
                for j in range(0, len(he), 16):
                    out = model(batch(he[j : j + 16], lists[j : j + 16]), k=3)
                    tot += float(out.ce) * out.n_tokens
                    n += out.n_tokens
                res[kind] = tot / n
        return res

    layouts = {"prefix": groups.context_positions,
               "group": lambda mode, C, phi=0.0: [float(c) for c in range(C)]}
    rows = []
    for name, rule in layouts.items():
        groups.context_positions = rule  # training layouts and sessions both place context slots through it
        torch.manual_seed(a.seed)
        model = SpeechLLM.load(a.model)
        model.cfg = replace(model.cfg, context_max_tokens=512)
        model.encoder.requires_grad_(False)
        start = heldout_ce(model)
        params = [q for n_, q in model.named_parameters() if q.requires_grad and not n_.startswith("encoder.")]
        opt = torch.optim.AdamW(params, lr=a.lr)
        r = random.Random(a.seed)
        t0 = time.time()
        for step in range(a.steps):
            model.train()
            idx = r.sample(range(len(tr)), 8)
            lists = [sampler(tr[i][3], context_rng(a.seed, step, i)) for i in idx]
            out = model(batch([tr[i] for i in idx], lists), k=r.choice(model.cfg.train_k))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        end = heldout_ce(model)
        rows.append((name, start, end, time.time() - t0))
    groups.context_positions = layouts["prefix"]
    print(f"held-out CE (nats/token, {len(he)} utterances, k=3) before and after {a.steps} steps of 8 with lists")
    print(f"{'layout':<8} " + " ".join(f"{k + ' @0':>18} {k + ' @end':>18}" for k in ("true+10", "20 distractors", "none")))
    for name, s, e, secs in rows:
        print(f"{name:<8} " + " ".join(f"{s[k]:18.3f} {e[k]:18.3f}" for k in s) + f"   ({secs:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
