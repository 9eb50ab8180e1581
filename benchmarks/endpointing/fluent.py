#!/usr/bin/env python3
"""Fluent speech: WER of the same sentences joined by long pauses, by 0 / 100 / 200 ms pauses, and spoken in one breath.

The sentences are the held-out list (tests/data/heldout.json: sentences never trained on, spoken by training voices),
each cut to its speech (espeak-ng ends a sentence with 0.1-0.5 s of silence) and joined into one recording per pause
setting, in the same seeded order. The run-on recording is the first --runon sentences spoken by one espeak-ng call
with no punctuation (no sentence-final pause at all). Every recording goes through SegmentedSession as `transcribe`
runs it (default endpointing, bundled model unless --model); --batched runs SegmentedStreams too and checks that it
gives the same words.

    .venv/bin/python benchmarks/endpointing/fluent.py                      # today's rules
    .venv/bin/python benchmarks/endpointing/fluent.py --no-restart         # the endpointer alone (no restarts at the last word)
Prints a markdown table; --output DIR also writes fluent.json and fluent.md there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def run_on_text(spoken: list[str]) -> str:
    """Sentences as one breath: punctuation removed, so espeak-ng makes no pause between them."""
    return " ".join(re.sub(r"[^A-Za-z' ]+", " ", s).strip() for s in spoken)


def joined(waves: list, texts: list[str], lo: float, hi: float, seed: int = 0) -> tuple:
    """Every wave once, in a seeded order, each after a pause drawn from [lo, hi] s: (audio, reference text).
    The order is the same whatever the pauses, so the recordings differ in their pauses only."""
    import numpy as np

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(waves))
    pauses = rng.uniform(lo, hi, len(waves))
    parts = [p for i, g in zip(order, pauses) for p in (np.zeros(int(round(g * 16000)), np.float32), waves[i])]
    return np.concatenate(parts), " ".join(texts[i] for i in order)


def main(argv=None) -> None:
    from asr_stream import default_model_dir
    from asr_stream.corpus.longform import trim_silence
    from asr_stream.corpus.synth import synthesize
    from asr_stream.evaluation.wer import wer_details
    from asr_stream.model import SpeechLLM
    from asr_stream.streaming import StreamingSession
    from asr_stream.streaming.segment import EndpointConfig, SegmentedSession, SegmentedStreams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heldout", default=str(ROOT / "tests" / "data" / "heldout.json"))
    ap.add_argument("--sentences", type=int, default=40, help="held-out sentences per recording (default: all 40)")
    ap.add_argument("--runon", type=int, default=12, help="sentences of the run-on recording (0: none)")
    ap.add_argument("--runon-voice", default="en-us-nyc+f2")
    ap.add_argument("--seed", type=int, default=0, help="order of the sentences and the long pauses")
    ap.add_argument("--rotate-voices", action="store_true",
                    help="speak sentence i with training voice i mod 15 (DEFAULT_VOICES) instead of its held-out voice")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--restart-s", type=float, default=EndpointConfig.restart_s)
    ap.add_argument("--no-restart", action="store_true", help="restarts off (the endpointer's rules alone)")
    ap.add_argument("--batched", action="store_true", help="also run SegmentedStreams and compare its words")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true", help="print every segment")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="run only these recordings (0-based, in table order)")
    a = ap.parse_args(argv)

    raw = json.loads(Path(a.heldout).read_text())[: a.sentences]
    items = [(it["id"], it["text"]) for it in raw]
    from asr_stream.corpus.voices import DEFAULT_VOICES

    voice = lambda i: DEFAULT_VOICES[i % len(DEFAULT_VOICES)] if a.rotate_voices else raw[i]["voice"]  # noqa: E731
    waves = [trim_silence(synthesize(it["spoken"], voice(i), it["rate"], it["pitch"])) for i, it in enumerate(raw)]
    model = SpeechLLM.load(a.model or default_model_dir())
    endpoint = EndpointConfig(restart_s=None if a.no_restart else a.restart_s)

    recs = [(f"pauses {lo:g}-{hi:g} s" if hi > lo else f"pauses {1000 * lo:g} ms", *joined(waves, [t for _, t in items], lo, hi, a.seed))
            for lo, hi in [(0.3, 1.5), (0.0, 0.0), (0.1, 0.1), (0.2, 0.2)]]
    if a.runon:
        n = min(a.runon, len(raw))
        same_voice = [trim_silence(synthesize(it["spoken"], a.runon_voice, 165, 50)) for it in raw[:n]]
        recs.append((f"{n} sentences, {a.runon_voice}, pauses 0.3-1.5 s", *joined(same_voice, [t for _, t in items[:n]], 0.3, 1.5, a.seed)))
        one = trim_silence(synthesize(run_on_text([it["spoken"] for it in raw[:n]]), a.runon_voice, 165, 50))
        recs.append((f"{n} sentences, {a.runon_voice}, one breath", one, " ".join(t for _, t in items[:n])))

    rows = []
    for name, audio, ref in [r for i, r in enumerate(recs) if a.only is None or i in a.only]:
        t0 = time.perf_counter()
        s = SegmentedSession(StreamingSession(model, k=a.k), endpoint)
        for j in range(0, len(audio), 1600):
            s.push(audio[j : j + 1600])
        s.finish()
        spent = time.perf_counter() - t0
        d = wer_details([ref], [s.text])
        rules: dict[str, int] = {}
        for seg in s.segments:
            rules[seg.rule] = rules.get(seg.rule, 0) + 1
        if a.verbose:
            for seg in s.segments:
                print(f"  {seg.start / 16000:7.2f}-{seg.end / 16000:7.2f} {seg.rule:9s} {seg.text}", file=sys.stderr)
        row = {"recording": name, "seconds": len(audio) / 16000, "ref_words": len(ref.split()), "hyp_words": len(s.text.split()),
               "wer": d["wer"], "sdi": f"{d['substitutions']}/{d['deletions']}/{d['insertions']}", "segments": len(s.segments),
               "rules": rules, "unheard_s": s.unheard[0], "compute_s": spent, "text": s.text, "ref": ref}
        if a.batched:
            eng = SegmentedStreams.run(model, [audio], endpoint=endpoint, block=1600, k=a.k)
            row["batched_same"] = [(w.text, w.time_ms) for w in eng.words(0)] == [(w.text, w.time_ms) for w in s.words]
        rows.append(row)
        print(f"{name}: WER {100 * d['wer']:.1f} %, {row['hyp_words']}/{row['ref_words']} words, {rules}, "
              f"unheard {row['unheard_s']:.1f} s" + (f", batched same: {row['batched_same']}" if a.batched else ""),
              file=sys.stderr, flush=True)
    md = [f"restarts: {'off' if a.no_restart else f'restart_s={a.restart_s:g}'}, k={a.k}, model: {a.model or 'bundled'}", "",
          "| recording | s | words (hyp / ref) | WER % | S/D/I | segments | rules | unheard s |" + (" batched same |" if a.batched else ""),
          "|---|---|---|---|---|---|---|---|" + ("---|" if a.batched else "")]
    for r in rows:
        md.append(f"| {r['recording']} | {r['seconds']:.1f} | {r['hyp_words']} / {r['ref_words']} | {100 * r['wer']:.1f} | {r['sdi']} "
                  f"| {r['segments']} | {', '.join(f'{k} {v}' for k, v in sorted(r['rules'].items()))} | {r['unheard_s']:.1f} |"
                  + (f" {r['batched_same']} |" if a.batched else ""))
    print("\n".join(md))
    if a.output is not None:
        a.output.mkdir(parents=True, exist_ok=True)
        (a.output / "fluent.json").write_text(json.dumps(rows, indent=1) + "\n")
        (a.output / "fluent.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
