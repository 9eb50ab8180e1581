#!/usr/bin/env python3
"""Long recordings: WER, RTF and peak memory of `asr-stream transcribe` at 1, 5 and 30 minutes.

The recordings are held-out utterances joined with random pauses (0.2-1.5 s; tools/corpus/make_longform.py). Each
length is transcribed by the real command in a fresh process (bundled model, default settings: group mode,
k = 3, endpointing on), so its peak RSS is that process's own (wait4 rusage). The reference point is the WER
of the same utterances transcribed one by one (a fresh session each, no endpointing).

    .venv/bin/python benchmarks/endpointing/longform.py --minutes 1 5 30 --output benchmarks/results/longform
Run it alone: other processes on the two cores change RTF (ratios within one run are what to compare).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def per_utterance_hyps(model_dir, items, load, endpointed: bool) -> dict[str, str]:
    """Each utterance transcribed alone (a fresh session): id -> text. ``endpointed``: through the same endpointer
    as the long recordings (which starts a segment at the speech, trimming espeak-ng's quiet first tens of ms)."""
    import numpy as np

    from asr_stream.model import SpeechLLM
    from asr_stream.streaming import StreamingSession
    from asr_stream.streaming.segment import EndpointConfig, SegmentedSession

    m = SpeechLLM.load(model_dir)
    hyps = {}
    for i, (uid, _) in enumerate(items):
        w = np.asarray(load(i), dtype=np.float32)
        s = SegmentedSession(StreamingSession(m, k=3), EndpointConfig() if endpointed else None)
        for j in range(0, len(w), 1600):
            s.push(w[j : j + 1600])
        s.finish()
        hyps[uid] = s.text
    return hyps


def run_transcribe(audio: Path, out_json: Path, extra: list[str]) -> dict:
    """The real command in a fresh process; its peak RSS is the kernel's high-water mark of that process (VmHWM,
    read until it exits: wait4's ru_maxrss would also count the pages this parent held at fork time)."""
    cmd = [sys.executable, "-m", "asr_stream", "transcribe", str(audio), "--json", str(out_json), *extra]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    hwm_kb = 0
    status = Path(f"/proc/{p.pid}/status")
    while p.poll() is None:
        try:
            line = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
            hwm_kb = max(hwm_kb, int(line.split()[1]))
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode()
    if p.returncode != 0:
        raise SystemExit(f"transcribe failed on {audio}: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    r = json.loads(out_json.read_text())["files"][0]
    return {"peak_rss_mb": hwm_kb / 1024.0, "wall_s": wall, **r}


def main(argv=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from asr_stream import default_model_dir
    from asr_stream.corpus.longform import join_utterances, write_recording
    from asr_stream.corpus.synth import synthesize
    from asr_stream.evaluation.wer import wer_details

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 30])
    ap.add_argument("--heldout", default=str(ROOT / "tests" / "data" / "heldout.json"))
    ap.add_argument("--output", default="benchmarks/results/longform")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more transcribe options")
    a = ap.parse_args(argv)
    model_dir = Path(a.model) if a.model else default_model_dir()
    extra = (["--model", str(model_dir)] if a.model else []) + a.extra
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    raw = json.loads(Path(a.heldout).read_text())
    items = [(it["id"], it["text"]) for it in raw]
    waves: dict[int, object] = {}

    def load(i):
        if i not in waves:
            it = raw[i]
            waves[i] = synthesize(it["spoken"], it["voice"], it["rate"], it["pitch"])
        return waves[i]

    alone = per_utterance_hyps(model_dir, items, load, endpointed=False)
    alone_ep = per_utterance_hyps(model_dir, items, load, endpointed=True)
    ref = wer_details([t for _, t in items], [alone[u] for u, _ in items])
    rows = [{"recording": "each utterance alone", "minutes": sum(len(load(i)) for i in range(len(items))) / 16000 / 60,
             "utterances": len(items), "wer": ref["wer"], "sdi": f"{ref['substitutions']}/{ref['deletions']}/{ref['insertions']}"}]
    Console(stderr=True).print(f"per-utterance WER on {len(items)} held-out utterances: {100 * ref['wer']:.2f} %")
    tmp = out / "audio"
    tmp.mkdir(exist_ok=True)
    for minutes in a.minutes:
        rec = join_utterances(items, load, minutes * 60, seed=0)
        path = write_recording(rec, tmp / f"longform-{minutes:g}min.flac")
        r = run_transcribe(path, tmp / f"longform-{minutes:g}min.json", extra)  # words: removed with the audio
        d = wer_details([rec.text], [r["text"]])
        # the same utterances (with their repeats) transcribed one by one: the fair reference for this recording
        same = wer_details([p.text for p in rec.pieces], [alone[p.id] for p in rec.pieces])
        same_ep = wer_details([p.text for p in rec.pieces], [alone_ep[p.id] for p in rec.pieces])
        rows.append({"recording": f"{minutes:g} min", "minutes": rec.seconds / 60, "utterances": len(rec.pieces),
                     "segments": len(r["segments"]), "wer": d["wer"], "wer_alone": same["wer"],
                     "wer_alone_endpointed": same_ep["wer"],
                     "sdi": f"{d['substitutions']}/{d['deletions']}/{d['insertions']}",
                     "rtf": r["rtf"], "peak_rss_mb": r["peak_rss_mb"], "wall_s": r["wall_s"], "unheard_s": r["unheard_s"]})
        (out / "longform.json").write_text(json.dumps(rows, indent=2) + "\n")  # after each length: nothing lost
        Console(stderr=True).print(rows[-1])
    t = Table(title=f"long-form transcription ({a.model or 'bundled model'}, k = 3, endpointing on)")
    for c in ("recording", "utterances", "segments", "WER %", "same alone %", "same alone, endpointed %", "S/D/I", "RTF",
              "peak RSS MB", "no-word speech s"):
        t.add_column(c, justify="right")
    f = lambda v, p: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for r in rows:
        t.add_row(r["recording"], str(r["utterances"]), str(r.get("segments", "–")), pct(r["wer"]), pct(r.get("wer_alone")),
                  pct(r.get("wer_alone_endpointed")), r["sdi"], f(r.get("rtf"), 3), f(r.get("peak_rss_mb"), 0), f(r.get("unheard_s"), 1))
    Console().print(t)
    md = ["| recording | utterances | segments | WER % | the same utterances alone, WER % | alone, endpointed, WER % | S/D/I "
          "| RTF | peak RSS MB | speech with no words s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['recording']} | {r['utterances']} | {r.get('segments', '–')} | {pct(r['wer'])} | {pct(r.get('wer_alone'))} "
                  f"| {pct(r.get('wer_alone_endpointed'))} | {r['sdi']} | {f(r.get('rtf'), 3)} | {f(r.get('peak_rss_mb'), 0)} | {f(r.get('unheard_s'), 1)} |")
    (out / "longform.md").write_text("\n".join(md) + "\n")
    import shutil

    shutil.rmtree(tmp)  # the audio is rebuilt from the held-out list in seconds; keep only the figures


if __name__ == "__main__":
    main()
