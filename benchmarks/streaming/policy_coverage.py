#!/usr/bin/env python3
"""Do the multi-k training masks cover an adaptive policy's schedules? Teacher-forced, per target row.

For each utterance the reference transcript is streamed teacher-forced under an adaptive policy; the
per-row visibilities it produced (the schedule) go into the masked training forward
(``SpeechLLM.forward(vis=...)``, equal to the stream's logits, tests/equivalence/test_policy.py). Each row written before
the end of the audio has a lag L = visible chunks - words written before it (wait-k k: every row at lag k).
A model trained with k drawn from {1, 2, 3, 5} has seen every row at L in that set, but always in an
utterance whose earlier rows had the same lag. The adaptive schedule mixes lags, and can show a row L = 0
(word j after only j chunks), which training never did. Per lag, this prints the rows' cross-entropy and
token accuracy under the adaptive schedule and, for the same rows with the same visibility, under wait-k with
k = L (uniform history): a gap means the mixed history is outside what the masks covered; L = 0 rows are
compared with wait-k 1 (one chunk more, the nearest trained schedule).

    .venv/bin/python benchmarks/streaming/policy_coverage.py --data librispeech:data/synthetic:test --limit 100 \\
        --policy ctc --policy-args threshold=1.0 margin=0 k_max=5
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from asr_stream import default_model_dir
    from asr_stream.audio.io import load_audio
    from asr_stream.data import read_corpus
    from asr_stream.groups import TARGET, units_done
    from asr_stream.model import Batch, SpeechLLM
    from asr_stream.streaming import StreamingSession
    from asr_stream.streaming.policy import parse_policy_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--policy", default="ctc")
    p.add_argument("--policy-args", nargs="*", default=[])
    p.add_argument("--output", type=Path)
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_grad_enabled(False)
    m = SpeechLLM.load(a.model or default_model_dir())
    args = parse_policy_args(a.policy_args)
    stats: dict[str, dict[int, list]] = {"adaptive": defaultdict(list), "waitk": defaultdict(list)}
    for u in read_corpus(a.data)[: a.limit]:
        wave = load_audio(u.audio_path)
        y = m.codec.encode(u.text)
        s = StreamingSession(m, policy=a.policy, policy_args=args, max_tokens_per_s=100.0)
        s.teacher_force(y, record_logits=False)
        s.push(wave)
        s.finish()
        els = s.state.elements
        t = torch.nonzero(els.kind == TARGET).flatten()
        vis = els.chunk[t[torch.argsort(els.index[t])]].tolist()
        units = units_done(m.codec.boundaries(y))
        N = m.num_chunks(len(wave))
        labels = torch.tensor(y + [m.codec.eos_id])
        batch = Batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), [y])

        def per_row(logits):
            return F.cross_entropy(logits.float(), labels, reduction="none"), logits.argmax(-1) == labels

        ce_a, ok_a = per_row(m(batch, vis=[vis]).target_logits[0])
        lags = [v - c if v < N else None for v, c in zip(vis, units)]
        for lag in sorted({x for x in lags if x is not None}):
            ce_w, ok_w = per_row(m(batch, k=max(lag, 1)).target_logits[0])
            for i, x in enumerate(lags):
                if x == lag:
                    stats["adaptive"][lag].append((float(ce_a[i]), bool(ok_a[i])))
                    stats["waitk"][lag].append((float(ce_w[i]), bool(ok_w[i])))
    out = {}
    n_all = sum(len(v) for v in stats["adaptive"].values())
    print(f"{a.policy} {args}: {n_all} rows written before the end of the audio, {a.limit} utterances")
    print("lag | rows | share | CE adaptive | CE wait-k (k = max(lag, 1)) | acc adaptive | acc wait-k")
    for lag in sorted(stats["adaptive"]):
        ad, wk = stats["adaptive"][lag], stats["waitk"][lag]
        n = len(ad)
        row = {"rows": n, "share": n / n_all, "ce_adaptive": sum(c for c, _ in ad) / n, "ce_waitk": sum(c for c, _ in wk) / n,
               "acc_adaptive": sum(o for _, o in ad) / n, "acc_waitk": sum(o for _, o in wk) / n}
        out[str(lag)] = row
        print(f"{lag} | {n} | {row['share']:.3f} | {row['ce_adaptive']:.3f} | {row['ce_waitk']:.3f} | "
              f"{row['acc_adaptive']:.3f} | {row['acc_waitk']:.3f}")
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps({"policy": a.policy, "args": args, "limit": a.limit, "by_lag": out}, indent=2))
    return out


if __name__ == "__main__":
    main()
