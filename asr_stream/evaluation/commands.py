"""``asr-stream eval`` and ``asr-stream sweep`` (registered in :mod:`asr_stream.cli`)."""

from __future__ import annotations

import math
from typing import Literal, Optional

from ..config import EvalMode, PolicyName  # the mode and policy names, written once (the options' choices)
from ..loading import load_model  # one loader for every command: default model, device, chunk and bf16 checks


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .stats import format_interval

    t = Table(title=f"{s['name']}  ({s['utterances']} utterances, {s['audio_s']:.0f} s of audio)")
    pr = s.get("PR_words", 0) > 0  # the corpus has word alignments
    for col in ("WER %", "S/D/I", "AL", "LAAL", "AL-CA", "LAAL-CA", "first word", "last word") + \
            (("PR50", "PR90") if pr else ()) + ("RTF",):
        t.add_column(col, justify="right")
    f = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"  # noqa: E731
    t.add_row(f"{100 * s['wer']:.2f}", f"{s['substitutions']}/{s['deletions']}/{s['insertions']}", f(s["AL"]), f(s["LAAL"]),
              f(s["AL_CA"]), f(s["LAAL_CA"]), f(s["first_word_delay"]), f(s["last_word_delay"]),
              *((f(s["PR50"]), f(s["PR90"])) if pr else ()), f"{s['rtf']:.3f}")
    Console().print(t)
    nan2 = (math.nan, math.nan)
    print(f"WER {100 * s['wer']:.2f} %, 95 % interval {format_interval(*s.get('wer_ci', nan2), 100, 2)}; LAAL "
          f"{f(s['LAAL'])} ms, 95 % interval {format_interval(*s.get('LAAL_ci', nan2), 1, 0)} (percentile bootstrap over "
          f"the {s['utterances']} utterances, asr_stream/evaluation/stats.py: how far another draw of such utterances "
          "could move them)")
    print("latencies in ms of audio; WER after normalisation (asr_stream.evaluation.wer.normalize_text)"
          + (f"; PR50/PR90: emission minus the end of the word in the audio, over {s['PR_words']} correct words"
             if pr else ""))


def eval_cmd(data: str, model: Optional[str] = None, mode: Optional[EvalMode] = None, k: Optional[int] = None,
             phi: Optional[float] = None, chunk_ms: Optional[int] = None, output: Optional[str] = None,
             limit: Optional[int] = None, device: str = "cpu", encoder_dtype: Literal["float32", "bfloat16"] = "float32",
             segment: Literal["auto", "on", "off"] = "auto",
             policy: PolicyName = "waitk", policy_args: list[str] = [], baseline: Optional[str] = None,  # noqa: B006
             devices: int = 1, num_nodes: int = 1) -> Optional[dict]:
    """Evaluate one setting with the real streaming session: WER, AL/LAAL (also computation-aware), RTF.

    Args:
        data: a JSONL manifest, or librispeech:ROOT:SPLIT[,SPLIT...].
        model: model directory (default: the bundled model).
        mode: group, interleaved, batch (no re-encoding), batch-position or batch-kv (re-encoding baselines)
            (default: the model's training mode).
        k: wait-k in chunks (default: 3 if the model was trained with it, else its training k closest to 3).
        phi: target-group start position, group mode (default: the model's training φ).
        chunk_ms: override the model's chunk length.
        output: directory for records.jsonl (one per utterance) and summary.json; a rerun resumes.
        limit: evaluate only the first N utterances.
        device: cpu or cuda.
        encoder_dtype: float32, or bfloat16 for the encoder's matrix products (about twice as fast on CPUs with bfloat16
            instructions, slower on others; the decoder stays in its own dtype).
        segment: cut utterances into segments at pauses (endpointing, as transcribe does): auto = only those longer
            than 30 s (long recordings), on = all, off = none.
        policy: read/write policy: waitk (word j after k + j chunks), ctc (word j once the CTC head heard its end)
            or confidence (write when the decoder's top token is likely enough, else read); adaptive policies write
            word j after k_max + j chunks at the latest (k_max: --k unless given in --policy-args).
        policy_args: parameters of the policy as NAME=VALUE: ctc: threshold (0.5), margin (0 chunks), k_max, k_min;
            confidence: threshold (0.9), k_max, k_min (k_min default: the smallest k the model was trained with).
        baseline: the --output folder of another eval of the same data: prints this run's WER and LAAL difference to it
            with 95 % paired-bootstrap intervals (also in the returned summary, key "vs_baseline").
        devices: processes on this machine, each scoring its share of the utterances (Lightning's DDP strategy, as
            training uses: CPU processes over gloo, or one per GPU with --device cuda); each utterance is scored once
            and the table is one process's (RTF and the computation-aware latencies measure these processes).
            Records are written when all are done (asr_stream/evaluation/distributed.py).
        num_nodes: machines, each running this command with the same --devices, launched as training is (torchrun or
            SLURM sets the ranks and the address of rank 0).
    """
    from pathlib import Path

    from ..data import read_corpus
    from .runner import Setting, evaluate, policy_args_tuple, read_records

    utts = read_corpus(data)[:limit]
    setting = Setting(mode, k, phi, chunk_ms, policy, policy_args_tuple(policy_args))
    base = None
    if baseline is not None:  # read before the run, so a wrong folder fails fast
        path = Path(baseline) / "records.jsonl"
        if not path.is_file():
            raise ValueError(f"--baseline {baseline}: no records.jsonl there (the --output folder of an eval)")
        base = list(read_records(path).values())
        by_id = {r["id"]: r["reference"] for r in base}
        missing = [u.id for u in utts if u.id not in by_id]
        other = [u.id for u in utts if u.id in by_id and by_id[u.id] != u.text]
        if missing or other:
            raise ValueError(f"--baseline {baseline}: not an eval of this data ({len(missing)} of these {len(utts)} utterances "
                             f"missing there, {len(other)} with other transcripts)")
    rows: list[dict] = []
    m = load_model(model, device, chunk_ms, encoder_dtype)  # a chunk override is checked and announced here
    if devices != 1 or num_nodes != 1:
        from .distributed import evaluate_distributed

        s = evaluate_distributed(m, utts, setting, output, segment, devices, num_nodes, device, rows_out=rows)
        if s is None:  # not rank 0: rank 0 prints and writes
            return None
    else:
        s = evaluate(m, utts, setting, output, segment=segment, rows_out=rows)
    _print_summary(s)
    if base is not None:
        from .stats import compare, format_interval

        ids = {r["id"] for r in rows}
        c = compare([r for r in base if r["id"] in ids], rows)  # the baseline may hold more utterances (a larger --limit)
        s["vs_baseline"] = {"baseline": str(baseline), **c}
        print(f"against {baseline} on the same {c['utterances']} utterances (this run minus the baseline; 95 % paired "
              f"bootstrap): WER {100 * c['wer_diff']:+.2f} points {format_interval(*c['wer_diff_ci'], 100, 2, True)}, "
              f"LAAL {c['LAAL_diff']:+.0f} ms {format_interval(*c['LAAL_diff_ci'], 1, 0, True)}; "
              f"{c['better']} utterances better, {c['worse']} worse")
    return s


