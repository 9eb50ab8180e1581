"""Run the real streaming session over a corpus: WER, SimulEval latency and RTF for one setting.

Audio is pushed one chunk at a time (as a live stream delivers it, but as fast as possible), so each
word's delay is the audio (ms) read when it was emitted; computation-aware delays add the wall-clock
compute spent up to that emission. Records are appended per utterance to ``records.jsonl``, so a killed
run continues where it stopped; a record is reused only while its audio file is the one it was computed from
(:func:`audio_identity`), and only for the settings in ``settings.json`` (:func:`run_key`).
"""

from __future__ import annotations

from collections import Counter
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..audio.io import SAMPLE_RATE, SAMPLES_PER_MS, load_audio
from ..config import EvalMode, PolicyName, StreamConfig, split_eval_mode
from ..streaming.defaults import stream_config_for, training_differences
from ..data import Utterance
from .latency import LatencyRecord, aggregate, pr_summary, real_time_factor, word_lags
from .stats import record_intervals
from .wer import normalize_text, wer_details


@dataclass(frozen=True)
class Setting:
    """One evaluation cell: mode (with the batch re-encoding variant), k, φ, chunk length and read/write policy.

    mode, k and phi left at None take the model's training values (:meth:`resolved`)."""

    mode: Optional[EvalMode] = None  # a mode, or batch-<reencode> (asr_stream.config.EVAL_MODES)
    k: Optional[int] = None  # wait-k's k; the adaptive policies' default k_max
    phi: Optional[float] = None
    chunk_ms: Optional[int] = None  # None: the model's own
    policy: PolicyName = "waitk"  # asr_stream.streaming.policy.REGISTRY
    policy_args: tuple[tuple[str, float], ...] = ()  # sorted (name, value) pairs, e.g. (("margin", 0), ("threshold", 0.5))
    context: tuple[str, ...] = ()  # one context list for every utterance (eval --context); () : none
    data_context: bool = True  # give each utterance the data's own context list (a biasing set's), unless --context
    plain: bool = False  # score a formatted model's words made plain (StreamConfig.plain): no formatted figures

    def stream_config(self) -> StreamConfig:
        mode, reencode = split_eval_mode(self.mode) if self.mode is not None else (None, "none")
        return StreamConfig(mode=mode, k=self.k, phi=self.phi, reencode=reencode, policy=self.policy,
                            policy_args=dict(self.policy_args), context=tuple(self.context), plain=self.plain)

    def resolved(self, model, warn: bool = True) -> tuple["Setting", StreamConfig]:
        """This setting with the model's training values filled in (an adaptive policy's default k_min too, so it is
        in the name), and its stream config (an explicit value that differs from the training raises a
        TrainingMismatchWarning unless ``warn`` is False)."""
        cfg = stream_config_for(model, self.stream_config(), warn=warn)
        mode = cfg.mode if cfg.reencode == "none" else f"{cfg.mode}-{cfg.reencode}"
        return Setting(mode, cfg.k, cfg.phi, self.chunk_ms, self.policy, policy_args_tuple(cfg.policy_args),
                       tuple(cfg.context), self.data_context, self.plain), cfg

    @property
    def policy_name(self) -> str:
        """``waitk``, or the adaptive policy with its parameters, e.g. ``ctc-margin0-threshold0.5``."""
        return "-".join([self.policy] + [f"{a}{v:g}" for a, v in self.policy_args])

    @property
    def name(self) -> str:
        chunk = f"-c{self.chunk_ms}" if self.chunk_ms else ""
        policy = "" if self.policy == "waitk" else f"-{self.policy_name}"
        ctx = f"-context{len(self.context)}" if self.context else ""
        return (f"{self.mode or 'trained'}-k{self.k if self.k is not None else 'T'}-phi{'T' if self.phi is None else f'{self.phi:g}'}"
                f"{chunk}{policy}{ctx}{'-plain' if self.plain else ''}")


def policy_args_tuple(args) -> tuple[tuple[str, float], ...]:
    """Policy parameters (a mapping, or NAME=VALUE strings) as the sorted pairs a :class:`Setting` keeps."""
    from ..streaming.policy import parse_policy_args

    d = dict(args) if isinstance(args, dict) else parse_policy_args(args)
    try:
        return tuple(sorted((str(a), float(v)) for a, v in d.items()))
    except (TypeError, ValueError):
        raise ValueError(f"policy parameters must be numbers, got {d}") from None


