#!/usr/bin/env python3
"""One table of several models' ``asr-stream eval`` results: WER per test set, on the same utterances.

Each model is ``NAME=DIR`` (or ``NAME=DIR,DIR2``: the first that has a set); DIR holds one eval output folder per set, named ``<set>`` or ``<set>-k3`` (what
``recipes/synthetic/run.sh`` writes). A cell is scored on the utterances every model has for that set, the first
``--limit`` of them in the first model's order, so a model evaluated on 300 utterances and one on 100 are compared
on the same 100. Sets whose name contains ``nonspeech`` have no words to find: the cell counts the words the model
wrote (the goal is 0). With ``--corpus``, the ``test`` set also gets one row per engine of its voices (espeak-ng,
MBROLA, Flite, Festival), as ``tools/report/wer_by_voice.py`` groups them.

    python tools/report/ablation_table.py --corpus data/synthetic_multi --limit 100 \\
        --sets test,test-unseen-voice,test-kal,test-slt,robust-clean,robust-nonspeech \\
        bundled=exp/baseline_multi ft=exp/synthetic_multi_ft/eval seed1=exp/synthetic_multi_ft/ablation/seed1/eval
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "report"))

from wer_by_voice import engine_of, read_records, voices_of  # noqa: E402


def find_run(model_dir: Path | list[Path], name: str) -> Path | None:
    for root in model_dir if isinstance(model_dir, list) else [model_dir]:
        for d in (root / name, root / f"{name}-k3"):
            if (d / "records.jsonl").is_file():
                return d
    return None


def shared_ids(present: list[list[dict]], limit: int | None) -> list[str]:
    """The utterances every record list has: the first ``limit`` of them, in the first list's order."""
    common = set.intersection(*({r["id"] for r in x} for x in present))
    return [r["id"] for r in present[0] if r["id"] in common][:limit]


def score(records: list[dict], ids: list[str], nonspeech: bool) -> tuple[str, float]:
    """(the table's cell, its number: WER % or, for non-speech, words written)."""
    from asr_stream.evaluation.wer import wer_details

    by_id = {r["id"]: r for r in records}
    refs = [by_id[i]["reference"] for i in ids]
    hyps = [by_id[i].get("hypothesis") or "" for i in ids]
    if nonspeech:
        words = sum(len(h.split()) for h in hyps)
        return f"{words} words ({sum(bool(h.strip()) for h in hyps)} of {len(ids)} clips)", float(words)
    d = wer_details(refs, hyps)
    return f"{100 * d['wer']:.1f} ({d['substitutions']}/{d['deletions']}/{d['insertions']})", 100 * d["wer"]


def read_table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """An earlier table of this tool: (its model names, row label -> its cells)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in path.read_text().splitlines()
            if line.startswith("|")]
    if len(rows) < 2 or rows[0][0] != "set (utterances)":
        raise SystemExit(f"error: {path}: not a table of tools/report/ablation_table.py")
    return rows[0][1:], {r[0]: r[1:] for r in rows[2:]}


def number(cell: str) -> float | None:
    """A cell's number (WER %, or words on non-speech); None for a missing one."""
    return None if cell == "–" else float(cell.split()[0])


