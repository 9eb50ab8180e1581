#!/usr/bin/env python3
"""Write the contextual-biasing test set (asr_stream.corpus.biasing): sentences with rare names and words that are not
in the training text, spoken by held-out voices, each with a context list of its rare words plus distractors.

    python tools/corpus/make_biasing_set.py data/biasing --sentences 100 --distractors 100 \\
        --exclude librispeech:data/synthetic_multi:train
    python -m asr_stream eval --data data/biasing/biasing.jsonl --model M --output exp/bias/ctx      # with the lists
    python -m asr_stream eval --data data/biasing/biasing.jsonl --model M --output exp/bias/none --no-data-context
    python -m asr_stream eval --data data/synthetic-tests/... --model M --context-file data/biasing/distractors-100.txt

Both evals report B-WER (on the lists' words), U-WER (on the rest) and rare-word recall; the last one is the
"100 distractors do no harm" check on ordinary speech.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr_stream.corpus.biasing import HELD_OUT_VOICES, make_biasing_set, words_of
from asr_stream.corpus.text import FORTUNE_DIR, SynthError, fortune_sentences
from asr_stream.data import DataError, read_corpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="new folder for audio/, biasing.jsonl and distractors-N.txt")
    p.add_argument("--sentences", type=int, default=100, help="sentences (default 100)")
    p.add_argument("--distractors", type=int, default=100, help="distractors in each context list (default 100)")
    p.add_argument("--voices", default=",".join(HELD_OUT_VOICES),
                   help=f"comma-separated voices, one per sentence in turn (default: the held-out {','.join(HELD_OUT_VOICES)})")
    p.add_argument("--exclude", action="append", default=[],
                   help="a training corpus (JSONL manifest or librispeech:ROOT:SPLIT) whose words are not rare (repeatable)")
    p.add_argument("--no-fortunes", action="store_true",
                   help=f"do not exclude the words of the fortunes text ({FORTUNE_DIR}, the synthetic corpus's source)")
    p.add_argument("--words", type=Path, help="a UTF-8 file of rare words or names, one a line (default: the built-in list)")
    p.add_argument("--seed", type=int, default=0, help="seed of the word and list draws (default 0)")
    a = p.parse_args(argv)
    try:
        texts: list[str] = []
        for spec in a.exclude:
            texts += [u.text for u in read_corpus(spec)]
        if not a.no_fortunes and FORTUNE_DIR.is_dir():
            texts += fortune_sentences()
        kwargs = {}
        if a.words is not None:
            try:
                kwargs["words"] = [w.strip() for w in a.words.read_text(encoding="utf-8").splitlines() if w.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise SynthError(f"--words {a.words}: cannot read it as UTF-8 text ({type(e).__name__})") from None
        voices = tuple(v.strip() for v in a.voices.split(",") if v.strip())
        manifest = make_biasing_set(a.out, a.sentences, voices, a.distractors, a.seed, texts, **kwargs)
    except (SynthError, DataError, ValueError) as e:
        print(f"make_biasing_set: error: {e}", file=sys.stderr)
        return 2
    print(f"{manifest} ({a.sentences} sentences; rare words exclude {len(words_of(texts))} words of the training text)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
