#!/usr/bin/env python3
"""The endpointer's two speech detectors (energy, silero) on long recordings in noise: is any speech lost, any word cut?

A recording is held-out sentences (tests/data/heldout.json, spoken by espeak-ng with their recorded voice, rate and
pitch, with espeak-ng's word times) joined by pauses of 0.3-1.5 s. Each condition is that recording clean, at -20 dB,
in white noise and in babble (six other sentences' voices summed, looped) at 20 and 10 dB SNR (SNR over the speech),
noise running through the pauses too. The endpointer runs alone (no model: a sink that records what it is fed, as
the drivers are fed), in 320 ms blocks. Per detector and condition:

- lost: words of which less than half lies inside any segment (never reach the model);
- cut: words not wholly inside one segment (a cut through the word, or a segment that starts inside it);
- split / merged: sentences spread over several segments / segments holding several sentences;
- noise fed: seconds of segment audio outside every sentence (what the model reads of the background);
- detector CPU: seconds of detection per second of audio (one thread);
- with ``--wer``: the bundled model's WER (k = 3) on the whole recording through that endpointer (slow: about a
  minute per row).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/endpointing/vad_endpoint.py --sentences 40 --wer --output benchmarks/results/vad
Writes results.json, results.md and results.png in --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SR = 16_000
CONDITIONS = ("clean", "-20dB", "white-20dB", "white-10dB", "babble-20dB", "babble-10dB")


def build(n: int, seed: int):
    """(audio, sentence spans [(start, end)], word spans [(start, end)], babble noise, reference text), spans in
    samples."""
    from asr_stream.corpus import engines

    items = json.loads((ROOT / "tests" / "data" / "heldout.json").read_text())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    use = [items[i] for i in order[:n]]
    rest = [items[i] for i in order[::-1]]  # the babble's sentences (the list is short: they may be the same ones)
    parts, sents, words, t = [], [], [], 0
    for it in use:
        pause = int(rng.uniform(0.3, 1.5) * SR)
        parts.append(np.zeros(pause, np.float32))
        t += pause
        x, spans = engines.speak(it["spoken"], it["voice"], it["rate"], it["pitch"])
        parts.append(x)
        sents.append((t, t + x.size))
        words += [(t + int(a * SR), t + int(b * SR)) for a, b in spans or []]
        t += x.size
    parts.append(np.zeros(int(0.8 * SR), np.float32))
    audio = np.concatenate(parts)
    # babble: six talkers, each a stream of sentences without pauses, at its own offset, looped to the length
    talkers = []
    for k in range(6):
        chunk = [engines.speak(it["spoken"], it["voice"], it["rate"], it["pitch"])[0] for it in rest[k::6][:8]]
        s = np.concatenate(chunk)
        s = np.tile(s, audio.size // s.size + 1)
        off = int(rng.integers(0, s.size - audio.size + 1))
        talkers.append(s[off : off + audio.size])
    babble = np.sum(talkers, axis=0).astype(np.float32)
    return audio, sents, words, babble, " ".join(it["text"] for it in use)


def condition(name: str, audio: np.ndarray, sents, babble: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "clean":
        return audio
    if name == "-20dB":
        return (audio * 0.1).astype(np.float32)
    kind, snr = name.split("-")
    snr_db = float(snr.removesuffix("dB"))
    speech = np.concatenate([audio[a:b] for a, b in sents])
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    noise = rng.standard_normal(audio.size).astype(np.float32) if kind == "white" else babble
    noise = noise * np.sqrt(p_speech / 10 ** (snr_db / 10) / float(np.mean(noise.astype(np.float64) ** 2)))
    return (audio + noise).astype(np.float32)


class Sink:
    def __init__(self) -> None:
        self.segments: list[list[int]] = []  # [start, end] in samples
        self.open = False

    def feed(self, samples, start) -> None:
        if not self.open:
            self.segments.append([start, start + len(samples)])
            self.open = True
        self.segments[-1][1] = start + len(samples)

    def cut(self, end, speech_end, rule) -> None:
        self.segments[-1][1] = end
        self.open = False

    def wants_end(self) -> bool:
        return False


def endpoint(wave: np.ndarray, detector: str) -> tuple[list[list[int]], float]:
    from asr_stream.streaming.segment import EndpointConfig, Endpointer

    sink = Sink()
    ep = Endpointer(EndpointConfig(detector=detector), sink, feed_samples=5120)
    t = time.process_time()
    for i in range(0, wave.size, 5120):
        ep.push(wave[i : i + 5120])
    ep.close()
    return sink.segments, time.process_time() - t


def transcribe(wave: np.ndarray, detector: str) -> str:
    from asr_stream import default_model_dir
    from asr_stream.model import SpeechLLM
    from asr_stream.streaming import StreamingSession
    from asr_stream.streaming.segment import EndpointConfig, SegmentedSession

    global _MODEL
    if _MODEL is None:
        _MODEL = SpeechLLM.load(_MODEL_DIR or default_model_dir())
    s = SegmentedSession(StreamingSession(_MODEL, k=3), EndpointConfig(detector=detector))
    for i in range(0, wave.size, 5120):
        s.push(wave[i : i + 5120])
    s.finish()
    return s.text


_MODEL = None
_MODEL_DIR = None  # --model (None: the bundled model)


def score(segments, sents, words, n_samples: int) -> dict:
    inside = np.zeros(n_samples + 1, np.int32)  # segment index + 1 per sample, 0 outside
    for i, (a, b) in enumerate(segments):
        inside[a:b] = i + 1
    lost = cut = 0
    for a, b in words:
        ids = inside[a:b]
        lost += (ids > 0).mean() < 0.5
        cut += not (ids[0] > 0 and (ids == ids[0]).all())
    split = sum(len(set(inside[a:b][inside[a:b] > 0].tolist())) > 1 for a, b in sents)
    merged = sum(sum(1 for a, b in sents if sa < b and a < sb) > 1 for sa, sb in segments)
    speech = np.zeros(n_samples + 1, bool)
    for a, b in sents:
        speech[a:b] = True
    noise_fed = float(((inside > 0) & ~speech).sum()) / SR
    return {"segments": len(segments), "lost": int(lost), "cut": int(cut), "split": int(split), "merged": int(merged),
            "noise_fed_s": round(noise_fed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", nargs="+", default=["energy", "silero"])
    ap.add_argument("--wer", action="store_true", help="also the bundled model's WER through each endpointer")
    ap.add_argument("--model", default=None, help="with --wer: the model directory (default: the bundled model)")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    global _MODEL_DIR
    _MODEL_DIR = args.model
    import torch
    from rich.progress import track

    torch.set_num_threads(1)
    audio, sents, words, babble, ref = build(args.sentences, args.seed)
    seconds = audio.size / SR
    rows = []
    for cond in track(CONDITIONS, description="conditions"):
        wave = condition(cond, audio, sents, babble, np.random.default_rng(args.seed + 1))
        for det in args.detectors:
            segs, cpu = endpoint(wave, det)
            rows.append({"condition": cond, "detector": det, **score(segs, sents, words, audio.size),
                         "cpu_per_audio_s": round(cpu / seconds, 4)})
            if args.wer:
                from asr_stream.evaluation.wer import wer_details

                rows[-1]["wer"] = round(100 * wer_details([ref], [transcribe(wave, det)])["wer"], 1)
    args.output.mkdir(parents=True, exist_ok=True)
    meta = {"sentences": len(sents), "words": len(words), "audio_s": round(seconds, 1), "seed": args.seed,
            "model": args.model or "bundled"}
    (args.output / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    head = "| condition | detector | segments | lost words | cut words | split sentences | merged segments | noise fed (s) | detector CPU / audio s |"
    wer = args.wer
    lines = [f"{meta['sentences']} sentences, {meta['words']} words, {meta['audio_s']} s (seed {args.seed}); "
             "the endpointer alone, 320 ms blocks" + (f"; WER: {args.model or 'the bundled model'}, k = 3." if wer else "."), "",
             head + (" WER % |" if wer else ""), "|" + "---|" * (10 if wer else 9)]
    for r in rows:
        lines.append(f"| {r['condition']} | {r['detector']} | {r['segments']} | {r['lost']} | {r['cut']} | {r['split']} | "
                     f"{r['merged']} | {r['noise_fed_s']} | {r['cpu_per_audio_s']} |" + (f" {r['wer']} |" if wer else ""))
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, args.output / "results.png", meta)


def plot(rows, path: Path, meta) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dets = sorted({r["detector"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(CONDITIONS))
    for ax, key, title in zip(axes, ("lost", "cut", "noise_fed_s"),
                              (f"words lost (of {meta['words']})", "words cut", "seconds of non-speech fed")):
        for j, d in enumerate(dets):
            v = [next(r[key] for r in rows if r["condition"] == c and r["detector"] == d) for c in CONDITIONS]
            ax.bar(x + (j - 0.5) * 0.38, v, 0.38, label=d)
        ax.set_xticks(x, CONDITIONS, rotation=30, ha="right")
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle(f"Endpointer speech detectors: {meta['sentences']} held-out espeak-ng sentences, {meta['audio_s']} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
