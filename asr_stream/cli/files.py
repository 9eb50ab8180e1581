"""``asr-stream transcribe``: audio files through a local model, words as they come, then each file's transcript
(txt/json/srt/vtt). ``export``: a model directory from a training checkpoint. ``masks``: a mode's attention mask."""

from __future__ import annotations

import sys
from typing import Literal, Optional

from ..config import Mode, Reencode  # the mode and re-encoding names, written once (the options' choices)
from .console import check_block_ms, check_writable, print_words, say_error, warn
from .options import EndpointOptions, StreamOptions


def _stream_file(stream, f: str, block_ms: int, realtime: bool, on_words) -> tuple[float, list[str], bool]:
    """Push one file through ``stream`` (a SegmentedSession) in ``block_ms`` blocks, then finish it
    (:func:`asr_stream.streaming.driver.drive`).

    Reads the file block by block (memory does not grow with its length, paced or not). Returns (compute seconds:
    time inside push/finish only, warnings about the audio, whether the file held all the audio its header
    declares). Ctrl-C (and SIGTERM, under sigterm_as_interrupt) or a bad block finishes what was heard, then
    re-raises.
    """
    from ..audio.io import SAMPLES_PER_MS, AudioFile, LevelCheck
    from ..streaming.driver import drive

    audio = AudioFile(f)
    check = LevelCheck(audio.rate)
    step = max(1, block_ms * SAMPLES_PER_MS)

    def blocks():
        for big in audio.blocks():
            for i in range(0, big.shape[0], step):
                check.push(big[i : i + step])
                yield big[i : i + step]

    d = drive(stream, blocks(), on_words, realtime=realtime)
    return d.compute_s, audio.warnings + check.warnings(), audio.complete


def transcribe(files: list[str], options: StreamOptions = StreamOptions(), reencode: Reencode = "none",
               block_ms: int = 100, realtime: bool = False,
               format: list[Literal["txt", "json", "srt", "vtt"]] = [],  # noqa: B006
               output_dir: Optional[str] = None, json: Optional[str] = None, no_segment: bool = False,
               endpoint: EndpointOptions = EndpointOptions()) -> None:
    """Stream audio files through a model and print words as they are emitted, then the final text.

    Recordings of any length: the stream is cut into utterances at pauses (see --min-silence-ms,
    --max-segment-s) and word times stay absolute. Each file's results are written as soon as it is done; a bad
    file, or one whose outputs cannot be written (a full disk), is reported and the next one goes on (exit status 1
    at the end; a failed file gets no output files); Ctrl-C and SIGTERM keep what was heard (exit status 130 / 143).
    Outputs are regular files or new paths (a symbolic link is written through); a FIFO, device or directory is
    refused before any work. Audio the model serves badly is said on stderr and in the JSON's warnings.

    Args:
        files: audio files (wav/flac/ogg/mp3; any rate; mono or multi-channel; any length).
        options: which model, where, and how it streams (:class:`~asr_stream.cli.options.StreamOptions`).
        reencode: batch mode only: none, position or kv.
        block_ms: size of the audio blocks pushed into the session, in ms.
        realtime: release the blocks at the pace of a microphone (one block every block_ms) instead of at once.
        format: write each file's transcript in these formats (txt, json, srt, vtt) as <output-dir>/<name>.<format>.
        output_dir: folder for --format files (default: the current folder).
        json: also write every file's result (segments, words with emission times in ms of audio from the start,
            final text, audio seconds, compute seconds, RTF, seconds of speech that produced no words) to this
            one JSON file, rewritten after each file.
        no_segment: feed each file as one utterance (no endpointing; only for short utterances).
        endpoint: where the stream is cut into utterances (:class:`~asr_stream.cli.options.EndpointOptions`).
    """
    import json as jsonlib
    from pathlib import Path

    from ..audio import AudioError
    from ..audio.io import SAMPLE_RATE, audio_info
    from ..signals import StepGuard
    from ..streaming import StreamingSession
    from ..streaming.defaults import training_differences
    from ..streaming.segment import SegmentedSession
    from ..transcript import atomic_write, check_outputs, render, repetition_warning, unheard_warning

    check_block_ms(block_ms)
    options.context_phrases()  # a bad --context / --context-file fails before any work
    rules = None if no_segment else endpoint.config()  # None: one utterance, no segmentation
    out_dir = Path(output_dir) if output_dir is not None else Path(".")
    targets = {f: [out_dir / f"{Path(f).stem}.{fmt}" for fmt in dict.fromkeys(format)] for f in files}
    if output_dir is not None and not format:
        raise ValueError("--output-dir needs --format (txt, json, srt or vtt)")
    if output_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--output-dir {out_dir} is not a folder")
        if not out_dir.exists():
            if not out_dir.expanduser().resolve().parent.is_dir():
                raise ValueError(f"--output-dir {out_dir}: folder {out_dir.expanduser().resolve().parent} does not exist")
            out_dir.mkdir()
    check_outputs(files, [p for ps in targets.values() for p in ps] + ([json] if json is not None else []))
    m = options.load()
    cfg = options.config(m, reencode=reencode)  # unset: the training values
    settings = {"model": str(options.model) if options.model is not None else "default", "mode": cfg.mode, "k": cfg.k, "phi": cfg.phi,
                "as_trained": not training_differences(m.cfg, cfg), "reencode": reencode, "chunk_ms": m.chunk_ms,
                "policy": cfg.policy, "policy_args": cfg.policy_args, "context": list(cfg.context),
                "text_format": "plain" if cfg.plain else m.cfg.text_format,
                "block_ms": block_ms, "realtime": realtime,
                "device": options.device, "segmentation": None if rules is None else {"min_silence_ms": rules.min_silence_ms,
                                                                                       "max_segment_s": rules.max_segment_s,
                                                                                       "vad": rules.detector}}
    results, failed = [], []
    unsaved: set[str] = set()  # outputs whose last write failed (a full disk): the run ends with exit status 1

    def save(path, text: str) -> Optional[str]:
        """Write one output; a failure (named, one line) is printed and returned, and the batch goes on."""
        try:
            atomic_write(path, text)
            unsaved.discard(str(path))
            return None
        except (OSError, ValueError) as e:
            say_error(str(e))
            unsaved.add(str(path))
            return str(e)

    def save_combined() -> None:
        if json is not None:
            save(json, jsonlib.dumps({"settings": settings, "files": results, "failed": failed}, indent=2) + "\n")

    interrupted: Optional[KeyboardInterrupt] = None
    for f in files:
        try:
            audio_info(f)  # a bad file fails here, before its session starts
        except AudioError as e:
            print(f"asr-stream: error: {str(e).splitlines()[0]}", file=sys.stderr)
            failed.append({"file": str(f), "error": str(e).splitlines()[0]})
            save_combined()
            continue
        stream = SegmentedSession(StreamingSession(m, cfg), rules)
        print(f"{f}: ", end="", flush=True)
        error, complete = None, True
        try:
            compute, warns, complete = _stream_file(stream, f, block_ms, realtime, print_words)
        except AudioError as e:  # e.g. NaN samples halfway: what came before is kept
            error, compute, warns = str(e).splitlines()[0], 0.0, []
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what was heard is kept
            interrupted, compute, warns = e, 0.0, []
        print()
        print(f"final: {stream.text}", flush=True)
        unheard_s, unheard_idx = stream.unheard
        unheard_said = unheard_warning(unheard_s, unheard_idx)
        warns += [unheard_said] if unheard_said else []
        repeated = repetition_warning([w.text for w in stream.words])
        warns += [repeated] if repeated else []
        warn(f, warns)
        audio_s = stream.samples_in / SAMPLE_RATE
        result = {"file": str(f), "text": stream.text, "segments": [s.as_dict() for s in stream.segments],
                  "words": [{"text": w.text, "time_ms": w.time_ms} for w in stream.words],
                  "audio_s": audio_s, "compute_s": compute, "rtf": compute / audio_s if audio_s else None,
                  "unheard_s": unheard_s, "unheard_segments": unheard_idx, "warnings": warns,
                  "complete": error is None and interrupted is None and complete}
        with StepGuard() as held:  # Ctrl-C or SIGTERM now waits until this file's results are on disk
            if error is not None:  # a failed file gets no output files (only its entries in --json)
                print(f"asr-stream: error: {error}", file=sys.stderr)
            else:
                error = next(filter(None, [save(path, render(result, path.suffix[1:])) for path in targets[f]]), None)
            if error is not None:
                failed.append({"file": str(f), "error": error})
            results.append(result)
            save_combined()
        if interrupted is not None:
            raise interrupted
        held.reraise()
    if failed or unsaved:
        print(f"asr-stream: {len(failed)} of {len(files)} file(s) failed"
              + (f"; not written: {', '.join(sorted(unsaved))}" if unsaved else ""), file=sys.stderr)
        sys.exit(1)



