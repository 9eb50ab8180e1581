#!/usr/bin/env python3
"""Write the robustness test set (asr_stream.corpus.robust): leading silence, -20 dB, 8 kHz, noise at 10 dB SNR
versions of a test corpus's utterances, plus non-speech that must transcribe to nothing.

    python tools/corpus/make_robust_set.py librispeech:data/synthetic-tests:test data/robust --limit 100
    python -m asr_stream eval --data data/robust/lead-silence.jsonl --k 3 --output exp/robust/lead-silence
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr_stream.data import DataError, read_corpus
from asr_stream.corpus.robust import make_robustness_set


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="source test corpus: a JSONL manifest or librispeech:ROOT:SPLIT")
    p.add_argument("out", type=Path, help="new folder for the audio and one manifest per condition")
    p.add_argument("--limit", type=int, help="only the first N source utterances")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    a = p.parse_args(argv)
    try:
        utts = read_corpus(a.data)[: a.limit]
        manifests = make_robustness_set(utts, a.out, a.seed)
    except (DataError, ValueError) as e:
        print(f"make_robust_set: error: {e}", file=sys.stderr)
        return 2
    for cond, m in manifests.items():
        print(f"{cond:<14} {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
