#!/usr/bin/env python3
"""Paired comparison of finished ``asr-stream eval`` runs of the same utterances, without decoding again.

``eval --baseline DIR`` compares while it decodes; this reads two or more ``--output`` folders afterwards and prints,
for each run against the first (the baseline), the WER and LAAL differences with 95 % paired-bootstrap intervals
(``asr_stream.evaluation.stats.compare``: the same numbers ``--baseline`` prints). Each folder's ``summary.json`` also
gives the formatted figures where the run has them (case- and punctuation-sensitive WER, punctuation F1).

    python tools/report/compare_evals.py exp/synthetic_plain_ft/eval/test-k3 exp/synthetic_cased_ft/eval/test-k3

``--json FILE`` also writes the comparisons as JSON (a new file; an existing one is refused).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def load(folder: Path) -> tuple[list[dict], dict]:
    records = folder / "records.jsonl"
    if not records.is_file():
        raise SystemExit(f"error: {folder}: no records.jsonl (the --output folder of asr-stream eval)")
    from asr_stream.evaluation.runner import read_records

    summary = folder / "summary.json"
    return list(read_records(records).values()), (json.loads(summary.read_text()) if summary.is_file() else {})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("baseline", type=Path, help="eval --output folder to compare against")
    p.add_argument("runs", type=Path, nargs="+", help="eval --output folders of the same utterances")
    p.add_argument("--json", type=Path, help="also write the comparisons here (a new file)")
    a = p.parse_args(argv)
    if a.json is not None and a.json.exists():
        raise SystemExit(f"error: --json {a.json} exists; give a new file")
    from asr_stream.evaluation.stats import compare, format_interval

    base, base_summary = load(a.baseline)
    out = []
    print(f"baseline {a.baseline}: WER {100 * base_summary.get('wer', float('nan')):.2f} % over {len(base)} utterances")
    for run in a.runs:
        rows, summary = load(run)
        try:
            c = compare(base, rows)
        except ValueError as e:
            raise SystemExit(f"error: {run}: {e}") from None
        extra = {k: summary[k] for k in ("formatted_wer", "punct_f1", "punct_precision", "punct_recall")
                 if summary.get(k) is not None}
        out.append({"run": str(run), "wer": summary.get("wer"), **c, **extra})
        shown = "".join(f", {k} {v:.3f}" for k, v in extra.items())
        print(f"{run}: WER {100 * summary.get('wer', float('nan')):.2f} %, {100 * c['wer_diff']:+.2f} points "
              f"{format_interval(*c['wer_diff_ci'], 100, 2, True)}; LAAL {c['LAAL_diff']:+.0f} ms "
              f"{format_interval(*c['LAAL_diff_ci'], 1, 0, True)}; {c['better']} utterances better, {c['worse']} worse"
              f"{shown}")
    if a.json is not None:
        from asr_stream.evaluation.runner import standard_json

        with open(a.json, "x") as f:
            f.write(standard_json({"baseline": str(a.baseline), "runs": out}))  # an undefined figure is null
    return 0


if __name__ == "__main__":
    sys.exit(main())
