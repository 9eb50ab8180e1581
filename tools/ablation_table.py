#!/usr/bin/env python3
"""One table of several models' ``asr-stream eval`` results: WER per test set, on the same utterances.

Each model is ``NAME=DIR``; DIR holds one eval output folder per set, named ``<set>`` or ``<set>-k3`` (what
``recipes/synthetic/run.sh`` writes). A cell is scored on the utterances every model has for that set, the first
``--limit`` of them in the first model's order, so a model evaluated on 300 utterances and one on 100 are compared
on the same 100. Sets whose name contains ``nonspeech`` have no words to find: the cell counts the words the model
wrote (the goal is 0). With ``--corpus``, the ``test`` set also gets one row per engine of its voices (espeak-ng,
MBROLA, Flite, Festival), as ``tools/wer_by_voice.py`` groups them.

    python tools/ablation_table.py --corpus data/synthetic_multi --limit 100 \\
        --sets test,test-unseen-voice,test-kal,test-slt,robust-clean,robust-nonspeech \\
        bundled=exp/baseline_multi ft=exp/synthetic_multi_ft/eval seed1=exp/synthetic_multi_ft/ablation/seed1/eval
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from wer_by_voice import engine_of, read_records, voices_of  # noqa: E402


def find_run(model_dir: Path, name: str) -> Path | None:
    for d in (model_dir / name, model_dir / f"{name}-k3"):
        if (d / "records.jsonl").is_file():
            return d
    return None


def cell(records: list[dict], ids: list[str], nonspeech: bool) -> str:
    from asr_stream.evaluation.wer import wer_details

    by_id = {r["id"]: r for r in records}
    refs = [by_id[i]["reference"] for i in ids]
    hyps = [by_id[i].get("hypothesis") or "" for i in ids]
    if nonspeech:
        words = sum(len(h.split()) for h in hyps)
        return f"{words} words ({sum(bool(h.strip()) for h in hyps)} of {len(ids)} clips)"
    d = wer_details(refs, hyps)
    return f"{100 * d['wer']:.1f} ({d['substitutions']}/{d['deletions']}/{d['insertions']})"


def table(models: list[tuple[str, Path]], sets: list[str], limit: int | None, corpus: Path | None) -> list[str]:
    """Markdown lines: a header, then one row per set (and per engine of ``test`` with a corpus)."""
    lines = ["| set (utterances) | " + " | ".join(name for name, _ in models) + " |", "|---|" + "---|" * len(models)]
    voices = voices_of(corpus) if corpus is not None else None
    for s in sets:
        runs = [find_run(d, s) for _, d in models]
        recs = [read_records(r) if r is not None else None for r in runs]
        present = [r for r in recs if r is not None]
        if not present:
            continue
        common = set.intersection(*({r["id"] for r in x} for x in present))
        ids = [r["id"] for r in present[0] if r["id"] in common][:limit]
        rows = [(f"{s} ({len(ids)})", ids)]
        if s == "test" and voices is not None:
            engines: dict[str, list[str]] = {}
            for i in ids:
                engines.setdefault(engine_of(voices.get(i.split("-")[0], "?")), []).append(i)
            rows += [(f"{s}, {e} voices ({len(v)})", v) for e, v in sorted(engines.items())]
        for label, sub in rows:
            cells = ["–" if x is None else cell(x, sub, "nonspeech" in s) for x in recs]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=DIR: a model's folder of eval outputs (<set> or <set>-k3)")
    ap.add_argument("--sets", required=True, help="comma-separated set names, e.g. test,test-kal,robust-nonspeech")
    ap.add_argument("--limit", type=int, default=None, help="score the first N common utterances of each set")
    ap.add_argument("--corpus", type=Path, default=None, help="the corpus root (SPEAKERS.TXT): per-engine rows for test")
    a = ap.parse_args(argv)
    models = []
    for m in a.models:
        name, sep, d = m.partition("=")
        if not sep or not name or not Path(d).is_dir():
            raise SystemExit(f"error: {m!r}: expected NAME=DIR with an existing folder")
        models.append((name, Path(d)))
    print("\n".join(table(models, [x.strip() for x in a.sets.split(",") if x.strip()], a.limit, a.corpus)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