def export(ckpt: str, like: str, output: str, weights: Literal["average", "live"] = "average") -> None:
    """Write a model directory from a training checkpoint (an earlier step, or the live weights of an EMA run).

    Args:
        ckpt: a .ckpt file written by asr-stream train (read weights-only: no pickled code runs).
        like: a model directory of the same run (its config and tokenizer are copied), e.g. the run's export_dir.
        output: the model directory to write.
        weights: average: the EMA/SWA average kept in the checkpoint; live: the optimiser's own weights.
    """
    from ..training.export import export_checkpoint

    check_writable(output, "--output")
    print(export_checkpoint(ckpt, like, output, weights))


def masks(mode: Mode = "group", k: int = 1, phi: float = 0.0,
          chunks: int = 3, embeds_per_chunk: int = 1, prompt_tokens: int = 0,
          words: str = "1 2 1", context_tokens: int = 0) -> None:
    """Print a mode's attention mask for a small example, to see what the model attends to.

    Args:
        mode: group (group positions + wait-k), interleaved (arrival order, causal) or batch (offline).
        k: wait-k (ignored by batch, which trains offline).
        phi: target-group start position (group mode).
        chunks: audio chunks N.
        embeds_per_chunk: source embeddings per chunk E.
        prompt_tokens: prompt tokens P before the audio.
        words: tokens per target word, e.g. "1 2 1" = a one-token word, a two-token word, a one-token word.
        context_tokens: tokens C of a context list (prompted hotwords), before the target group.
    """
    from ..groups import render, training_layout, units_done

    try:
        lengths = [int(w) for w in words.split()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise ValueError(f"--words must be tokens per word as positive integers, e.g. \"1 2 1\"; got {words!r}")
    flags = [i == n - 1 for n in lengths for i in range(n)]
    units = units_done(flags)
    if context_tokens < 0:
        raise ValueError(f"--context-tokens must be >= 0, got {context_tokens}")
    els = training_layout(mode, prompt_tokens, chunks, embeds_per_chunk, units, None if mode == "batch" else k, phi,
                          C=context_tokens)
    print(f"mode={mode} k={k} phi={phi} N={chunks} E={embeds_per_chunk} P={prompt_tokens} C={context_tokens} words={lengths}")
    print("rows: p = prompt, c = context, a = audio embedding, t = target row (t0 = BOS; row i predicts token i); "
          "x = attends; (position)")
    print(render(mode, els))


