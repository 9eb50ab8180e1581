"""Seconds per training step of a recipe's model: forward + backward + AdamW on the recipe's own batches.

Speaks to two questions a CPU budget raises: how fast this machine trains the recipe (the synthetic
recipe's hour is a number of steps, fixed in its config), and what a setting costs (precision, dropout),
measured side by side on the same batches, not guessed from a run.

    .venv/bin/python benchmarks/training/train_step.py --config conf/tiny_synthetic.yaml \\
        --data librispeech:data/synthetic:train --steps 20 --variants bf16 bf16-nodropout fp32

Run it on an idle machine: anything else using the cores (a training run) changes the figures several-fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import yaml

from asr_stream.config import model_config_from_dict
from asr_stream.data import duration_batches, read_corpus
from asr_stream.decoder import TextCodec
from asr_stream.model import Batch, SpeechLLM
from asr_stream.training.data import UtteranceDataset, collate

VARIANTS = {  # name -> (autocast bf16, dropout kept: "all", "no-attention" or "none")
    "bf16": (True, "all"),
    "bf16-noattndropout": (True, "no-attention"),
    "bf16-nodropout": (True, "none"),
    "fp32": (False, "all"),
    "fp32-nodropout": (False, "none"),
}


def _dropout(cfg, keep: str):
    if keep == "all":
        return cfg
    off = {"attention_dropout": 0.0} if keep == "no-attention" else \
        {"resid_pdrop": 0.0, "attention_dropout": 0.0, "embd_pdrop": 0.0}
    dec = dataclasses.replace(cfg.decoder, tiny=dict(cfg.decoder.tiny or {}, **off))
    enc = cfg.encoder if keep == "no-attention" else dataclasses.replace(cfg.encoder, dropout=0.0)
    return dataclasses.replace(cfg, encoder=enc, decoder=dec)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="conf/tiny_synthetic.yaml", help="a LightningCLI training config")
    ap.add_argument("--data", default="librispeech:data/synthetic:train")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 3 warm-up steps)")
    ap.add_argument("--variants", nargs="+", default=["bf16", "bf16-nodropout"], choices=sorted(VARIANTS))
    ap.add_argument("--batch-seconds", type=float, help="padded audio per batch (default: the config's)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    conf = yaml.safe_load(open(a.config))
    mconf = conf["model"]
    cfg = model_config_from_dict(mconf["model"])
    codec = TextCodec.load(mconf["tokenizer"])
    seconds = a.batch_seconds or float(conf.get("data", {}).get("max_batch_seconds", 60))
    utts = read_corpus(a.data)
    batches = duration_batches(utts, seconds, shuffle=True, seed=0)[: a.steps + 3]
    ds = UtteranceDataset(utts)
    pos = {id(u): i for i, u in enumerate(utts)}
    data = [collate([ds[pos[id(u)]] for u in b]) for b in batches]  # decoded once, outside the timing
    audio = [float(b.wave_lens.sum()) / 16000 for b in data]
    ks = cfg.train_k
    print(f"{a.config}: {len(data)} batches of <= {seconds:g} s padded audio ({statistics.mean(audio):.1f} s of "
          f"speech on average), k cycling over {list(ks)}, {a.threads} threads")
    print(f"{'variant':<16} {'s/step':>8} {'min':>7} {'audio s per s':>14}")
    for name in a.variants:
        bf16, keep = VARIANTS[name]
        torch.manual_seed(0)
        net = SpeechLLM(_dropout(cfg, keep), codec).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        times = []
        for i, b in enumerate(data):
            batch = Batch(b.wave, b.wave_lens, [codec.encode(t) for t in b.texts])
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(batch, mode=cfg.train_mode, k=ks[i % len(ks)], phi=cfg.phi)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        per = statistics.mean(times)
        print(f"{name:<16} {per:8.3f} {min(times):7.3f} {statistics.mean(audio[3:]) / per:14.1f}")


if __name__ == "__main__":
    main()
