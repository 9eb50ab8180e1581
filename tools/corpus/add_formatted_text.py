#!/usr/bin/env python3
"""Add <speaker>-<chapter>.formatted.txt (the text with case and punctuation) to a synthetic corpus made before
the corpus tool kept it, by planning the corpus again from its settings (asr_stream.corpus.formatted).

Every transcript line must be the plan's, or nothing is written. E.g. the recipe's corpus, whose settings are those
of data/synthetic_multi_eval (the same seed and text; eval splits have draws of their own):

    python tools/corpus/add_formatted_text.py data/synthetic_multi --settings data/synthetic_multi_eval/synth_config.json --check
    python tools/corpus/add_formatted_text.py data/synthetic_multi --settings data/synthetic_multi_eval/synth_config.json
"""

from __future__ import annotations

import argparse
import sys

from asr_stream.corpus.formatted import add_formatted_text
from asr_stream.corpus.text import SynthError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", help="the corpus folder (LibriSpeech layout, written by tools/corpus/synth_corpus.py)")
    p.add_argument("--settings", help="the synth_config.json it was made with (default: CORPUS/synth_config.json)")
    p.add_argument("--check", action="store_true", help="only check that the plan matches every transcript")
    p.add_argument("--overwrite", action="store_true", help="replace formatted.txt files that exist")
    a = p.parse_args(argv)
    try:
        r = add_formatted_text(a.corpus, a.settings, check_only=a.check, overwrite=a.overwrite)
    except SynthError as e:
        print(f"add_formatted_text: error: {e}", file=sys.stderr)
        return 2
    verb = "checked (nothing written)" if a.check else f"{r.written} formatted.txt files written"
    print(f"{r.utterances} utterances in {r.chapters} chapters match the plan; {verb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