def table(models: list[tuple[str, Path | list[Path]]], sets: list[str], limit: int | None, corpus: Path | None,
          values: dict | None = None, earlier: tuple[list[str], dict[str, list[str]]] | None = None) -> list[str]:
    """Markdown lines: a header, then one row per set (and per engine of ``test`` with a corpus). ``values``, if
    given, receives row label -> (non-speech?, [number per model, None where missing]) for :func:`plot`.
    ``earlier`` (:func:`read_table`): columns of an earlier table put first, copied by row label as they are."""
    old_names, old_rows = earlier if earlier is not None else ([], {})
    names = old_names + [name for name, _ in models]
    lines = ["| set (utterances) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    voices = voices_of(corpus) if corpus is not None else None

    def add(label: str, nonspeech: bool, copied: list[str], scored: list[tuple[str, float] | None]) -> None:
        lines.append(f"| {label} | " + " | ".join(copied + ["–" if c is None else c[0] for c in scored]) + " |")
        if values is not None:
            values[label] = (nonspeech, [number(c) for c in copied] + [None if c is None else c[1] for c in scored])

    for s in sets:
        runs = [find_run(d, s) for _, d in models]
        recs = [read_records(r) if r is not None else None for r in runs]
        present = [r for r in recs if r is not None]
        if not present:  # only the earlier table's columns have this set (if they have it)
            for label, copied in old_rows.items():
                if label.split(" (")[0].split(",")[0] == s:
                    add(label, "nonspeech" in s, copied, [None] * len(models))
            continue
        ids = shared_ids(present, limit)
        rows = [(f"{s} ({len(ids)})", ids)]
        if s == "test" and voices is not None:
            engines: dict[str, list[str]] = {}
            for i in ids:
                engines.setdefault(engine_of(voices.get(i.split("-")[0], "?")), []).append(i)
            rows += [(f"{s}, {e} voices ({len(v)})", v) for e, v in sorted(engines.items())]
        for label, sub in rows:
            add(label, "nonspeech" in s, old_rows.get(label, ["–"] * len(old_names)),
                [None if x is None else score(x, sub, "nonspeech" in s) for x in recs])
    return lines


def plot(models: list[str], values: dict, path: Path) -> None:
    """Grouped horizontal bars, one group per row of the table, one bar per model: WER on the left panel, words
    written on non-speech on the right (if any)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(False, "WER % (k = 3; lower is better)"), (True, "words on non-speech (goal 0)")]
    panels = [(ns, title) for ns, title in panels if any(v[0] == ns for v in values.values())]
    heights = [sum(v[0] == ns for v in values.values()) for ns, _ in panels]
    rows = max(heights)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 + 3 * (len(panels) - 1), 0.12 * rows * (len(models) + 1) + 1.5),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 2][: len(panels)]})
    width = 0.8 / len(models)
    cycle = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors  # a colour per model, none repeated
    for ax, (ns, title) in zip(axes[0], panels):
        labels = [k for k, v in values.items() if v[0] == ns][::-1]
        y = np.arange(rows - len(labels), rows)  # rows from the top, the same height in both panels
        for m, name in enumerate(models):  # the first model on top of each group, as in the legend
            xs = [values[k][1][m] for k in labels]
            ax.barh(y + ((len(models) - 1) / 2 - m) * width, [np.nan if x is None else x for x in xs], width, label=name,
                    color=cycle[m % len(cycle)])
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(-0.6, rows - 0.4)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=DIR[,DIR...]: a model's folders of eval outputs (<set> or <set>-k3; the "
                    "first folder that has a set is used)")
    ap.add_argument("--sets", required=True, help="comma-separated set names, e.g. test,test-kal,robust-nonspeech")
    ap.add_argument("--limit", type=int, default=None, help="score the first N common utterances of each set")
    ap.add_argument("--corpus", type=Path, default=None, help="the corpus root (SPEAKERS.TXT): per-engine rows for test")
    ap.add_argument("--plot", type=Path, default=None, help="also draw the table as grouped bars into this PNG")
    ap.add_argument("--earlier", type=Path, default=None, help="an earlier table of this tool whose eval folders are "
                    "gone: its columns come first, copied by row label (the same --sets, --limit and corpus give the "
                    "same rows; a row it lacks shows -)")
    a = ap.parse_args(argv)
    models = []
    for m in a.models:
        name, sep, d = m.partition("=")
        dirs = [Path(x) for x in d.split(",")]
        if not sep or not name or not all(x.is_dir() for x in dirs):
            raise SystemExit(f"error: {m!r}: expected NAME=DIR[,DIR...] with existing folders")
        models.append((name, dirs))
    values: dict = {}
    earlier = read_table(a.earlier) if a.earlier is not None else None
    print("\n".join(table(models, [x.strip() for x in a.sets.split(",") if x.strip()], a.limit, a.corpus, values,
                           earlier)))
    if a.plot is not None:
        if a.plot.exists():
            raise SystemExit(f"error: {a.plot}: exists; choose a new file (nothing is overwritten)")
        plot((earlier[0] if earlier else []) + [n for n, _ in models], values, a.plot)
        print(f"plot: {a.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
