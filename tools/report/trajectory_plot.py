#!/usr/bin/env python3
"""WER on the unseen speakers against fine-tuning steps and training voices: where the models are, and how far the
goal is. Prints a markdown table and, with ``--output``, draws one panel per test set.

Each model is ``LABEL:STEPS:VOICES=DIR[,DIR2]``: its fine-tuning steps (0 for a model trained from scratch), the
number of voices it was trained on, and its ``asr-stream eval`` folders (as ``tools/report/ablation_table.py`` takes them).
Every point of a set is scored on the same utterances: the first ``--limit`` that every model (and the reference)
has, in the first model's order. ``--reference NAME=DIR`` adds another recogniser's results (PocketSphinx) as a
horizontal line per set; ``--goal`` a dashed one.

    python tools/report/trajectory_plot.py --limit 100 --sets test-kal,test-slt,test-unseen-voice \\
        "bundled:0:15=exp/baseline_multi" "run B:700:24=exp/synthetic_multi_ft/eval" \\
        --reference PocketSphinx=exp/psphinx_multi --goal 30 --output trajectory.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "report"))

from ablation_table import find_run, score, shared_ids  # noqa: E402
from wer_by_voice import read_records  # noqa: E402


def parse_model(spec: str) -> tuple[str, int, int, list[Path]]:
    head, sep, dirs = spec.rpartition("=")
    parts = head.rsplit(":", 2)
    if not sep or len(parts) != 3 or not dirs:
        raise SystemExit(f"{spec!r}: expected LABEL:STEPS:VOICES=DIR[,DIR2]")
    try:
        steps, voices = int(parts[1]), int(parts[2])
    except ValueError:
        raise SystemExit(f"{spec!r}: STEPS and VOICES must be whole numbers") from None
    return parts[0], steps, voices, [Path(d) for d in dirs.split(",")]


def points(models, reference, sets: list[str], limit: int | None) -> dict[str, dict]:
    """set -> {"ids": n, "models": [WER % or None per model], "reference": WER % or None}."""
    out = {}
    for s in sets:
        runs = [find_run(dirs, s) for *_, dirs in models]
        ref_run = find_run(reference[1], s) if reference else None
        recs = [read_records(r) if r is not None else None for r in runs]
        ref_recs = read_records(ref_run) if ref_run is not None else None
        present = [r for r in recs + [ref_recs] if r is not None]
        if not present:
            out[s] = {"ids": 0, "models": [None] * len(models), "reference": None}
            continue
        ids = shared_ids(present, limit)
        out[s] = {"ids": len(ids), "models": [score(r, ids, False)[1] if r is not None else None for r in recs],
                  "reference": score(ref_recs, ids, False)[1] if ref_recs is not None else None}
    return out


def plot(models, reference, values: dict, goal: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(values)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.0), sharey=True, squeeze=False)
    style = {v: (m, f"C{i}") for i, (v, m) in enumerate(zip(sorted({m[2] for m in models}), "so^Dv"))}  # per voice count
    for ax, s in zip(axes[0], sets):
        v = values[s]
        best: dict[int, float] = {}
        for j, ((label, steps, voices, _), w) in enumerate(zip(models, v["models"])):
            if w is None:
                continue
            ax.plot(steps, w, style[voices][0], color=style[voices][1], ms=6, alpha=0.8)
            ax.annotate(str(j + 1), (steps, w), textcoords="offset points", xytext=(6, -3), fontsize=7)  # the table's #
            best[steps] = min(w, best.get(steps, w))
        xs = sorted(best)
        ax.plot(xs, [best[x] for x in xs], "-", color="0.4", lw=1, label="best at each step count")
        if v["reference"] is not None:
            ax.axhline(v["reference"], color="C2", ls=":", label=f"{reference[0]} ({v['reference']:.1f} %)")
        if goal is not None:
            ax.axhline(goal, color="C3", ls="--", label=f"goal ({goal:g} %)")
        ax.set_title(f"{s} ({v['ids']} utterances)", fontsize=9)
        ax.set_xlabel("fine-tuning steps (points: the table's #)")
        ax.margins(x=0.15)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("WER %")
    handles = [plt.Line2D([], [], ls="", marker=m, color=c, label=f"{v} training voices") for v, (m, c) in style.items()]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="LABEL:STEPS:VOICES=DIR[,DIR2]")
    ap.add_argument("--sets", default="test-kal,test-slt,test-unseen-voice")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--reference", default=None, help="NAME=DIR: another recogniser's eval folders (a line per set)")
    ap.add_argument("--goal", type=float, default=None, help="the goal's WER %% (a dashed line)")
    ap.add_argument("--output", default=None, help="the plot (PNG); an existing file is not overwritten")
    a = ap.parse_args(argv)
    models = [parse_model(m) for m in a.models]
    reference = None
    if a.reference:
        name, sep, d = a.reference.partition("=")
        if not sep or not d:
            raise SystemExit(f"--reference {a.reference!r}: expected NAME=DIR")
        reference = (name, [Path(d)])
    out = Path(a.output) if a.output else None
    if out is not None and out.exists():
        raise SystemExit(f"{out} exists; choose another --output or delete it")
    values = points(models, reference, a.sets.split(","), a.limit)
    sets = list(values)
    print("| # | model | fine-tuning steps | training voices | " + " | ".join(f"{s} ({values[s]['ids']})" for s in sets) + " |")
    print("|---|---|---|---|" + "---|" * len(sets))
    f = lambda w: "–" if w is None else f"{w:.1f}"  # noqa: E731
    for j, (label, steps, voices, _) in enumerate(models):
        print(f"| {j + 1} | {label} | {steps} | {voices} | " + " | ".join(f(values[s]["models"][j]) for s in sets) + " |")
    if reference:
        print(f"| | {reference[0]} | – | – | " + " | ".join(f(values[s]["reference"]) for s in sets) + " |")
    if a.goal is not None:
        print("| | goal | | | " + " | ".join(f"≤ {a.goal:g}" for _ in sets) + " |")
    if out is not None:
        plot(models, reference, values, a.goal, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
