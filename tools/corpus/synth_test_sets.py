#!/usr/bin/env python3
"""Write only the test sets of a synthetic corpus: the first N utterances of chosen test splits, exactly as
tools/corpus/synth_corpus.py with the same settings writes them (see asr_stream.corpus.synth.synthesize_test_sets).

Takes every option of tools/corpus/synth_corpus.py, plus --splits and --limit. E.g. the test sets of the recipe's
corpus (recipes/synthetic/run.sh stage 0), 100 utterances each, with the unseen-speaker splits:

    python tools/corpus/synth_test_sets.py data/synthetic-tests --seed 0 --top-words 3000 --max-words 16 \\
        --num-dev 200 --num-test 300 --train-voices-per-sentence 3 --extra-train-voices 2 --unseen-speakers \\
        --splits test test-unseen-voice test-kal test-slt --limit 100 --jobs 2
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from asr_stream.corpus import SynthConfig, SynthError, synthesize_test_sets
from asr_stream.corpus.engines import UNSEEN_SPEAKER_SPLITS


def _corpus_cli():
    spec = importlib.util.spec_from_file_location("synth_corpus_cli", Path(__file__).with_name("synth_corpus.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main(argv: list[str] | None = None) -> int:
    p = _corpus_cli().build_parser()
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--splits", nargs="+", required=True, help="test splits to write (test, test-unseen-voice, ...)")
    p.add_argument("--limit", type=int, help="first N utterances of each split: the first N test sentences, voices in turn (default: all)")
    a = p.parse_args(argv)
    try:
        cfg = SynthConfig(
            out_dir=a.out_dir, seed=a.seed, text_file=a.text_file, fortune_dir=a.fortune_dir, top_words=a.top_words,
            min_words=a.min_words, max_words=a.max_words, num_train=a.num_train, num_dev=a.num_dev,
            num_test=a.num_test, train_voices_per_sentence=a.train_voices_per_sentence,
            extra_train_voices=a.extra_train_voices,
            voices=tuple(v.strip() for v in a.voices.split(",") if v.strip()) if a.voices else None,
            unseen_voice=a.unseen_voice, rate_range=a.rate_range, pitch_range=a.pitch_range, snr_db=a.snr_db,
            min_train_vocab=a.min_train_vocab, jobs=a.jobs, overwrite=a.overwrite,
            eval_voices=(UNSEEN_SPEAKER_SPLITS if a.unseen_speakers else ()) + tuple(a.eval_split),
        )
        report = synthesize_test_sets(cfg, a.splits, a.limit)
    except SynthError as e:
        print(f"synth_test_sets: error: {e}", file=sys.stderr)
        return 2
    for split, n in report.utterances.items():
        print(f"{split:<18} {n:5d} utterances {report.seconds[split] / 60:7.1f} min")
    print(f"word timings for {report.timed} of {sum(report.utterances.values())}; written to {report.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
