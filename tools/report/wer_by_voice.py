#!/usr/bin/env python3
"""WER per voice and per engine of ``asr-stream eval`` (or ``tools/baselines/pocketsphinx_eval.py``) results on a synthetic corpus.

The corpus's ``SPEAKERS.TXT`` names the voice behind each speaker id; each ``records.jsonl`` line has the utterance
id (``<speaker>-<chapter>-<utt>``), its reference and hypothesis. Rows are grouped by voice and by engine (espeak-ng,
MBROLA through espeak-ng, Flite, Festival), scored with asr_stream.evaluation.wer.wer_details (the normalisation of
``asr-stream eval``). What an engine's voices gain or lose between two models is the engine part of an ablation:

    python tools/report/wer_by_voice.py data/synthetic_multi exp/synthetic_multi/eval/test-k3 exp/baseline_multi/test300
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def voices_of(corpus: Path) -> dict[str, str]:
    """Speaker id -> voice name, from the corpus's SPEAKERS.TXT."""
    path = corpus / "SPEAKERS.TXT"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (a corpus written by tools/corpus/synth_corpus.py has one)")
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        f = [x.strip() for x in line.split("|")]
        out[f[0]] = f[4]
    return out


def engine_of(voice: str) -> str:
    if voice.startswith("mb-"):
        return "mbrola"
    if ":" in voice:
        return voice.split(":", 1)[0]
    return "espeak"


def read_records(run: Path) -> list[dict]:
    path = run / "records.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (the --output folder of asr-stream eval)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(corpus: Path, runs: list[Path]) -> list[tuple[str, list[tuple[float, int, int]]]]:
    """[(row label, [(WER %, utterances, reference words) per run])], voices then engines then all."""
    from asr_stream.evaluation.wer import wer_details

    voices = voices_of(corpus)
    per_run = []
    for run in runs:
        groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for r in read_records(run):
            voice = voices.get(r["id"].split("-")[0], "?")
            pair = (r["reference"], r.get("hypothesis") or "")
            groups[voice].append(pair)
            groups[f"[{engine_of(voice)}]"].append(pair)
            groups["[all]"].append(pair)
        per_run.append(groups)
    labels = sorted({k for g in per_run for k in g if not k.startswith("[")})
    labels += sorted({k for g in per_run for k in g if k.startswith("[") and k != "[all]"}) + ["[all]"]
    rows = []
    for label in labels:
        cells = []
        for g in per_run:
            pairs = g.get(label, [])
            if not pairs:
                cells.append((float("nan"), 0, 0))
                continue
            d = wer_details([p[0] for p in pairs], [p[1] for p in pairs])
            cells.append((100 * d["wer"], len(pairs), d["ref_words"]))
        rows.append((label, cells))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path, help="the synthetic corpus root (with SPEAKERS.TXT)")
    ap.add_argument("runs", type=Path, nargs="+", help="eval output folders (records.jsonl)")
    a = ap.parse_args(argv)
    rows = table(a.corpus, a.runs)
    print("| voice | " + " | ".join(f"{r.name} WER % (utts)" for r in a.runs) + " |")
    print("|---|" + "---|" * len(a.runs))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join("–" if n == 0 else f"{w:.1f} ({n})" for w, n, _ in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
