#!/usr/bin/env python3
"""Write the real-human-speech test set from Debian's pocketsphinx-testdata package (asr_stream.data.human):
11 recordings with their transcripts as 16 kHz FLAC, a JSONL manifest, the package's licence and a NOTICE.

    make corpus-sysdeps                          # installs pocketsphinx-testdata (Debian main, BSD-2)
    python tools/corpus/make_human_set.py data/human
    python -m asr_stream eval --data data/human/human.jsonl --k 3 --output exp/human
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr_stream.data import DataError
from asr_stream.data.human import DEFAULT_SOURCE, make_human_set


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="new folder for the audio, manifests, copyright and NOTICE")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                   help=f"the package's data folder (default {DEFAULT_SOURCE}; only read)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it holds a set this tool wrote")
    a = p.parse_args(argv)
    try:
        s = make_human_set(a.out, a.source, a.overwrite)
    except (DataError, OSError) as e:
        print(f"make_human_set: error: {e}", file=sys.stderr)
        return 2
    for u in s.utterances:
        print(f"{u.id:<52} {u.duration:6.2f} s  {u.text}")
    total = sum(u.duration for u in s.utterances)
    print(f"{len(s.utterances)} utterances, {total:.2f} s (pocketsphinx-testdata {s.version}) -> {s.manifests['all']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