def sweep_cmd(data: str, output: str, model: Optional[str] = None, modes: Optional[list[EvalMode]] = None,
              ks: Optional[list[int]] = None, phis: Optional[list[float]] = None, chunk_ms: list[int] = [],  # noqa: B006
              mode_models: dict[str, str] = {}, limit: Optional[int] = None, device: str = "cpu",  # noqa: B006
              policies: list[PolicyName] = ["waitk"], policy_grid: dict[str, dict[str, list[float]]] = {},  # noqa: B006
              baseline: Optional[str] = None, encoder_dtype: Literal["float32", "bfloat16"] = "float32") -> None:
    """A grid of evaluations (mode × k × φ × chunk × policy settings) with tables (CSV/JSON/markdown) and plots; resumable.

    Tables say, per cell, whether it streams as its model was trained (column as_trained) and how not.

    Args:
        data: a JSONL manifest, or librispeech:ROOT:SPLIT[,SPLIT...].
        output: sweep directory (cells/, results.csv/json/md, wer_vs_k.png, wer_vs_laal.png).
        model: model directory used for every mode without an entry in mode_models (default: bundled model).
        modes: settings to run: group, interleaved, batch, batch-position, batch-kv (default: the training mode
            of --model).
        ks: wait-k values (default: each mode's model's training k values).
        phis: target-group offsets φ (default: each mode's model's training φ).
        chunk_ms: chunk lengths in ms (empty: the model's own).
        mode_models: per-mode model directories, e.g. {"interleaved": "exp/inter/model"} (the paper trains each mode
            with its own layout; batch-position and batch-kv fall back to the "batch" entry).
        limit: only the first N utterances.
        device: cpu or cuda.
        policies: read/write policies to run: waitk, ctc, confidence (see eval --policy); for adaptive ones --ks is
            k_max unless their grid sets k_max.
        policy_grid: per adaptive policy, parameter values to cross, e.g.
            {"ctc": {"threshold": [0.3, 0.5, 0.7, 0.9], "k_max": [5]}, "confidence": {"threshold": [0.6, 0.9]}}
            (a policy without an entry runs at its defaults).
        baseline: the row every other row is compared with (WER and LAAL differences with 95 % paired-bootstrap
            intervals over the utterances): a row number (1-based, table order) or a cell name (default: the first row).
        encoder_dtype: float32, or bfloat16 for the encoder's matrix products of every cell (see eval --encoder-dtype).
    """
    from ..data import read_corpus
    from .sweep import grid, policy_settings, run_sweep

    utts = read_corpus(data)[:limit]
    cache: dict[str, object] = {}

    def model_for(mode: Optional[str]):
        path = (mode_models.get(mode) or mode_models.get(mode.split("-")[0]) if mode else None) or model
        if path not in cache:
            cache.clear()  # one model in memory at a time
            cache[path] = load_model(path, device, encoder_dtype=encoder_dtype)
        return cache[path]

    settings = []
    for mode in modes or [model_for(None).cfg.train_mode]:
        mc = model_for(mode).cfg  # unset axes: what this mode's model was trained with
        settings += policy_settings(grid([mode], ks or sorted(mc.train_k), phis or [mc.phi], chunk_ms or [None]),
                                    policies, policy_grid)
    rows = run_sweep(model_for, utts, settings, output, baseline=baseline)
    from pathlib import Path

    print((Path(output) / "results.md").read_text())
    print(f"{len(rows)} cells -> {output}")
