#!/usr/bin/env python3
"""Write long-form test recordings: held-out utterances joined with random pauses (asr_stream.corpus.longform).

From a corpus split (LibriSpeech layout, e.g. the synthetic test set) or from a held-out list spoken again by
espeak-ng (tests/data/heldout.json, as tools/corpus/make_heldout.py writes it). For each length in --minutes:
OUT/longform-<M>min.flac, its pieces (utterance spans) in .pieces.json, and a line in OUT/manifest.jsonl
(audio_filepath, duration, text) that `asr-stream eval --data OUT/manifest.jsonl` reads.

    .venv/bin/python tools/corpus/make_longform.py data/longform --heldout tests/data/heldout.json --minutes 1 5 30
    .venv/bin/python tools/corpus/make_longform.py data/longform --corpus data/synthetic --split test --minutes 1 5 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from asr_stream.corpus.longform import join_utterances, write_recording  # noqa: E402


def sources(args) -> tuple[list[tuple[str, str]], callable]:
    if args.heldout:
        from asr_stream.corpus.synth import synthesize

        items = json.loads(Path(args.heldout).read_text())
        return [(it["id"], it["text"]) for it in items], lambda i: synthesize(items[i]["spoken"], items[i]["voice"],
                                                                                items[i]["rate"], items[i]["pitch"])
    from asr_stream.audio import load_audio
    from asr_stream.data import read_corpus

    utts = sorted(read_corpus(f"librispeech:{args.corpus}:{args.split}"), key=lambda u: u.id)
    return [(u.id, u.text) for u in utts], lambda i: load_audio(utts[i].audio_path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--heldout", help="held-out list (JSON: id, text, spoken, voice, rate, pitch)")
    src.add_argument("--corpus", help="LibriSpeech-layout corpus root")
    ap.add_argument("--split", default="test")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 30])
    ap.add_argument("--pause", type=float, nargs=2, default=(0.2, 1.5), metavar=("LO", "HI"), help="pause range in s")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    items, load = sources(a)
    a.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for minutes in a.minutes:
        rec = join_utterances(items, load, minutes * 60, tuple(a.pause), seed=a.seed)
        path = write_recording(rec, a.out / f"longform-{minutes:g}min.flac")
        lines.append(json.dumps({"audio_filepath": str(path.resolve()), "duration": rec.seconds, "text": rec.text}))
        print(f"{path}: {rec.seconds / 60:.1f} min, {len(rec.pieces)} utterances, {len(rec.text.split())} words")
    (a.out / "manifest.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