def stream_blocks(session, blocks: Iterable[np.ndarray], on_words: Optional[Callable[[list], None]] = None) -> tuple[list, list[float], float]:
    """Push blocks, then finish (:func:`asr_stream.streaming.driver.drive`); returns (words, compute ms elapsed at
    each word's emission, total compute s).

    Only time inside push/finish counts as compute, so a paced (real-time) source's waits are excluded.
    """
    from ..streaming.driver import drive

    d = drive(session, blocks, on_words)
    return d.words, d.compute_at_ms, d.compute_s


def stream_utterance(session, wave: np.ndarray, block: int) -> tuple[list, list[float], float]:
    """Push ``wave`` block by block (as fast as possible); see :func:`stream_blocks`."""
    return stream_blocks(session, (wave[i : i + block] for i in range(0, len(wave), block)))


LONG_S = 30.0  # segment="auto": utterances longer than this (s) are endpointed; models are trained on sentences


def evaluate(model, utts: Sequence[Utterance], setting: Setting, out_dir: Optional[str | Path] = None,
             progress: bool = True, segment: str = "auto", rows_out: Optional[list] = None) -> dict:
    """Evaluate one setting; returns the summary (also written to ``out_dir/summary.json``).

    segment: ``auto`` cuts utterances longer than LONG_S seconds into segments with the endpoint rules of
    :mod:`asr_stream.streaming.segment` (long recordings; word times stay absolute) and streams shorter ones
    whole, as they are trained; ``on`` / ``off`` do it for every utterance / none.
    rows_out: if given, the per-utterance records (in ``utts`` order) are appended to it.
    """
    if segment not in ("auto", "on", "off"):
        raise ValueError(f"segment must be auto, on or off, got {segment!r}")
    setting, cfg = prepare(model, setting)
    lists = data_lists(model, setting, utts)
    out = Path(out_dir) if out_dir else None
    records = open_records(out, model, utts, cfg, setting, segment, lists) if out is not None else {}
    rec_file = (out / "records.jsonl").open("a") if out is not None else None
    todo = [u for u in utts if u.id not in records]
    try:
        from rich.progress import Progress

        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"eval {setting.name}", total=len(todo))
            for u in todo:
                records[u.id] = r = score_utterance(model, cfg, u, segment, lists)
                if rec_file:
                    rec_file.write(json.dumps(r) + "\n")
                    rec_file.flush()
                bar.advance(task)
    finally:
        if rec_file:
            rec_file.close()
    return finish(model, utts, setting, cfg, records, out, rows_out)


def prepare(model, setting: Setting) -> tuple[Setting, StreamConfig]:
    """Apply the setting's chunk length to ``model``; the setting with the model's training values filled in, and its
    stream config (see :meth:`Setting.resolved`)."""
    if setting.chunk_ms:
        model.set_chunk_ms(setting.chunk_ms)
    return setting.resolved(model)  # None: the model's training values; a different explicit value warns


def data_lists(model, setting: Setting, utts: Sequence[Utterance]) -> bool:
    """Does each utterance get the data's own context list (a biasing set's ``context`` field)? Yes when the data has
    lists, ``setting.data_context`` is on and no ``--context`` replaces them; a model trained without context lists
    gets none, with a warning (its B-WER is then the no-context baseline)."""
    import warnings

    if not (setting.data_context and not setting.context and any(u.context for u in utts)):
        return False
    if model.cfg.context_max_tokens == 0:
        warnings.warn("this model was trained without context lists: the data's lists are not given to it (B-WER and "
                      "rare-word recall are those without context)", stacklevel=2)
        return False
    return True


