"""A grid of settings (mode × k × φ × chunk), one :func:`evaluate` per cell; resumable; tables and plots.

Each cell lives in ``<out>/cells/<name>/`` (records.jsonl + summary.json). A killed sweep continues: a cell
with a summary is kept, a half-done cell resumes from its records.
"""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .runner import Setting, evaluate, read_records, standard_json
from .stats import compare

COLUMNS = ["name", "mode", "k", "phi", "chunk_ms", "policy", "as_trained", "train_mode", "train_k", "train_phi", "utterances",
           "wer", "substitutions", "deletions", "insertions", "AL", "LAAL", "AL_CA", "LAAL_CA", "first_word_delay",
           "last_word_delay", "PR50", "PR90", "lag_mean", "rtf", "wer_lo", "wer_hi", "LAAL_lo", "LAAL_hi", "baseline", "dwer",
           "dwer_lo", "dwer_hi", "dLAAL", "dLAAL_lo", "dLAAL_hi", "better", "worse"]
CI = ("wer_lo", "wer_hi", "LAAL_lo", "LAAL_hi")  # the row's own 95 % intervals (from its summary)
VS = ("baseline", "dwer", "dwer_lo", "dwer_hi", "dLAAL", "dLAAL_lo", "dLAAL_hi", "better", "worse")  # against the baseline row
TRAINING = ("as_trained", "train_mode", "train_k", "train_phi")  # from the cell's model (``summary["training"]``)


def grid(modes: Sequence[str], ks: Sequence[int], phis: Sequence[float], chunks: Sequence[Optional[int]]) -> list[Setting]:
    return [Setting(m, k, p, c) for m, k, p, c in itertools.product(modes, ks, phis, chunks)]


def policy_settings(base: Sequence[Setting], policies: Sequence[str], policy_grid: Mapping[str, Mapping[str, Sequence[float]]]) -> list[Setting]:
    """Each base setting under each policy: waitk as it is; an adaptive policy at every combination of its grid's
    values (``{"threshold": [0.3, 0.5], "margin": [0, 1]}`` -> 4 cells). A grid that sets k_max makes the base
    settings' k irrelevant to that policy, so those cells are not repeated per k."""
    from dataclasses import replace

    from ..config import POLICIES

    unknown = sorted(set(policies) - set(POLICIES)) + sorted(set(policy_grid) - set(policies))
    if unknown:
        raise ValueError(f"policy grid: unknown or unselected policies {', '.join(unknown)} (policies: {', '.join(policies)})")
    out: list[Setting] = []
    for p in dict.fromkeys(policies):
        if p == "waitk":
            if policy_grid.get(p):
                raise ValueError("policy grid: waitk has no parameters (use --ks)")
            out += list(base)
            continue
        axes = {a: list(v if isinstance(v, (list, tuple)) else [v]) for a, v in sorted(policy_grid.get(p, {}).items())}
        combos = [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())] or [{}]
        seen = set()
        for b in base:
            for c in combos:
                s = replace(b, k=None if "k_max" in c else b.k, policy=p,
                            policy_args=tuple(sorted((a, float(v)) for a, v in c.items())))
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def baseline_index(baseline: Optional[str], settings: Sequence[Setting], resolved=None) -> int:
    """The row the others are compared with: None -> the first; a row number (1-based, the order of the tables) or a
    cell's name (``group-k3-phi0``, the ``name`` column; for an adaptive policy the name with or without the k_min
    filled in). ``resolved()`` gives the settings with the defaults filled in; it is called only when the name is not
    found otherwise. One-line error when there is no such row."""
    if baseline is None:
        return 0
    b = baseline.strip()
    if b.isdigit() and 1 <= int(b) <= len(settings):
        return int(b) - 1
    names = [s.name for s in settings]
    if b not in names and resolved is not None:
        names = [r.name if b == r.name else n for n, r in zip(names, resolved())]
    if b in names:
        return names.index(b)
    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    raise ValueError(f"--baseline {baseline!r}: no such cell (a row number 1-{len(settings)} or a name: {shown})")


