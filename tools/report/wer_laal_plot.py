"""WER against LAAL, one panel per test set, from `asr-stream eval` output folders; offline references as lines.

Each streaming point is an eval folder (its summary.json: WER and LAAL over the same utterances); an offline system
(Whisper run offline by tools/baselines/whisper_offline.py, PocketSphinx, ...) has no latency of its own and is drawn as a
dashed horizontal line at its WER. The table beside the figure (markdown, on stdout) lists every value with the
95 % bootstrap interval the summary holds.

    python tools/report/wer_laal_plot.py --output fig.png \
        --set test "k=1=exp/x/eval/test-k1" "k=3=exp/x/eval/test-k3" "ctc=exp/x/eval/test-ctc" \
        --offline test "Whisper tiny.en=exp/whisper_tiny_offline/test"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_summary(folder: str) -> dict:
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise SystemExit(f"wer_laal_plot: {path} not found (run `asr-stream eval --output {folder}` first)")
    return json.loads(path.read_text())


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        label, sep, folder = item.rpartition("=")
        if not sep or not label:
            raise SystemExit(f"wer_laal_plot: {flag} takes LABEL=FOLDER, got {item!r}")
        out.append((label, folder))
    return out


def _ci(s: dict, key: str, scale: float) -> str:
    ci = s.get(f"{key}_ci")
    return f"[{scale * ci[0]:.1f}, {scale * ci[1]:.1f}]" if ci else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", nargs="+", action="append", default=[], metavar=("NAME", "LABEL=FOLDER"),
                    help="a test set's name, then its streaming eval folders (repeat per set)")
    ap.add_argument("--offline", nargs="+", action="append", default=[], metavar=("NAME", "LABEL=FOLDER"),
                    help="a test set's name, then offline systems' folders (summary.json with 'wer')")
    ap.add_argument("--output", required=True, help="the figure (PNG); refused if it is one of the inputs")
    args = ap.parse_args(argv)
    if not args.set:
        ap.error("give at least one --set")
    sets = {s[0]: _pairs(s[1:], "--set") for s in args.set}
    offline = {s[0]: _pairs(s[1:], "--offline") for s in args.offline}
    unknown = set(offline) - set(sets)
    if unknown:
        ap.error(f"--offline names sets with no --set: {', '.join(sorted(unknown))}")
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        ap.error("--output must end in .png")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(sets)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False, sharey=True)
    print("| set | system | WER % | 95 % interval | LAAL ms | utterances |")
    print("|---|---|---|---|---|---|")
    for ax, (name, points) in zip(axes[0], sets.items()):
        xs, ys = [], []
        for label, folder in points:
            s = read_summary(folder)
            xs.append(s["LAAL"])
            ys.append(100 * s["wer"])
            ax.annotate(label, (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
            print(f"| {name} | ours, {label} | {100 * s['wer']:.1f} | {_ci(s, 'wer', 100)} | {s['LAAL']:.0f} | {s['utterances']} |")
        order = sorted(range(len(xs)), key=xs.__getitem__)
        ax.plot([xs[i] for i in order], [ys[i] for i in order], marker="o", color="C0", label="ours (streaming)")
        for i, (label, folder) in enumerate(offline.get(name, [])):
            s = read_summary(folder)
            ax.axhline(100 * s["wer"], linestyle="--", color=f"C{i + 1}", label=f"{label} (offline)")
            print(f"| {name} | {label}, offline | {100 * s['wer']:.1f} | {_ci(s, 'wer', 100)} | – | {s['utterances']} |")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("LAAL (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("WER (%)")
    fig.tight_layout()
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, dpi=110, format="png")
    tmp.replace(out)
    plt.close(fig)
    print(f"\n{out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