def open_records(out: Path, model, utts: Sequence[Utterance], cfg: StreamConfig, setting: Setting,
                 segment: str, lists: bool = False) -> dict[str, dict]:
    """The records ``out`` already holds for this run (a resume), by id, after checking that they were made with these
    settings (:func:`check_resume`, which writes them into a new folder) and dropping those whose audio changed."""
    out.mkdir(parents=True, exist_ok=True)
    check_resume(out, run_key(model, utts, cfg, setting, segment, lists))
    fold_parts(out)  # what the processes of a killed multi-process run finished
    records = read_records(out / "records.jsonl")  # resume: keep what a killed run finished
    if records:
        stale_records(out, utts, records)  # a record is reused only for the audio it was computed from
    return records


def score_utterance(model, cfg: StreamConfig, u: Utterance, segment: str, lists: bool = False) -> dict:
    """Stream one utterance through a new session and score it: the record ``records.jsonl`` keeps (hypothesis, word
    emission times and compute, latencies, the schedule, the audio's identity; the context list used and the data's
    list, which B-WER scores against). ``lists``: the session reads the utterance's own context list
    (:func:`data_lists`)."""
    from dataclasses import replace

    from ..streaming import StreamingSession
    from ..streaming.segment import EndpointConfig, SegmentedSession

    ident = audio_identity(u.audio_path)  # before reading: a file replaced meanwhile is re-scored next time
    wave = load_audio(u.audio_path)
    cut = segment == "on" or (segment == "auto" and len(wave) > LONG_S * SAMPLE_RATE)
    if lists and u.context:
        cfg = replace(cfg, context=u.context)
    session = SegmentedSession(StreamingSession(model, cfg), EndpointConfig() if cut else None)
    words, compute_at, spent = stream_utterance(session, wave, model.chunk_samples)
    audio_ms = len(wave) / SAMPLES_PER_MS
    ref_len = len(normalize_text(u.text).split())
    # latencies over the normalised words, as WER counts them: a formatted word gives 1 (or 0: a mark alone, or more)
    emitted = [(w.time_ms, c) for w, c in zip(words, compute_at) for _ in normalize_text(w.text).split()]
    lat = LatencyRecord.compute([t for t, _ in emitted], audio_ms, ref_len, [c for _, c in emitted])
    r = {"id": u.id, "audio": ident, "reference": u.text,
         "hypothesis": " ".join(w.text for w in words),
         "segments": len(session.segments) if cut else None,
         "words": [{"text": w.text, "time_ms": w.time_ms, "compute_ms": c} for w, c in zip(words, compute_at)],
         "audio_ms": audio_ms, "compute_s": spent, **{f"lat_{k}": v for k, v in lat.as_dict().items()}}
    if not cut:  # the schedule: per written target row, chunks seen and words written before it
        r["vis"], r["units"], r["chunks"] = row_schedule(session.session)
    if cfg.context:
        r["context"] = list(cfg.context)
    if u.context:
        r["bias_words"] = list(u.context)  # what B-WER and rare-word recall score against
    if u.words is not None:  # word alignment of the reference: ends in ms, for PR50 / PR90
        r["ref_word_end_ms"] = [round(w.end * 1000.0, 1) for w in u.words]
    if model.cfg.text_format == "formatted" and not cfg.plain:  # the hypothesis has case and punctuation
        r["formatted"] = True
        if u.formatted is not None:
            r["reference_formatted"] = u.formatted
    return r


def finish(model, utts: Sequence[Utterance], setting: Setting, cfg: StreamConfig, records: Mapping[str, dict],
           out: Optional[Path], rows_out: Optional[list] = None) -> dict:
    """The summary of ``records`` (taken in ``utts`` order), written to ``out/summary.json`` when ``out`` is given."""
    rows = [records[u.id] for u in utts if u.id in records]
    if rows_out is not None:
        rows_out.extend(rows)
    summary = summarize(rows)
    mc = model.cfg
    summary.update({"setting": asdict(setting), "name": setting.name, "encoder_dtype": encoder_dtype_name(model),
                    "training": {"mode": mc.train_mode, "k": list(mc.train_k), "phi": mc.phi,
                                 "differences": training_differences(mc, cfg)}})
    if out is not None:
        (out / "summary.json").write_text(standard_json(summary))
    return summary


def standard_json(value) -> str:
    """``value`` as indented, standard JSON: every NaN or infinite float (an undefined score: a mark's precision with
    no mark written) written as null (``NaN`` is not JSON: JavaScript's and jq's parsers refuse it)."""
    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return [finite(x) for x in v] if isinstance(v, (list, tuple)) else v

    return json.dumps(finite(value), indent=2, allow_nan=False)