def run_sweep(load_model, utts, settings: Sequence[Setting], out_dir: str | Path, progress: bool = True,
              baseline: Optional[str] = None) -> list[dict]:
    """``load_model(mode) -> SpeechLLM`` lets each mode use the model trained with its own layout.

    Cells are named with the model's defaults filled in (an adaptive policy's k_min). Every row is compared with the
    ``baseline`` row (:func:`baseline_index`; default the first) on the same utterances: its WER and LAAL difference
    with a 95 % paired-bootstrap interval (:func:`asr_stream.evaluation.stats.compare`), columns ``dwer`` and
    ``dLAAL`` of the tables."""
    from rich.progress import Progress

    out = Path(out_dir)
    base = baseline_index(baseline, settings, lambda: [s.resolved(load_model(s.mode), warn=False)[0] for s in settings])
    rows: list[dict] = []
    records: list[list[dict]] = []
    vs: list[Optional[dict]] = []  # each row's comparison with the baseline row (stats.compare)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("sweep", total=len(settings))
        for s in settings:
            model = load_model(s.mode)
            cell = out / "cells" / s.resolved(model, warn=False)[0].name
            # a finished cell is not recomputed: evaluate() checks its settings and reads its records back
            rows.append(evaluate(model, utts, s, cell, progress=progress))
            recs = read_records(cell / "records.jsonl")
            records.append([recs[u.id] for u in utts if u.id in recs])
            if len(records) == base + 1:  # the baseline is in: compare every row so far with it
                vs = [compare(records[base], r) for r in records[:-1]] + [{"baseline": True}]
            else:  # a row after the baseline is compared with it; before it, not yet
                vs.append(compare(records[base], records[-1]) if len(records) > base + 1 else None)
            bar.advance(task)
            write_tables(rows, out, vs)  # after every cell, so partial results are always on disk
    plot(rows, out)
    return rows


def flat(row: Mapping, vs: Optional[Mapping] = None) -> dict:
    """One table row of a cell's summary; ``vs``: its comparison with the baseline row (:func:`stats.compare`, or
    ``{"baseline": True}`` for the baseline itself)."""
    s = row["setting"]
    t = row.get("training")  # absent in cells written before it was recorded
    trained = {"as_trained": None, "train_mode": None, "train_k": None, "train_phi": None} if t is None else {
        "as_trained": not t["differences"], "train_mode": t["mode"], "train_k": " ".join(str(k) for k in t["k"]),
        "train_phi": t["phi"]}
    policy = "-".join([s.get("policy", "waitk")] + [f"{a}{v:g}" for a, v in s.get("policy_args", ())])
    return {"name": row["name"], "mode": s["mode"], "k": s["k"], "phi": s["phi"], "chunk_ms": s["chunk_ms"] or "", "policy": policy,
            **trained, **{c: row.get(c) for c in COLUMNS if c not in ("name", "mode", "k", "phi", "chunk_ms", "policy") + TRAINING + CI + VS},
            **dict(zip(CI, (row.get("wer_ci") or [None] * 2) + (row.get("LAAL_ci") or [None] * 2))),
            **_vs_columns(vs), "differences": "; ".join(t["differences"]) if t else None}


def _vs_columns(vs: Optional[Mapping]) -> dict:
    if vs is None:
        return dict.fromkeys(VS)
    if vs.get("baseline"):
        return {**dict.fromkeys(VS), "baseline": True}
    return {"baseline": False, "dwer": vs["wer_diff"], "dwer_lo": vs["wer_diff_ci"][0], "dwer_hi": vs["wer_diff_ci"][1],
            "dLAAL": vs["LAAL_diff"], "dLAAL_lo": vs["LAAL_diff_ci"][0], "dLAAL_hi": vs["LAAL_diff_ci"][1],
            "better": vs["better"], "worse": vs["worse"]}


def _fmt(v) -> str:
    if v is None:  # a metric the cell does not have (PR50 / PR90 without word alignments)
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _ci(lo, hi, scale: float = 1.0, digits: int = 1, signed: bool = False) -> str:
    from .stats import format_interval

    return "–" if lo is None or hi is None else format_interval(lo, hi, scale, digits, signed)


def _vs_cells(t: Mapping) -> tuple[str, str]:
    """The markdown ΔWER and ΔLAAL cells of a row: ``-0.7 [-1.6, +0.1]``, ``baseline``, or – (not compared)."""
    if t["baseline"] is None:
        return "–", "–"
    if t["baseline"]:
        return "baseline", "baseline"
    return (f"{100 * t['dwer']:+.2f} {_ci(t['dwer_lo'], t['dwer_hi'], 100, 2, True)}",
            f"{t['dLAAL']:+.0f} {_ci(t['dLAAL_lo'], t['dLAAL_hi'], 1, 0, True)}")


