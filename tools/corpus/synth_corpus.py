#!/usr/bin/env python3
"""Write a synthetic LibriSpeech-layout corpus with espeak-ng (see asr_stream.corpus.synth for the design).

Examples:
    python tools/corpus/synth_corpus.py data/synth                      # full size: all fortune sentences
    python tools/corpus/synth_corpus.py data/synth-small --num-train 2000 --num-dev 100 --num-test 100 \\
        --top-words 3000 --min-train-vocab 500 --snr-db 20 --jobs 4

    python tools/corpus/synth_corpus.py data/synth-multi --voices en-us,en-gb,flite:awb,flite:rms,festival:ked_diphone \\
        --unseen-speakers --eval-split test-extra=flite:kal16    # voices of several engines; extra test splits

Needs: apt-get install espeak-ng fortunes fortunes-min (MBROLA voices are used when installed); flite and
festival (+ festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts) for their voices (make sysdeps).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asr_stream.corpus import DEFAULT_UNSEEN_VOICE, FORTUNE_DIR, SynthConfig, SynthError, synthesize_corpus
from asr_stream.corpus.engines import UNSEEN_SPEAKER_SPLITS


def _pair(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI integers, got {text!r}") from None


def _eval_split(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, voices = text.partition("=")
    vs = tuple(v.strip() for v in voices.split(",") if v.strip())
    if not name or not vs:
        raise argparse.ArgumentTypeError(f"expected test-NAME=VOICE[,VOICE...], got {text!r}")
    return name.strip(), vs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="corpus folder to create")
    p.add_argument("--seed", type=int, default=0, help="same seed -> identical corpus (default 0)")
    p.add_argument("--text-file", type=Path, help="one sentence per line (default: the fortunes files)")
    p.add_argument("--fortune-dir", type=Path, default=FORTUNE_DIR, help=f"default {FORTUNE_DIR}")
    p.add_argument("--top-words", type=int, help="only sentences made of the N most frequent words")
    p.add_argument("--min-words", type=int, default=4)
    p.add_argument("--max-words", type=int, default=20)
    p.add_argument("--num-train", type=int, help="training sentences (default: all left after dev/test)")
    p.add_argument("--num-dev", type=int, default=300)
    p.add_argument("--num-test", type=int, default=300)
    p.add_argument("--train-voices-per-sentence", type=int, default=1)
    p.add_argument("--extra-train-voices", type=int, default=0,
                   help="with --top-words: also speak each sentence it leaves out into train only, with this "
                        "many voices (default 0: leave them out); dev and test are unchanged by it")
    p.add_argument("--voices", help="comma-separated voices for train/dev/test: espeak-ng names (en-us+f3), "
                                    "flite:NAME, festival:NAME (default: built-in espeak-ng list + installed "
                                    "MBROLA voices); kal and slt voices are refused (evaluation-only)")
    p.add_argument("--unseen-voice", default=DEFAULT_UNSEEN_VOICE, help=f"test-unseen-voice split's voice "
                                                                         f"(default {DEFAULT_UNSEEN_VOICE})")
    p.add_argument("--eval-split", type=_eval_split, action="append", default=[], metavar="test-NAME=VOICES",
                   help="an extra test split speaking the test sentences with these comma-separated voices "
                        "(taking turns); repeatable; its speakers must not be training speakers")
    p.add_argument("--unseen-speakers", action="store_true",
                   help="add the evaluation-only speakers' splits: " + "; ".join(
                       f"{n}={','.join(vs)}" for n, vs in UNSEEN_SPEAKER_SPLITS))
    p.add_argument("--rate-range", type=_pair, default=(140, 210), help="words per minute LO,HI (default 140,210)")
    p.add_argument("--pitch-range", type=_pair, default=(30, 70), help="espeak-ng pitch 0-99 LO,HI (default 30,70)")
    p.add_argument("--snr-db", type=float, help="add white noise at this SNR in dB (default: clean)")
    p.add_argument("--min-train-vocab", type=int, default=2000, help="distinct training words required")
    p.add_argument("--jobs", type=int, default=1, help="parallel espeak-ng processes")
    p.add_argument("--only-splits", help="comma-separated splits to write (e.g. test,test-unseen-voice); the plan "
                                         "is drawn for the whole corpus as usual, so they equal a full run's")
    p.add_argument("--overwrite", action="store_true", help="replace a corpus this tool wrote before")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    try:
        cfg = SynthConfig(
            out_dir=args.out_dir, seed=args.seed, text_file=args.text_file, fortune_dir=args.fortune_dir,
            top_words=args.top_words, min_words=args.min_words, max_words=args.max_words,
            num_train=args.num_train, num_dev=args.num_dev, num_test=args.num_test,
            train_voices_per_sentence=args.train_voices_per_sentence, extra_train_voices=args.extra_train_voices,
            voices=tuple(v.strip() for v in args.voices.split(",") if v.strip()) if args.voices else None,
            unseen_voice=args.unseen_voice, rate_range=args.rate_range, pitch_range=args.pitch_range,
            snr_db=args.snr_db, min_train_vocab=args.min_train_vocab, jobs=args.jobs, overwrite=args.overwrite,
            eval_voices=(UNSEEN_SPEAKER_SPLITS if args.unseen_speakers else ()) + tuple(args.eval_split),
            only_splits=tuple(v.strip() for v in args.only_splits.split(",") if v.strip()) if args.only_splits else None,
        )
        with Progress(TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, disable=args.quiet) as bar:
            task = bar.add_task("synth", total=None)
            report = synthesize_corpus(cfg, lambda done, total: bar.update(task, completed=done, total=total))
    except SynthError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    for split, n in report.utterances.items():
        console.print(f"{split:<18} {n:6d} utterances {report.seconds[split] / 60:9.1f} min", highlight=False)
    console.print(f"word timings for {report.timed} of {sum(report.utterances.values())} utterances "
                  f"(<speaker>-<chapter>.alignment.txt)", highlight=False)
    console.print(f"train vocabulary {report.train_vocab} words; voices: {', '.join(report.train_voices)}; "
                  f"unseen: {report.unseen_voice}; written to {report.out_dir}", highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