def row_schedule(session) -> tuple[list[int], list[int], int]:
    """(visibility of each target row written, target units finished before it, chunks read) of a session's
    utterance: the schedule its policy produced, as the training layout takes it (``training_layout(vis=...)``)."""
    from ..groups import TARGET, units_done

    s = session.state
    t = torch.nonzero(s.elements.kind == TARGET).flatten()
    vis = s.elements.chunk[t[torch.argsort(s.elements.index[t])]].tolist()
    units = units_done(session.codec.boundaries(s.tokens))[: len(vis)]
    return vis, units, s.chunks_read


def schedule_summary(rows: Sequence[dict]) -> dict:
    """How the rows written before the end of the audio were scheduled: the share of rows at each lag
    (visible chunks - words written before the row; wait-k k has lag k for every such row) and the mean lag.
    Rows written after the end of the audio see everything whatever the policy, so they are left out."""
    lags = [v - c for r in rows if "vis" in r for v, c in zip(r["vis"], r["units"]) if v < r["chunks"]]
    if not lags:
        return {"schedule_rows": 0}
    n = len(lags)
    hist = {str(lag): round(cnt / n, 4) for lag, cnt in sorted(Counter(lags).items())}
    return {"schedule_rows": n, "lag_mean": sum(lags) / n, "lag_share": hist}


def model_digest(model) -> str:
    """SHA-256 of what the model computes with: the files of the directory it was loaded from (config, weights,
    tokenizer, a Whisper encoder's ``encoder/`` folder), or its weights when it was built in memory. Computed once
    per model object."""
    import hashlib

    cached = getattr(model, "_digest", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    src = getattr(model, "source_dir", None)
    if src is not None and Path(src).is_dir():
        for f in sorted(p for p in Path(src).rglob("*") if p.is_file()):
            h.update(f.relative_to(src).as_posix().encode())  # the name for the top-level files: digests kept
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    else:
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    model._digest = h.hexdigest()
    return model._digest


def run_key(model, utts: Sequence[Utterance], cfg: StreamConfig, setting: Setting, segment: str,
            lists: bool = False) -> dict:
    """Everything that decides an evaluation's records: model (by content), data (ids, texts, audio paths: the
    --limit is in there), stream settings, chunk length, segmentation and the encoder's compute dtype. A resumed run
    must match it. The audio itself is checked per record (:func:`stale_records`): a changed file re-scores only its
    utterance."""
    import hashlib

    fmt = model.cfg.text_format == "formatted" and not cfg.plain  # formatted references are scored: they count too
    data = hashlib.sha256("\n".join(f"{u.id}\t{u.text}\t{u.audio_path}" + (f"\t{u.formatted}" if fmt else "")
                                    + (f"\t{list(u.context)}" if u.context else "")
                                    for u in utts).encode()).hexdigest()
    # (folders from before plain or context lists existed: plain False, no context; they keep their key)
    stream = {k: v for k, v in asdict(cfg).items() if (k != "plain" or v) and (k != "context" or v)}
    key = {"model": model_digest(model), "data": data, "utterances": len(utts), "stream": stream,
           "chunk_ms": model.chunk_ms, "segment": segment, "encoder_dtype": encoder_dtype_name(model)}
    if lists:
        key["data_context"] = True
    return key


AUDIO_ENDS = 1 << 16  # bytes hashed at each end of an audio file for its identity


def audio_identity(path: str | Path) -> dict:
    """What a record's audio must still be for the record to be reused: the file's size, modification time (ns) and
    SHA-256 of its first and last 64 KiB (cheap; catches a file replaced by one of the same size with its old
    modification time restored, unless the change is only in the middle)."""
    import hashlib

    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with p.open("rb") as f:
        h.update(f.read(AUDIO_ENDS))
        if st.st_size > 2 * AUDIO_ENDS:
            f.seek(st.st_size - AUDIO_ENDS)
        h.update(f.read(AUDIO_ENDS))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}