def write_tables(rows: Sequence[Mapping], out: Path, vs: Optional[Sequence[Optional[Mapping]]] = None) -> None:
    """results.csv / .json / .md of the rows so far; ``vs``: each row's comparison with the baseline row."""
    out.mkdir(parents=True, exist_ok=True)
    table = [flat(r, v) for r, v in zip(rows, vs or [None] * len(rows))]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS + ["differences"])
        w.writeheader()
        w.writerows(table)
    (out / "results.json").write_text(standard_json(table))
    lines = ["| mode | k | φ | chunk ms | policy | as trained | WER % [95 %] | ΔWER pts [95 %] | S/D/I | AL ms | LAAL ms "
             "| ΔLAAL ms [95 %] | LAAL-CA ms | first ms | last ms | PR50 ms | PR90 ms | mean lag | RTF |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        trained = "–" if t["as_trained"] is None else "yes" if t["as_trained"] else f"no: {t['differences']}"
        dwer, dlaal = _vs_cells(t)
        lines.append(f"| {t['mode']} | {t['k']} | {t['phi']:g} | {t['chunk_ms']} | {t['policy']} | {trained} | "
                     f"{100 * t['wer']:.1f} {_ci(t['wer_lo'], t['wer_hi'], 100)} | {dwer} | "
                     f"{t['substitutions']}/{t['deletions']}/{t['insertions']} | {_fmt(t['AL'])} | {_fmt(t['LAAL'])} | {dlaal} | "
                     f"{_fmt(t['LAAL_CA'])} | {_fmt(t['first_word_delay'])} | {_fmt(t['last_word_delay'])} | "
                     f"{_fmt(t['PR50'])} | {_fmt(t['PR90'])} | {_fmt(t['lag_mean'])} | {_fmt(t['rtf'])} |")
    base = [i for i, t in enumerate(table) if t["baseline"]]
    if base:
        from .stats import RESAMPLES, SEED

        b = table[base[0]]
        lines += ["", f"Δ: the row minus row {base[0] + 1} ({b['name']}), on the same {b['utterances']} utterances "
                  f"(negative ΔWER: fewer errors); [95 %]: percentile intervals of a bootstrap over utterances, paired for Δ "
                  f"({RESAMPLES} resamples, seed {SEED}; asr_stream/evaluation/stats.py). An interval that holds 0: no "
                  "difference shown on this data."]
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


def _family(t: Mapping) -> str:
    """The curve a cell belongs to: its mode and its policy without parameter values (all its settings on one line)."""
    return f"{t['mode']} {t['policy'].split('-')[0]}"


def _by(table: Sequence[Mapping], x: str) -> dict[str, tuple[list, list]]:
    lines: dict[str, tuple[list, list]] = {}
    ok = [t for t in table if t.get(x) is not None and t[x] == t[x]]
    for t in sorted(ok, key=lambda t: (_family(t), t[x])):
        xs, ys = lines.setdefault(_family(t), ([], []))
        xs.append(t[x])
        ys.append(t["wer"])
    return lines


def plot(rows: Sequence[Mapping], out: Path) -> list[Path]:
    """WER vs k (one line per mode and φ, wait-k cells), WER vs LAAL and, where the corpus has word alignments,
    WER vs PR90: one line per mode and policy, every policy on the same figure (sorted by the latency)."""
    table = [flat(r) for r in rows]
    by_k: dict[str, tuple[list, list]] = {}
    for t in sorted((t for t in table if t["policy"] == "waitk"), key=lambda t: (t["mode"], t["phi"], t["k"])):
        xs, ys = by_k.setdefault(f"{t['mode']} φ={t['phi']:g}", ([], []))
        xs.append(t["k"])
        ys.append(t["wer"])
    paths = [_line_plot(by_k, "k (chunks)", out / "wer_vs_k.png"), _line_plot(_by(table, "LAAL"), "LAAL (ms)", out / "wer_vs_laal.png")]
    pr90 = _by(table, "PR90")
    if pr90:
        paths.append(_line_plot(pr90, "PR90 (ms after the word's end)", out / "wer_vs_pr90.png"))
    return paths
