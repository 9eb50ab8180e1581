"""A grid of settings (mode × k × φ × chunk), one :func:`evaluate` per cell; resumable; tables and plots.

Each cell lives in ``<out>/cells/<name>/`` (records.jsonl + summary.json). A killed sweep continues: a cell
with a summary is kept, a half-done cell resumes from its records.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .runner import Setting, evaluate

COLUMNS = ["name", "mode", "k", "phi", "chunk_ms", "as_trained", "train_mode", "train_k", "train_phi", "utterances",
           "wer", "substitutions", "deletions", "insertions", "AL", "LAAL", "AL_CA", "LAAL_CA", "first_word_delay",
           "last_word_delay", "PR50", "PR90", "rtf"]
TRAINING = ("as_trained", "train_mode", "train_k", "train_phi")  # from the cell's model (``summary["training"]``)


def grid(modes: Sequence[str], ks: Sequence[int], phis: Sequence[float], chunks: Sequence[Optional[int]]) -> list[Setting]:
    return [Setting(m, k, p, c) for m, k, p, c in itertools.product(modes, ks, phis, chunks)]


def run_sweep(load_model, utts, settings: Sequence[Setting], out_dir: str | Path, progress: bool = True) -> list[dict]:
    """``load_model(mode) -> SpeechLLM`` lets each mode use the model trained with its own layout."""
    from rich.progress import Progress

    out = Path(out_dir)
    rows = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("sweep", total=len(settings))
        for s in settings:
            cell = out / "cells" / s.name
            # a finished cell is not recomputed: evaluate() checks its settings and reads its records back
            summary = evaluate(load_model(s.mode), utts, s, cell, progress=progress)
            rows.append(summary)
            bar.advance(task)
            write_tables(rows, out)  # after every cell, so partial results are always on disk
    plot(rows, out)
    return rows


def flat(row: Mapping) -> dict:
    s = row["setting"]
    t = row.get("training")  # absent in cells written before it was recorded
    trained = {"as_trained": None, "train_mode": None, "train_k": None, "train_phi": None} if t is None else {
        "as_trained": not t["differences"], "train_mode": t["mode"], "train_k": " ".join(str(k) for k in t["k"]),
        "train_phi": t["phi"]}
    return {"name": row["name"], "mode": s["mode"], "k": s["k"], "phi": s["phi"], "chunk_ms": s["chunk_ms"] or "",
            **trained, **{c: row.get(c) for c in COLUMNS if c not in ("name", "mode", "k", "phi", "chunk_ms") + TRAINING},
            "differences": "; ".join(t["differences"]) if t else None}


def _fmt(v) -> str:
    if v is None:  # a metric the cell does not have (PR50 / PR90 without word alignments)
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_tables(rows: Sequence[Mapping], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = [flat(r) for r in rows]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS + ["differences"])
        w.writeheader()
        w.writerows(table)
    (out / "results.json").write_text(json.dumps(table, indent=2))
    lines = ["| mode | k | φ | chunk ms | as trained | WER % | S/D/I | AL ms | LAAL ms | LAAL-CA ms | first ms | last ms "
             "| PR50 ms | PR90 ms | RTF |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        trained = "–" if t["as_trained"] is None else "yes" if t["as_trained"] else f"no: {t['differences']}"
        lines.append(f"| {t['mode']} | {t['k']} | {t['phi']:g} | {t['chunk_ms']} | {trained} | {100 * t['wer']:.1f} | "
                     f"{t['substitutions']}/{t['deletions']}/{t['insertions']} | {_fmt(t['AL'])} | {_fmt(t['LAAL'])} | "
                     f"{_fmt(t['LAAL_CA'])} | {_fmt(t['first_word_delay'])} | {_fmt(t['last_word_delay'])} | "
                     f"{_fmt(t['PR50'])} | {_fmt(t['PR90'])} | {_fmt(t['rtf'])} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _line_plot(lines: Mapping[str, tuple[list, list]], xlabel: str, path: Path) -> Path:
    """One line per label: (xs, WER fractions) -> PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (xs, wers) in lines.items():
        ax.plot(xs, [100 * w for w in wers], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("WER (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(rows: Sequence[Mapping], out: Path) -> list[Path]:
    """WER vs k (one line per mode and φ) and WER vs LAAL (one line per mode)."""
    table = [flat(r) for r in rows]
    by_k: dict[str, tuple[list, list]] = {}
    for t in sorted(table, key=lambda t: (t["mode"], t["phi"], t["k"])):
        xs, ys = by_k.setdefault(f"{t['mode']} φ={t['phi']:g}", ([], []))
        xs.append(t["k"])
        ys.append(t["wer"])
    by_laal: dict[str, tuple[list, list]] = {}
    for t in sorted(table, key=lambda t: (t["mode"], t["LAAL"] if t["LAAL"] == t["LAAL"] else 0.0)):
        xs, ys = by_laal.setdefault(t["mode"], ([], []))
        xs.append(t["LAAL"])
        ys.append(t["wer"])
    return [_line_plot(by_k, "k (chunks)", out / "wer_vs_k.png"), _line_plot(by_laal, "LAAL (ms)", out / "wer_vs_laal.png")]
