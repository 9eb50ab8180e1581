"""``asr-stream eval`` (one setting: WER, latency, RTF) and ``asr-stream sweep`` (a grid of them, with tables and
plots)."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional

from ..config import EvalMode, PolicyName  # the mode and policy names, written once (the options' choices)
from .options import EvalStreamOptions, Only, StreamOptions


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.stats import format_interval

    t = Table(title=f"{s['name']}  ({s['utterances']} utterances, {s['audio_s']:.0f} s of audio)")
    pr = s.get("PR_words", 0) > 0  # the corpus has word alignments
    fm = "formatted_wer" in s  # a model that writes case and punctuation, scored on formatted references
    for col in ("WER %",) + (("formatted WER %", "punct F1") if fm else ()) + \
            ("S/D/I", "AL", "LAAL", "AL-CA", "LAAL-CA", "first word", "last word") + \
            (("PR50", "PR90") if pr else ()) + ("RTF",):
        t.add_column(col, justify="right")
    f = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"  # noqa: E731
    t.add_row(f"{100 * s['wer']:.2f}" if s["ref_words"] else "-",
              *((f"{100 * s['formatted_wer']:.2f}", f"{s['punct_f1']:.3f}") if fm else ()),
              f"{s['substitutions']}/{s['deletions']}/{s['insertions']}", f(s["AL"]), f(s["LAAL"]),
              f(s["AL_CA"]), f(s["LAAL_CA"]), f(s["first_word_delay"]), f(s["last_word_delay"]),
              *((f(s["PR50"]), f(s["PR90"])) if pr else ()), f"{s['rtf']:.3f}")
    Console().print(t)
    if fm:
        marks = ", ".join(f"{c!r} {v['f1']:.3f}" for c, v in s["punct_classes"].items())
        print(f"formatted text: WER with case and punctuation {100 * s['formatted_wer']:.2f} % over "
              f"{s['formatted_tokens']} reference words and marks; punctuation F1 {s['punct_f1']:.3f} "
              f"{format_interval(*s.get('punct_f1_ci', (math.nan, math.nan)), 1, 3)} (precision "
              f"{s['punct_precision']:.3f}, recall {s['punct_recall']:.3f}; per mark: {marks}) "
              "(asr_stream/evaluation/formatted.py)")
    nan2 = (math.nan, math.nan)
    if "nonspeech_utterances" in s:
        print(f"non-speech (no reference words): {s['nonspeech_words']} words written on {s['nonspeech_with_words']} of "
              f"{s['nonspeech_utterances']} utterances" + (" (each an insertion in the WER)" if s["ref_words"] else ""))
    if not s["ref_words"]:
        print("WER undefined: no utterance has reference words; latencies undefined")
        return
    print(f"WER {100 * s['wer']:.2f} %, 95 % interval {format_interval(*s.get('wer_ci', nan2), 100, 2)}; LAAL "
          f"{f(s['LAAL'])} ms, 95 % interval {format_interval(*s.get('LAAL_ci', nan2), 1, 0)} (percentile bootstrap over "
          f"the {s['utterances']} utterances, asr_stream/evaluation/stats.py: how far another draw of such utterances "
          "could move them)")
    print("latencies in ms of audio; WER after normalisation (asr_stream.evaluation.wer.normalize_text)"
          + (f"; PR50/PR90: emission minus the end of the word in the audio, over {s['PR_words']} correct words"
             if pr else ""))
    if s.get("bias_utterances"):
        pc = lambda v: "nan" if math.isnan(v) else f"{100 * v:.2f} %"  # noqa: E731
        print(f"biasing ({s['bias_utterances']} utterances with context lists; asr_stream/evaluation/biasing.py): B-WER "
              f"{pc(s['b_wer'])} on {s['bias_ref_words']} words of the lists, U-WER {pc(s['u_wer'])} on the other "
              f"{s['unbiased_ref_words']}, rare-word recall {pc(s['rare_recall'])}")


def eval_cmd(data: str, options: EvalStreamOptions = EvalStreamOptions(), output: Optional[str] = None,
             limit: Optional[int] = None, segment: Literal["auto", "on", "off"] = "auto",
             baseline: Optional[str] = None, devices: int = 1, num_nodes: int = 1,
             no_data_context: bool = False) -> Optional[dict]:
    """Evaluate one setting with the real streaming session: WER, AL/LAAL (also computation-aware), RTF.

    Args:
        data: a JSONL manifest, or librispeech:ROOT:SPLIT[,SPLIT...].
        options: which model, where, and how it streams (:class:`~asr_stream.cli.options.EvalStreamOptions`).
        output: directory for records.jsonl (one per utterance) and summary.json; a rerun resumes.
        limit: evaluate only the first N utterances.
        segment: cut utterances into segments at pauses (endpointing, as transcribe does): auto = only those longer
            than 30 s (long recordings), on = all, off = none.
        baseline: the --output folder of another eval of the same data: prints this run's WER and LAAL difference to it
            with 95 % paired-bootstrap intervals (also in the returned summary, key "vs_baseline").
        devices: processes on this machine, each scoring its share of the utterances (Lightning's DDP strategy, as
            training uses: CPU processes over gloo, or one per GPU with --device cuda); each utterance is scored once
            and the table is one process's (RTF and the computation-aware latencies measure these processes).
            Records are written when all are done (asr_stream/evaluation/distributed.py).
        num_nodes: machines, each running this command with the same --devices, launched as training is (torchrun or
            SLURM sets the ranks and the address of rank 0).
        context: a context list for every utterance: words and phrases separated by commas (replaces the data's own
            lists, which still define B-WER). Needs a model trained with context lists.
        no_data_context: do not give the utterances the data's own context lists (a biasing set's ``context`` field):
            B-WER, U-WER and rare-word recall without context, to compare with a run that gives them.
    """
    from pathlib import Path

    from ..data import read_corpus
    from ..evaluation.runner import Setting, evaluate, policy_args_tuple, read_records

    o = options
    utts = read_corpus(data)[:limit]
    setting = Setting(o.mode, o.k, o.phi, o.chunk_ms, o.policy, policy_args_tuple(o.policy_args), o.context_phrases(),
                      not no_data_context, o.plain)
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
    m = o.load()  # a chunk override is checked and announced here
    if devices != 1 or num_nodes != 1:
        from ..evaluation.distributed import evaluate_distributed

        s = evaluate_distributed(m, utts, setting, output, segment, devices, num_nodes, o.device, rows_out=rows)
        if s is None:  # not rank 0: rank 0 prints and writes
            return None
    else:
        s = evaluate(m, utts, setting, output, segment=segment, rows_out=rows)
    _print_summary(s)
    if base is not None:
        from ..evaluation.stats import compare, format_interval

        ids = {r["id"] for r in rows}
        c = compare([r for r in base if r["id"] in ids], rows)  # the baseline may hold more utterances (a larger --limit)
        s["vs_baseline"] = {"baseline": str(baseline), **c}
        print(f"against {baseline} on the same {c['utterances']} utterances (this run minus the baseline; 95 % paired "
              f"bootstrap): WER {100 * c['wer_diff']:+.2f} points {format_interval(*c['wer_diff_ci'], 100, 2, True)}, "
              f"LAAL {c['LAAL_diff']:+.0f} ms {format_interval(*c['LAAL_diff_ci'], 1, 0, True)}; "
              f"{c['better']} utterances better, {c['worse']} worse")
    return s


def sweep_cmd(data: str, output: str,
              options: Annotated[StreamOptions, Only("model", "device", "encoder_dtype")] = StreamOptions(),
              modes: Optional[list[EvalMode]] = None, ks: Optional[list[int]] = None,
              phis: Optional[list[float]] = None, chunk_ms: list[int] = [],  # noqa: B006
              mode_models: dict[str, str] = {}, limit: Optional[int] = None,  # noqa: B006
              policies: list[PolicyName] = ["waitk"], policy_grid: dict[str, dict[str, list[float]]] = {},  # noqa: B006
              baseline: Optional[str] = None) -> None:
    """A grid of evaluations (mode × k × φ × chunk × policy settings) with tables (CSV/JSON/markdown) and plots; resumable.

    Tables say, per cell, whether it streams as its model was trained (column as_trained) and how not.

    Args:
        data: a JSONL manifest, or librispeech:ROOT:SPLIT[,SPLIT...].
        output: sweep directory (cells/, results.csv/json/md, wer_vs_k.png, wer_vs_laal.png).
        options: the model, its device and its encoder's dtype, for every cell (only these fields: the grid sets the
            rest).
        model: model directory used for every mode without an entry in mode_models (default: bundled model).
        modes: settings to run: group, interleaved, batch, batch-position, batch-kv (default: the training mode
            of --model).
        ks: wait-k values (default: each mode's model's training k values).
        phis: target-group offsets φ (default: each mode's model's training φ).
        chunk_ms: chunk lengths in ms (empty: the model's own).
        mode_models: per-mode model directories, e.g. {"interleaved": "exp/inter/model"} (the paper trains each mode
            with its own layout; batch-position and batch-kv fall back to the "batch" entry).
        limit: only the first N utterances.
        policies: read/write policies to run: waitk, ctc, confidence (see eval --policy); for adaptive ones --ks is
            k_max unless their grid sets k_max.
        policy_grid: per adaptive policy, parameter values to cross, e.g.
            {"ctc": {"threshold": [0.3, 0.5, 0.7, 0.9], "k_max": [5]}, "confidence": {"threshold": [0.6, 0.9]}}
            (a policy without an entry runs at its defaults).
        baseline: the row every other row is compared with (WER and LAAL differences with 95 % paired-bootstrap
            intervals over the utterances): a row number (1-based, table order) or a cell name (default: the first row).
    """
    from dataclasses import replace

    from ..data import read_corpus
    from ..evaluation.sweep import grid, policy_settings, run_sweep

    utts = read_corpus(data)[:limit]
    cache: dict[str, object] = {}

    def model_for(mode: Optional[str]):
        path = (mode_models.get(mode) or mode_models.get(mode.split("-")[0]) if mode else None) or options.model
        if path not in cache:
            cache.clear()  # one model in memory at a time
            cache[path] = replace(options, model=path, chunk_ms=None).load()
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