def stale_records(out: Path, utts: Sequence[Utterance], records: dict[str, dict]) -> list[str]:
    """Drop (from ``records``, so they are evaluated again) the records whose audio is not what they were computed
    from: the file's :func:`audio_identity` changed, or the record has none (written before it was recorded: it
    cannot be checked, so it is not trusted). Says so in one warning per cause; returns the ids dropped. The new
    records are appended and win over the old lines on the next read (the last line of an id counts)."""
    import warnings

    changed, unchecked = [], []
    for u in utts:
        r = records.get(u.id)
        if r is None:
            continue
        if "audio" not in r:
            unchecked.append(u.id)
        elif r["audio"] != audio_identity(u.audio_path):
            changed.append(u.id)
    for ids, why in ((changed, "audio changed since their records were written"),
                     (unchecked, "their records predate audio identity (written before records kept their audio's "
                                 "size, time and hash) and cannot be checked against the audio")):
        if ids:
            warnings.warn(f"{out}: {len(ids)} utterances re-scored: {why} (e.g. {ids[0]})", stacklevel=3)
            for i in ids:
                del records[i]
    return changed + unchecked


def encoder_dtype_name(model) -> str:
    """The dtype the model's encoder streams in, as ``--encoder-dtype`` names it (float32: the weights' own)."""
    dtype = getattr(model.encoder, "compute_dtype", None)
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


# keys added to the run key after folders were written without them: their value in those folders
_KEY_DEFAULTS = {"encoder_dtype": "float32"}


def check_resume(out: Path, key: dict) -> None:
    """Refuse (one line) to resume a folder whose records came from other settings; write the key otherwise."""
    path = out / "settings.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{path}: unreadable; delete it (and the records beside it) or choose another --output") from None
        old = {**_KEY_DEFAULTS, **old}  # a folder from before a key existed holds that key's default
        diff = [k for k in dict.fromkeys([*key, *old]) if old.get(k) != key.get(k)]
        if diff:
            what = ", ".join(f"{k}: {_short(old.get(k))} -> {_short(key.get(k))}" for k in diff)
            raise ValueError(f"{out}: holds results of other settings ({what}); choose another --output or delete it")
        return
    if (out / "records.jsonl").exists() or (out / "summary.json").exists():
        raise ValueError(f"{out}: holds results without their settings (an older run); choose another --output or delete it")
    tmp = path.with_name(".settings.json.tmp")
    tmp.write_text(json.dumps(key, indent=2) + "\n")
    tmp.replace(path)


def _short(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={w}" for k, w in v.items()) + "}"
    return str(v)[:12] if isinstance(v, str) and len(v) == 64 else str(v)


PART = "records.rank{rank}.jsonl"
"""Where process ``rank`` of a multi-process eval appends each record as it is scored (beside ``records.jsonl``)."""


def fold_parts(out: Path) -> int:
    """Append the whole lines of the part files a killed multi-process run left in ``out`` (:data:`PART`) to
    ``records.jsonl`` and delete them; the number of records taken. A torn last line is dropped (it is scored again).
    Records of an id already there are appended too: the last line of an id counts, and a part's is the newer one."""
    parts = sorted(out.glob(PART.format(rank="*")))
    taken = []
    for p in parts:
        lines = p.read_text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            import warnings

            warnings.warn(f"{p}: dropped a torn last line (the run was interrupted mid-write); that utterance is "
                          "evaluated again", stacklevel=2)
        taken += [x for x in lines if x.endswith("\n") and x.strip()]
    if taken:
        with (out / "records.jsonl").open("a") as f:
            f.write("".join(taken))
            f.flush()
            os.fsync(f.fileno())
    for p in parts:
        p.unlink()
    return len(taken)


