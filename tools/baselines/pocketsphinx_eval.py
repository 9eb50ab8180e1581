#!/usr/bin/env python3
"""CMU PocketSphinx side by side with our model: the same test sets, the same WER normalisation.

PocketSphinx is a peer to compare against, not a dependency of asr-stream: ``pip install pocketsphinx`` (its
wheel ships an en-us acoustic model trained on real speech, a 3-gram language model and a dictionary). Without
it this tool prints one line and exits 0 having done nothing (the skip is stated, never a result).

Each set is NAME=DATA (a JSONL manifest or librispeech:ROOT:SPLIT). Per set it writes
``<output>/<NAME>/records.jsonl`` (id, reference, hypothesis) and ``summary.json``, scored with
asr_stream.evaluation.wer.wer_details (the same normalisation as ``asr-stream eval``). With ``--ours ROOT``,
``ROOT/<NAME>/summary.json`` (written by ``asr-stream eval --output ROOT/<NAME>``) is read and put beside it:

    python tools/baselines/pocketsphinx_eval.py --output exp/psphinx --ours exp/eval-k3 --limit 100 \\
        test=librispeech:data/synthetic-tests:test kal=librispeech:data/synthetic-tests:test-kal \\
        nonspeech=data/robust/nonspeech.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _decoder():
    from pocketsphinx import Decoder

    return Decoder(samprate=16000, loglevel="FATAL")


def transcribe(decoder, wave) -> str:
    """One utterance (16 kHz float32) -> PocketSphinx's words (fillers such as <sil> dropped)."""
    import numpy as np

    pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    words = [] if hyp is None else hyp.hypstr.split()
    return " ".join(w for w in words if not (w.startswith("<") or w.startswith("[")))


def evaluate_set(decoder, utts, out: Path) -> dict:
    from asr_stream.audio.io import load_audio
    from asr_stream.evaluation.wer import wer_details

    out.mkdir(parents=True, exist_ok=True)
    refs, hyps, audio_s, t0 = [], [], 0.0, time.perf_counter()
    with open(out / "records.jsonl", "w", encoding="utf-8") as f:
        for u in utts:
            wave = load_audio(u.audio_path)
            audio_s += len(wave) / 16000
            hyp = transcribe(decoder, wave)
            refs.append(u.text)
            hyps.append(hyp)
            f.write(json.dumps({"id": u.id, "reference": u.text, "hypothesis": hyp}) + "\n")
    d = wer_details(refs, hyps)
    summary = {"utterances": len(utts), "words_output": sum(len(h.split()) for h in hyps),
               "rtf": (time.perf_counter() - t0) / max(audio_s, 1e-9), **d}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _ours(root: Path | None, name: str) -> dict | None:
    if root is None or not (root / name / "summary.json").is_file():
        return None
    s = json.loads((root / name / "summary.json").read_text())
    if "words_output" not in s and (root / name / "records.jsonl").is_file():
        hyps = [json.loads(line).get("hypothesis", "") for line in (root / name / "records.jsonl").read_text().splitlines() if line]
        s["words_output"] = sum(len(str(h).split()) for h in hyps)
    return s


def _fmt(s: dict | None) -> str:
    if s is None:
        return "–"
    w = s.get("wer")
    if s.get("ref_words", 1) == 0:
        return f"{s.get('words_output', '?')} words out"
    return f"{100 * w:.1f}" if isinstance(w, (int, float)) else "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="+", help="NAME=DATA test sets")
    p.add_argument("--output", type=Path, required=True, help="folder for each set's records and summary")
    p.add_argument("--ours", type=Path, help="folder holding <NAME>/summary.json of asr-stream eval, for the table")
    p.add_argument("--limit", type=int, help="first N utterances of each set")
    a = p.parse_args(argv)
    try:
        decoder = _decoder()
    except ImportError:
        print("pocketsphinx_eval: skipped: pocketsphinx is not installed (pip install pocketsphinx)")
        return 0
    from asr_stream.data import DataError, read_corpus

    sets = []
    for item in a.sets:
        name, sep, data = item.partition("=")
        if not sep or not name or not data:
            print(f"pocketsphinx_eval: error: expected NAME=DATA, got {item!r}", file=sys.stderr)
            return 2
        try:
            sets.append((name, read_corpus(data)[: a.limit]))
        except DataError as e:
            print(f"pocketsphinx_eval: error: {e}", file=sys.stderr)
            return 2
    print("| set | utterances | ref words | PocketSphinx WER % | ours WER % | PocketSphinx words out | ours words out |")
    print("|---|---|---|---|---|---|---|")
    for name, utts in sets:
        ps = evaluate_set(decoder, utts, a.output / name)
        ours = _ours(a.ours, name)
        print(f"| {name} | {ps['utterances']} | {ps['ref_words']} | {_fmt(ps)} | {_fmt(ours)} | {ps['words_output']} | "
              f"{ours.get('words_output', '–') if ours else '–'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