def read_records(path: Path) -> dict[str, dict]:
    """Records of a run, by id. A torn last line (the run was killed mid-write) is dropped with a warning naming the
    file, and the file is rewritten without it, so the resumed run appends after whole lines; a bad line elsewhere
    is an error naming the file and line."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    lines = path.read_text().splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                import warnings

                warnings.warn(f"{path}: dropped a torn last line (the run was interrupted mid-write); that utterance "
                              "is evaluated again", stacklevel=2)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text("".join(lines[: n - 1]))
                tmp.replace(path)
                break
            raise ValueError(f"{path}: line {n} is not a JSON record; delete the file or choose another --output") from None
        records[r["id"]] = r
    return records


def summarize(rows: Sequence[dict]) -> dict:
    """One setting's summary of its records. Latencies are means over the utterances with reference words (a word
    written on non-speech has no word it could lag behind); utterances without reference words (non-speech) also
    count how many words were written on them: ``nonspeech_utterances``, ``nonspeech_with_words``,
    ``nonspeech_words`` (their words are insertions in the WER, which is undefined when no utterance has words)."""
    w = wer_details([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    spoken = [r for r in rows if r["reference"].split()]
    lat = aggregate([{k[4:]: v for k, v in r.items() if k.startswith("lat_")} for r in spoken])
    audio_s = sum(r["audio_ms"] for r in rows) / 1000.0
    compute_s = sum(r["compute_s"] for r in rows)
    out = {"utterances": len(rows), "wer": w["wer"], "substitutions": w["substitutions"], "deletions": w["deletions"],
           "insertions": w["insertions"], "ref_words": w["ref_words"], "audio_s": audio_s, "compute_s": compute_s,
           "rtf": real_time_factor(compute_s, audio_s) if audio_s else math.nan}
    for key in ("AL", "LAAL", "AL_CA", "LAAL_CA", "first_word_delay", "last_word_delay"):
        out[key] = lat[key]
    out.update(pr_summary(lag for r in rows if "ref_word_end_ms" in r for lag in record_word_lags(r)))
    out.update(schedule_summary(rows))
    if any("bias_words" in r for r in rows):
        from .biasing import biasing_summary

        out.update(biasing_summary(rows))
    out.update(record_intervals(rows))  # 95 % bootstrap intervals of WER and LAAL over these utterances
    out.update(formatted_summary(rows))
    silent = [r for r in rows if not r["reference"].split()]
    if silent:
        out.update(nonspeech_utterances=len(silent), nonspeech_with_words=sum(bool(r["hypothesis"].split()) for r in silent),
                   nonspeech_words=sum(len(r["hypothesis"].split()) for r in silent))
    return out


def formatted_summary(rows: Sequence[dict]) -> dict:
    """The formatted-text figures (:mod:`asr_stream.evaluation.formatted`) when every record has a formatted
    hypothesis and reference: ``formatted_wer`` (case- and punctuation-sensitive, over words and marks),
    ``formatted_tokens`` (reference words + marks), ``punct_f1`` / ``punct_precision`` / ``punct_recall``
    (micro-averaged over mark classes), ``punct_f1_ci`` (its 95 % bootstrap interval over the utterances) and
    ``punct_classes`` (per mark). Empty otherwise (a plain model, ``--plain``,
    or a corpus without formatted text)."""
    from .formatted import formatted_wer, punctuation_f1

    if not rows or not all(r.get("formatted") and "reference_formatted" in r for r in rows):
        return {}
    refs, hyps = [r["reference_formatted"] for r in rows], [r["hypothesis"] for r in rows]
    fw, pf = formatted_wer(refs, hyps), punctuation_f1(refs, hyps)
    from .stats import f1_interval

    each = [punctuation_f1([r], [h]) for r, h in zip(refs, hyps)]  # the same counts, per utterance, for the interval
    return {"formatted_wer": fw["wer"], "formatted_tokens": fw["ref_words"], "punct_f1": pf["f1"],
            "punct_f1_ci": list(f1_interval(*([e[k] for e in each] for k in ("tp", "fp", "fn")))),
            "punct_precision": pf["precision"], "punct_recall": pf["recall"], "punct_classes": pf["classes"]}


def record_word_lags(r: Mapping) -> list[float]:
    """:func:`word_lags` of one record (which must have ``ref_word_end_ms``, one per reference word)."""
    ref_words = r["reference"].split()
    if len(ref_words) != len(r["ref_word_end_ms"]):
        raise ValueError(f"{r['id']}: {len(ref_words)} reference words but {len(r['ref_word_end_ms'])} word ends")
    return word_lags(list(zip(ref_words, r["ref_word_end_ms"])), [(w["text"], w["time_ms"]) for w in r["words"]])
