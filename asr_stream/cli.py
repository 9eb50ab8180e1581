"""``asr-stream`` command line. Subcommands import their heavy dependencies lazily.

Errors a person can cause (bad files, devices, models, options) print one line and exit 2. ``transcribe``,
``client`` and ``mic`` stop on SIGTERM as on Ctrl-C, keeping what was heard (exit status 128 + the signal).
"""

from __future__ import annotations

import sys
from typing import Literal, Optional

from .config import Mode, PolicyName, Reencode  # the mode and policy names, written once (the options' choices)
# check_device and set_encoder_dtype moved to asr_stream.loading (one loader for every command); these names stay
# importable from here for code that used them, but are deprecated: import them from asr_stream.loading.
from .loading import check_device, load_model, set_encoder_dtype  # noqa: F401


def masks(mode: Mode = "group", k: int = 1, phi: float = 0.0,
          chunks: int = 3, embeds_per_chunk: int = 1, prompt_tokens: int = 0,
          words: str = "1 2 1") -> None:
    """Print a mode's attention mask for a small example, to see what the model attends to.

    Args:
        mode: group (group positions + wait-k), interleaved (arrival order, causal) or batch (offline).
        k: wait-k (ignored by batch, which trains offline).
        phi: target-group start position (group mode).
        chunks: audio chunks N.
        embeds_per_chunk: source embeddings per chunk E.
        prompt_tokens: prompt tokens P before the audio.
        words: tokens per target word, e.g. "1 2 1" = a one-token word, a two-token word, a one-token word.
    """
    from .groups import render, training_layout, units_done

    try:
        lengths = [int(w) for w in words.split()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise ValueError(f"--words must be tokens per word as positive integers, e.g. \"1 2 1\"; got {words!r}")
    flags = [i == n - 1 for n in lengths for i in range(n)]
    units = units_done(flags)
    els = training_layout(mode, prompt_tokens, chunks, embeds_per_chunk, units, None if mode == "batch" else k, phi)
    print(f"mode={mode} k={k} phi={phi} N={chunks} E={embeds_per_chunk} P={prompt_tokens} words={lengths}")
    print("rows: p = prompt, a = audio embedding, t = target row (t0 = BOS; row i predicts token i); x = attends; (position)")
    print(render(mode, els))


def _check_writable(path: Optional[str], option: str) -> None:
    """Fail before any work when an output file cannot be created (its folder is missing)."""
    from pathlib import Path

    if path is not None:
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"{option} {path}: folder {parent} does not exist")


def _say_error(message: str) -> None:
    print(f"asr-stream: error: {message}", file=sys.stderr, flush=True)


def _print_words(words) -> None:
    print(" ".join(w.text for w in words), end=" ", flush=True)


def _endpoint(no_segment: bool, min_silence_ms: float, max_segment_s: float, vad: str = "energy"):
    """The endpoint rules of a command (None: one utterance, no segmentation). ``vad="silero"`` checks that the
    VAD's weights load before any work starts."""
    from .streaming.segment import EndpointConfig

    if no_segment:
        return None
    if vad == "silero":
        from .audio.vad import VADError, shared_model

        try:
            shared_model()
        except VADError as e:
            raise ValueError(f"--vad silero: {e}") from None
    return EndpointConfig(min_silence_ms=min_silence_ms, max_segment_s=max_segment_s, detector=vad)


def _warn(where: str, warnings: list[str]) -> None:
    """Print each warning about ``where`` (a file, the microphone) as one line on stderr."""
    for w in warnings:
        print(f"asr-stream: warning: {where}: {w}", file=sys.stderr, flush=True)


def _stream_file(stream, f: str, block_ms: int, realtime: bool, on_words) -> tuple[float, list[str], bool]:
    """Push one file through ``stream`` (a SegmentedSession) in ``block_ms`` blocks, then finish it.

    Reads the file block by block (memory does not grow with its length). Returns (compute seconds: time inside
    push/finish only, warnings about the audio, whether the file held all the audio its header declares). Ctrl-C
    (and SIGTERM, under sigterm_as_interrupt) finishes what was heard, then re-raises.
    """
    import time

    import numpy as np

    from .audio.io import SAMPLES_PER_MS, AudioFile, LevelCheck
    from .audio.sources import paced_blocks
    from .signals import StepGuard

    audio = AudioFile(f)
    check = LevelCheck(audio.rate)
    step = max(1, block_ms * SAMPLES_PER_MS)
    spent = 0.0

    def blocks():
        for big in audio.blocks():
            for i in range(0, big.shape[0], step):
                yield big[i : i + step]

    source = paced_blocks(np.concatenate(list(blocks())), block_ms=block_ms) if realtime else blocks()
    try:
        for block in source:
            check.push(block)
            t0 = time.perf_counter()
            with StepGuard() as d:  # Ctrl-C completes the step under way, so finish() below is safe
                words = stream.push(block)
            spent += time.perf_counter() - t0
            if words:
                on_words(words)
            d.reraise()
    finally:  # the end of the file, a bad block or Ctrl-C: what was heard is finished and kept
        t0 = time.perf_counter()
        words = stream.finish()
        spent += time.perf_counter() - t0
        if words:
            on_words(words)
    return spent, audio.warnings + check.warnings(), audio.complete


def transcribe(files: list[str], model: Optional[str] = None, k: Optional[int] = None, phi: Optional[float] = None,
               mode: Optional[Mode] = None,
               reencode: Reencode = "none", chunk_ms: Optional[int] = None,
               device: str = "cpu", encoder_dtype: Literal["float32", "bfloat16"] = "float32", block_ms: int = 100,
               realtime: bool = False,
               format: list[Literal["txt", "json", "srt", "vtt"]] = [],  # noqa: B006
               output_dir: Optional[str] = None, json: Optional[str] = None, no_segment: bool = False,
               min_silence_ms: float = 300.0, max_segment_s: float = 20.0, vad: Literal["energy", "silero"] = "energy",
               policy: PolicyName = "waitk", policy_args: list[str] = []) -> None:  # noqa: B006
    """Stream audio files through a model and print words as they are emitted, then the final text.

    Recordings of any length: the stream is cut into utterances at pauses (see --min-silence-ms,
    --max-segment-s) and word times stay absolute. Each file's results are written as soon as it is done; a bad
    file, or one whose outputs cannot be written (a full disk), is reported and the next one goes on (exit status 1
    at the end; a failed file gets no output files); Ctrl-C and SIGTERM keep what was heard (exit status 130 / 143).
    Outputs are regular files or new paths (a symbolic link is written through); a FIFO, device or directory is
    refused before any work. Audio the model serves badly is said on stderr and in the JSON's warnings.

    Args:
        files: audio files (wav/flac/ogg/mp3; any rate; mono or multi-channel; any length).
        model: model directory (config.json + model.safetensors + tokenizer); default: the bundled model.
        k: wait-k in chunks (default: 3 if the model was trained with it, else its training k closest to 3).
        phi: target-group start position (default: the model's training φ).
        mode: group, interleaved or batch (default: the model's training mode).
        reencode: batch mode only: none, position or kv.
        chunk_ms: override the model's chunk length in ms.
        device: cpu or cuda.
        encoder_dtype: float32, or bfloat16 for the encoder's matrix products (about twice as fast on CPUs with bfloat16
            instructions, slower on others; the decoder stays in its own dtype).
        block_ms: size of the audio blocks pushed into the session, in ms.
        realtime: release the blocks at the pace of a microphone (one block every block_ms) instead of at once.
        format: write each file's transcript in these formats (txt, json, srt, vtt) as <output-dir>/<name>.<format>.
        output_dir: folder for --format files (default: the current folder).
        json: also write every file's result (segments, words with emission times in ms of audio from the start,
            final text, audio seconds, compute seconds, RTF, seconds of speech that produced no words) to this
            one JSON file, rewritten after each file.
        no_segment: feed each file as one utterance (no endpointing; only for short utterances).
        min_silence_ms: a pause this long (ms) after speech ends an utterance.
        max_segment_s: an utterance is cut after this many seconds of audio even without a pause.
        vad: which frames are speech for the endpointer: energy (the level against an adaptive noise floor) or
            silero (the Silero VAD network: keeps speech in white noise at 10 dB SNR where energy loses 16 % of the
            words, benchmarks/results/vad).
        policy: read/write policy: waitk (word j after k + j chunks), ctc (word j once the CTC head heard its end)
            or confidence (write when the decoder's top token is likely enough, else read); adaptive policies write
            word j after k_max + j chunks at the latest (k_max: --k unless given in --policy-args).
        policy_args: parameters of the policy as NAME=VALUE: ctc: threshold (0.5), margin (0 chunks), k_max;
            confidence: threshold (0.9), k_max.
    """
    import json as jsonlib
    from pathlib import Path

    from .audio import AudioError
    from .audio.io import SAMPLE_RATE, audio_info
    from .signals import StepGuard
    from .streaming import StreamingSession
    from .streaming.segment import SegmentedSession
    from .transcript import atomic_write, check_outputs, render, repetition_warning, unheard_warning
    from .streaming.defaults import stream_config_for, training_differences

    if block_ms <= 0:
        raise ValueError(f"--block-ms must be > 0, got {block_ms}")
    endpoint = _endpoint(no_segment, min_silence_ms, max_segment_s, vad)
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
    m = load_model(model, device, chunk_ms, encoder_dtype)
    from .streaming.policy import parse_policy_args

    cfg = stream_config_for(m, mode=mode, k=k, phi=phi, reencode=reencode,  # unset: the training values
                            policy=policy, policy_args=parse_policy_args(policy_args))
    settings = {"model": str(model) if model is not None else "default", "mode": cfg.mode, "k": cfg.k, "phi": cfg.phi,
                "as_trained": not training_differences(m.cfg, cfg), "reencode": reencode, "chunk_ms": m.chunk_ms,
                "policy": cfg.policy, "policy_args": cfg.policy_args,
                "block_ms": block_ms, "realtime": realtime,
                "device": device, "segmentation": None if endpoint is None else {"min_silence_ms": endpoint.min_silence_ms,
                                                                                  "max_segment_s": endpoint.max_segment_s,
                                                                                  "vad": endpoint.detector}}
    results, failed = [], []
    unsaved: set[str] = set()  # outputs whose last write failed (a full disk): the run ends with exit status 1

    def save(path, text: str) -> Optional[str]:
        """Write one output; a failure (named, one line) is printed and returned, and the batch goes on."""
        try:
            atomic_write(path, text)
            unsaved.discard(str(path))
            return None
        except (OSError, ValueError) as e:
            print(f"asr-stream: error: {e}", file=sys.stderr, flush=True)
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
        stream = SegmentedSession(StreamingSession(m, cfg), endpoint)
        print(f"{f}: ", end="", flush=True)
        error, complete = None, True
        try:
            compute, warns, complete = _stream_file(stream, f, block_ms, realtime, _print_words)
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
        _warn(f, warns)
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


def mic(model: Optional[str] = None, device_index: Optional[int] = None, list_devices: bool = False,
        k: Optional[int] = None, phi: Optional[float] = None,
        mode: Optional[Mode] = None, chunk_ms: Optional[int] = None,
        device: str = "cpu", encoder_dtype: Literal["float32", "bfloat16"] = "float32", output: Optional[str] = None,
        block_ms: int = 100, min_silence_ms: float = 300.0,
        max_segment_s: float = 20.0, vad: Literal["energy", "silero"] = "energy", url: Optional[str] = None, policy: PolicyName = "waitk",
        policy_args: list[str] = [], api_key_file: Optional[str] = None) -> None:  # noqa: B006
    """Transcribe the microphone live: words are printed as they come; Ctrl-C stops and prints the transcript.

    Args:
        model: model directory; default: the bundled model.
        device_index: input device (see --list-devices); default: the system's default input.
        list_devices: list the input devices and exit.
        k: wait-k in chunks (default: 3 if the model was trained with it, else its training k closest to 3).
        phi: target-group start position (default: the model's training φ).
        mode: group, interleaved or batch (default: the model's training mode).
        chunk_ms: override the model's chunk length in ms.
        device: cpu or cuda (where the model runs).
        encoder_dtype: float32, or bfloat16 for the encoder's matrix products (about twice as fast on CPUs with bfloat16
            instructions, slower on others; the decoder stays in its own dtype).
        output: also write the transcript to this file, word by word as they are emitted (any stop keeps them).
        block_ms: audio per microphone block, in ms.
        min_silence_ms: a pause this long (ms) after speech ends an utterance (the session restarts, text goes on).
        max_segment_s: an utterance is cut after this many seconds of audio even without a pause.
        vad: which frames are speech for the endpointer: energy (the level against an adaptive noise floor) or
            silero (the Silero VAD network: keeps speech in white noise at 10 dB SNR where energy loses 16 % of the
            words, benchmarks/results/vad).
        url: decode on a running asr-stream serve at this ws:// address instead of loading a model here (the
            server's model, mode, φ, policy and endpoint rules apply; --k is sent as this stream's k).
        policy: read/write policy: waitk (word j after k + j chunks), ctc (word j once the CTC head heard its end)
            or confidence (write when the decoder's top token is likely enough, else read); adaptive policies write
            word j after k_max + j chunks at the latest (k_max: --k unless given in --policy-args).
        policy_args: parameters of the policy as NAME=VALUE: ctc: threshold (0.5), margin (0 chunks), k_max;
            confidence: threshold (0.9), k_max.
        api_key_file: with --url: send the first key of this file (default: the ASR_STREAM_API_KEY variable, if set).
    """
    from .audio.io import LevelCheck
    from .audio.sources import list_input_devices, microphone_blocks
    from .live import run_live, watch_level
    from .streaming import StreamingSession
    from .streaming.segment import SegmentedSession
    from .transcript import LiveOutput, check_outputs

    if list_devices:
        for d in list_input_devices():
            print(f"{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz)")
        return
    from .streaming.policy import parse_policy_args

    endpoint = _endpoint(False, min_silence_ms, max_segment_s, vad)
    args = parse_policy_args(policy_args)  # a bad parameter fails before the microphone opens
    if block_ms <= 0:
        raise ValueError(f"--block-ms must be > 0, got {block_ms}")
    if output is not None:
        check_outputs([], [output])
    blocks = microphone_blocks(device_index, block_ms=block_ms)  # checks the device before the model loads
    # a muted or quiet microphone is said live, and the level checks are said again at the end
    check = LevelCheck(remedy="raise the microphone's input gain (or speak closer to it)")
    blocks = watch_level(blocks, check, lambda w: _warn("microphone", [w]))
    if api_key_file is not None and url is None:
        raise ValueError("--api-key-file is the key of a server: give --url too")
    if url is not None:
        from .serving.auth import client_key

        key = client_key(api_key_file)
        if policy != "waitk" or policy_args:
            raise ValueError("--policy and --policy-args choose a local model's policy; with --url the server's applies")
        if encoder_dtype != "float32":
            raise ValueError("--encoder-dtype sets a local model's encoder; with --url the server's applies")
        if vad != "energy":
            raise ValueError("--vad sets the local endpointer; with --url the server's endpoint rules apply")
        try:
            _remote_mic(url, blocks, k, output, key)
        finally:
            _warn("microphone", check.warnings())
        return
    m = load_model(model, device, chunk_ms, encoder_dtype)
    stream = SegmentedSession(StreamingSession(m, mode=mode, k=k, phi=phi, policy=policy, policy_args=args),
                              endpoint)  # unset: the training values
    out = LiveOutput(output, _say_error) if output is not None else None

    def on_words(words) -> None:
        _print_words(words)
        if out is not None:  # each word on disk as soon as it is printed: SIGKILL or a crash keep them too
            out.add([w.text for w in words])

    print("listening... (Ctrl-C to stop)", file=sys.stderr, flush=True)
    saved = True
    try:  # SIGTERM stops as Ctrl-C does (main's sigterm_as_interrupt; run_live holds both during a decoder step)
        text = run_live(stream, blocks, on_words)
    finally:
        if out is not None:
            saved = out.close(stream.text)
    print()
    print(f"final: {text}", flush=True)
    _warn("microphone", check.warnings())
    if not saved:
        sys.exit(1)


def serve(model: Optional[str] = None, host: str = "127.0.0.1", port: int = 8765, k: Optional[int] = None,
          phi: Optional[float] = None, mode: Optional[Mode] = None,
          chunk_ms: Optional[int] = None, device: str = "cpu", encoder_dtype: Literal["float32", "bfloat16"] = "float32",
          max_clients: int = 8, max_session_s: float = 3600.0,
          idle_timeout_s: float = 30.0, min_audio_s: float = 1.0, max_backlog_s: float = 5.0, max_per_address: int = 8,
          max_frame_bytes: int = 1 << 20, send_queue: int = 256, min_silence_ms: float = 300.0, max_segment_s: float = 20.0, vad: Literal["energy", "silero"] = "energy",
          tick_ms: Optional[float] = None,
          scheduler: Literal["batched", "per-client"] = "batched", policy: PolicyName = "waitk",
          policy_args: list[str] = [], threads: int = 1, decoder_threads: int = 1, max_upload_mb: float = 25.0,
          max_uploads: int = 2, api_key_file: Optional[str] = None, certfile: Optional[str] = None,
          keyfile: Optional[str] = None, drain_s: float = 30.0) -> None:  # noqa: B006
    """Serve live transcription over WebSocket (docs/protocol.md), a browser page at http://HOST:PORT/ and OpenAI-style
    uploads at POST /v1/audio/transcriptions, on one port.

    One model and one engine task: each tick advances every stream that has audio in one batched decoder step;
    each stream is cut into utterances at pauses, so a connection can stay open for hours.

    Args:
        model: model directory; default: the bundled model.
        host: address to listen on (default: loopback only; 0.0.0.0 exposes the server to the network).
        port: TCP port (0: any free port, printed at start).
        k: default wait-k in chunks (default: 3 if the model was trained with it, else its training k closest to 3); a client may ask for its own.
        phi: target-group start position (default: the model's training φ).
        mode: group, interleaved or batch (default: the model's training mode).
        chunk_ms: override the model's chunk length in ms.
        device: cpu or cuda (where the model runs).
        encoder_dtype: float32, or bfloat16 for the encoder's matrix products (about twice as fast on CPUs with bfloat16
            instructions, slower on others; the decoder stays in its own dtype).
        max_clients: concurrent streams; one more gets a busy error.
        max_session_s: seconds of audio per connection; at the limit the rest is ignored, what came is decoded.
        idle_timeout_s: the idle rule's window: a connection that sent less than --min-audio-s of audio in the last
            this many seconds is closed with an error saying so (send audio continuously, silence included).
        min_audio_s: least seconds of audio per --idle-timeout-s window (bytes trickled to keep a socket open do not
            hold a stream's slot).
        max_backlog_s: seconds of one connection's audio waiting for the engine; above it the server stops reading
            that connection until the engine catches up (TCP pushes back on the client), so a client sending faster
            than real time neither delays the others nor grows the server's memory.
        max_per_address: open connections from one remote address (0: no limit; behind a reverse proxy every client
            has the proxy's address); one more gets a busy error.
        max_frame_bytes: largest binary frame accepted.
        send_queue: events waiting for one client; a client that reads slower is disconnected.
        min_silence_ms: a pause this long (ms) after speech ends an utterance.
        max_segment_s: an utterance is cut after this many seconds of audio even without a pause.
        vad: which frames are speech for the endpointer: energy (the level against an adaptive noise floor) or
            silero (the Silero VAD network: keeps speech in white noise at 10 dB SNR where energy loses 16 % of the
            words, benchmarks/results/vad).
        tick_ms: least ms between engine ticks (default: the model's chunk length): streams whose audio arrives
            within one tick step together; 0 ticks on every frame (lower latency when idle, much less batching).
        scheduler: batched (one decoder step for all streams) or per-client (one session per client, for comparison).
        policy: read/write policy of every stream: waitk, ctc or confidence (see transcribe --policy); a client's own
            k is its wait-k k, or its adaptive policy's default k_max.
        policy_args: parameters of the policy as NAME=VALUE (see transcribe --policy-args).
        threads: CPU threads for the encoder's call of each tick, which encodes every stream's chunk at once (with
            --device cpu). Above 1, idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless
            set), so that they do not take the CPU from the network side. On 2 cores, 2 were not reliably better
            than 1 (docs/design.md).
        decoder_threads: CPU threads for the decoder's steps, which are small (a few rows each); on 2 cores 1 was best.
        max_upload_mb: largest file POST /v1/audio/transcriptions accepts, in MB (larger: 413).
        max_uploads: uploads decoded at once, each in one of the --max-clients slots, a share per tick beside the live
            streams (one more: 429); 0 turns the endpoint off.
        api_key_file: ask every WebSocket and REST request for one of the keys in this file (one a line) as
            "Authorization: Bearer KEY" (the browser page: ?api_key=KEY); the ASR_STREAM_API_KEY variable adds one.
            Wrong or missing: 401. The page and /healthz, /readyz need no key.
        certfile: serve TLS (https://, wss://) with this certificate chain (PEM); needs --keyfile.
        keyfile: the certificate's private key (PEM).
        drain_s: on SIGTERM (or Ctrl-C) the server stops accepting connections, lets each open stream go on to the
            end of its utterance for at most this many seconds, sends it the words of everything it read, an error
            event saying the server is going away and eof, then exits 0 (a second signal ends the streams at once).
    """
    import asyncio
    import os

    if threads > 1 and "torch" not in sys.modules:  # read once, when the OpenMP runtime loads with torch
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .serving.config import ServerConfig
    from .serving.server import Server
    from .streaming.defaults import stream_config_for

    limits = ServerConfig(max_clients=max_clients, max_session_s=max_session_s, idle_timeout_s=idle_timeout_s,
                          min_audio_s=min_audio_s, max_backlog_s=max_backlog_s, max_per_address=max_per_address,
                          max_frame_bytes=max_frame_bytes, send_queue=send_queue, tick_ms=tick_ms,
                          threads=threads, decoder_threads=decoder_threads, max_upload_mb=max_upload_mb,
                          max_uploads=max_uploads, drain_s=drain_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {port}")
    endpoint = _endpoint(False, min_silence_ms, max_segment_s, vad)
    from .serving.auth import server_keys
    from .serving.tls import server_context

    keys = server_keys(api_key_file)
    tls = server_context(certfile, keyfile)
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ValueError(f"serve needs the {e.name} package: pip install 'asr-stream[serve]'") from None
    from .streaming.policy import parse_policy_args

    args = parse_policy_args(policy_args)
    m = load_model(model, device, chunk_ms, encoder_dtype)
    cfg = stream_config_for(m, mode=mode, k=k, phi=phi, policy=policy, policy_args=args)  # unset: the training values
    server = Server(m, cfg, endpoint, limits, scheduler, model_name=str(model) if model is not None else "default")

    def ready(bound: int) -> None:
        ws, http = ("wss", "https") if tls is not None else ("ws", "http")
        print(f"asr-stream: serving on {ws}://{host}:{bound}/ (page: {http}://{host}:{bound}/, uploads: "
              f"{http}://{host}:{bound}/v1/audio/transcriptions; {len(keys)} API key(s)) mode={cfg.mode} k={cfg.k} "
              f"policy={cfg.policy} phi={cfg.phi:g} chunk_ms={m.chunk_ms} max_clients={max_clients} scheduler={scheduler} "
              f"encoder_dtype={encoder_dtype}", file=sys.stderr, flush=True)

    try:
        asyncio.run(server.serve(host, port, ready, keys=keys, ssl_context=tls))
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def client(files: list[str], url: str = "ws://127.0.0.1:8765/", realtime: bool = False, block_ms: int = 100,
           k: Optional[int] = None, json: Optional[str] = None, api_key_file: Optional[str] = None,
           retries: int = 0) -> None:
    """Transcribe audio files on a running ``asr-stream serve``: words as they arrive, then the final text per file.

    Each file is read from disk block by block as it is sent. A bad file is one error line and the next file goes on;
    the server's warnings (a non-fatal ``error`` event, e.g. the session length limit) are printed on stderr and
    kept in --json's warnings. Exit status 1 when a file failed or the server cut a session short.

    Args:
        files: audio files (any format and rate transcribe reads).
        url: the server's WebSocket address.
        realtime: send the audio at the pace of a microphone (one block every block_ms) instead of at once.
        block_ms: audio per frame sent, in ms.
        k: ask the server for this wait-k (default: the server's).
        json: also write every file's result (events: words with emission times, finals) to this JSON file.
        api_key_file: send the first key of this file (default: the ASR_STREAM_API_KEY variable, if set).
        retries: when the connection is lost mid-file (a replica behind a balancer died), connect again up to this many
            times and send the file again from the end of its last finished utterance (asr_stream.client.stream_resuming).
    """
    import asyncio
    import json as jsonlib

    from .audio.io import AudioError, AudioFile, LevelCheck
    from .client import ServerError, stream_resuming
    from .serving.auth import client_key
    from .transcript import atomic_write, check_outputs, repetition_warning

    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"--url must start with ws:// or wss://, got {url!r}")
    key = client_key(api_key_file)
    if block_ms <= 0 or retries < 0:
        raise ValueError(f"--block-ms must be > 0, got {block_ms}" if block_ms <= 0 else f"--retries must be >= 0, got {retries}")
    check_outputs(files, [json] if json is not None else [])
    results, failed, cut, unsaved = [], [], [], False
    step = max(1, int(round(block_ms * 16)))

    def save() -> None:
        nonlocal unsaved
        if json is not None:
            try:
                atomic_write(json, jsonlib.dumps({"url": url, "files": results, "failed": failed, "cut_short": cut},
                                                 indent=2) + "\n")
                unsaved = False
            except (OSError, ValueError) as e:  # a full disk: said, naming the file; the next files go on
                _say_error(str(e))
                unsaved = True

    for f in files:
        try:
            audio = AudioFile(f)  # what transcribe reads and warns about, the same way
        except AudioError as e:
            _say_error(str(e).splitlines()[0])
            failed.append({"file": str(f), "error": str(e).splitlines()[0]})
            save()
            continue
        check = LevelCheck(audio.rate)
        bad: list[str] = []  # a bad block halfway (NaN samples, a decoding error): what came before is decoded

        def blocks(audio=audio, check=check, bad=bad):
            try:
                for big in audio.blocks():  # ~10 s at a time: memory does not grow with the file
                    check.push(big)
                    for i in range(0, big.shape[0], step):
                        yield big[i : i + step]
            except AudioError as e:
                bad.append(str(e).splitlines()[0])

        print(f"{f}: ", end="", flush=True)
        got: list[dict] = []  # the events received, kept when Ctrl-C or SIGTERM stops the stream

        def show(ev) -> None:
            got.append(ev)
            if ev["type"] == "partial":
                print(" ".join(w["text"] for w in ev["words"]), end=" ", flush=True)

        try:
            res = asyncio.run(stream_resuming(url, blocks(), 16000, k, block_ms if realtime else None, show, key, retries,
                                              lambda e, ms: _say_error(f"{f}: {e}; connecting again, from {ms / 1000:.1f} s")))
        except ServerError as e:
            print()
            _say_error(f"{f}: {e}")
            failed.append({"file": str(f), "error": str(e)})
            save()
            continue
        except KeyboardInterrupt:  # keep what the server sent for this file so far
            words = [w for ev in got if ev["type"] == "partial" for w in ev["words"]]
            results.append({"file": str(f), "text": " ".join(w["text"] for w in words),
                            "finals": [ev for ev in got if ev["type"] == "final"], "words": words, "audio_ms": None,
                            "settings": got[0] if got else None, "warnings": [], "complete": False})
            print()
            save()
            raise
        print()
        print(f"final: {res.text}", flush=True)
        server_said = [f"server: {e['reason']}" for e in res.errors if not e.get("fatal", True)]
        warns = server_said + audio.warnings + check.warnings()
        repeated = repetition_warning([w["text"] for w in res.words])
        warns += [repeated] if repeated else []
        _warn(f, warns)
        eof = res.events[-1]
        results.append({"file": str(f), "text": res.text, "finals": res.finals, "words": res.words,
                        "audio_ms": eof.get("audio_ms"), "settings": res.events[0], "warnings": warns,
                        "complete": audio.complete and not bad and not server_said})
        if bad:
            _say_error(bad[0])
            failed.append({"file": str(f), "error": bad[0]})
        elif server_said:
            cut.append({"file": str(f), "reason": server_said[0][len("server: "):]})
        save()
    save()
    if failed or cut or unsaved:
        print(f"asr-stream: {len(failed)} of {len(files)} file(s) failed"
              + (f", {len(cut)} cut short by the server" if cut else "") + (f"; not written: {json}" if unsaved else ""),
              file=sys.stderr)
        sys.exit(1)


def _remote_mic(url: str, blocks, k: Optional[int], output: Optional[str], key: Optional[str] = None) -> None:
    """``mic --url``: stream the microphone to a server; the first Ctrl-C (or SIGTERM) stops the microphone, sends the
    end message and waits for the server's last words; a second one aborts."""
    import asyncio
    import signal
    import threading

    from .client import ServerError, stream
    from .transcript import LiveOutput

    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"--url must start with ws:// or wss://, got {url!r}")
    stop = threading.Event()
    out = LiveOutput(output, _say_error) if output is not None else None
    words: list[str] = []

    def until_stopped():
        for b in blocks:
            if stop.is_set():
                break
            yield b
        close = getattr(blocks, "close", None)
        if close is not None:
            close()

    def show(ev) -> None:
        if ev["type"] == "partial":
            new = [w["text"] for w in ev["words"]]
            words.extend(new)
            print(" ".join(new), end=" ", flush=True)
            if out is not None:
                out.add(new)
        elif ev["type"] == "error" and not ev.get("fatal", True):  # e.g. the session length limit: said at once
            print(f"\nasr-stream: warning: microphone: server: {ev['reason']}", file=sys.stderr, flush=True)

    def on_signal(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    saved = True
    print(f"listening... decoding on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        asyncio.run(stream(url, until_stopped(), 16000, k, None, show, api_key=key))
    except ServerError as e:
        raise ValueError(str(e)) from None
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
        if out is not None and not out.close(" ".join(words)):
            saved = False
    print()
    print(f"final: {' '.join(words)}", flush=True)
    if not saved:
        sys.exit(1)


def export(ckpt: str, like: str, output: str, weights: Literal["average", "live"] = "average") -> None:
    """Write a model directory from a training checkpoint (an earlier step, or the live weights of an EMA run).

    Args:
        ckpt: a .ckpt file written by asr-stream train (read weights-only: no pickled code runs).
        like: a model directory of the same run (its config and tokenizer are copied), e.g. the run's export_dir.
        output: the model directory to write.
        weights: average: the EMA/SWA average kept in the checkpoint; live: the optimiser's own weights.
    """
    from .training.export import export_checkpoint

    _check_writable(output, "--output")
    print(export_checkpoint(ckpt, like, output, weights))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a person can cause: printed as one line (exit 2) instead of a traceback."""
    from .audio import AudioError
    from .audio.sources import AudioSourceError

    errors: list[type[BaseException]] = [AudioError, AudioSourceError, ValueError, OSError]
    # CheckpointError (a ValueError today) lives with torch: only look it up once the model module is loaded,
    # which it must be for one to have been raised, so `masks` stays light
    model_mod = sys.modules.get(f"{__package__}.model")
    if model_mod is not None:
        errors.append(model_mod.CheckpointError)
    return tuple(errors)


def _arg_help(fn) -> dict[str, str]:
    """'Args:' section of a Google-style docstring -> {name: help}."""
    import inspect
    import re

    doc = inspect.getdoc(fn) or ""
    out, name = {}, None
    for line in doc.split("Args:", 1)[1].splitlines() if "Args:" in doc else []:
        m = re.match(r"^\s{4}(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2)
        elif name and line.strip():
            out[name] += " " + line.strip()
    return {k: v.replace("%", "%%") for k, v in out.items()}  # argparse %-formats help texts ("95 % interval")


def _add_command(sub, fn, name: str, positional: tuple[str, ...] = ()) -> None:
    """A subcommand whose options come from ``fn``'s signature and docstring (one source of truth)."""
    import inspect
    import json as jsonlib
    import typing

    doc = inspect.getdoc(fn) or ""
    p = sub.add_parser(name, help=doc.splitlines()[0].replace("%", "%%") if doc else "",
                       description=doc.split("Args:")[0].strip())
    p.set_defaults(_fn=fn)
    helps = _arg_help(fn)
    hints = typing.get_type_hints(fn)
    for pname, param in inspect.signature(fn).parameters.items():
        hint = hints.get(pname, str)
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Union and type(None) in args:  # Optional[X]
            hint = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        kw: dict = {"help": helps.get(pname, "")}
        if origin is typing.Literal:
            kw.update(choices=list(args), type=type(args[0]))
        elif hint is bool:
            kw.update(action="store_true")
        elif origin is list:
            inner = typing.get_args(hint)[0]
            item = type(typing.get_args(inner)[0]) if typing.get_origin(inner) is typing.Literal else inner
            kw.update(nargs="+" if pname in positional else "*", type=item)
            if typing.get_origin(inner) is typing.Literal:
                kw["choices"] = list(typing.get_args(inner))
        elif origin is dict:
            kw.update(type=jsonlib.loads, metavar="JSON")
        else:
            kw.update(type=hint)
        if pname in positional:
            p.add_argument(pname, **kw)
            continue
        if param.default is inspect.Parameter.empty:
            kw["required"] = True
        else:
            kw["default"] = param.default
            if kw["help"] and hint is not bool and param.default not in (None, [], {}):
                kw["help"] += f" (default: {param.default})".replace("%", "%%")
        flags = [f"--{pname.replace('_', '-')}"] + ([f"--{pname}"] if "_" in pname else [])
        p.add_argument(*flags, dest=pname, **kw)


def build_parser():
    import argparse

    from .evaluation.commands import eval_cmd, sweep_cmd

    parser = argparse.ArgumentParser(prog="asr-stream", description="Streaming speech recognition with a speech LLM "
                                     "(group position encoding, wait-k, one KV cache).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_command(sub, transcribe, "transcribe", positional=("files",))
    _add_command(sub, mic, "mic")
    _add_command(sub, eval_cmd, "eval")
    _add_command(sub, sweep_cmd, "sweep")
    _add_command(sub, serve, "serve")
    _add_command(sub, client, "client", positional=("files",))
    _add_command(sub, masks, "masks")
    _add_command(sub, export, "export", positional=("ckpt",))
    sub.add_parser("train", help="Train with LightningCLI: asr-stream train fit --config conf/tiny_synthetic.yaml",
                   add_help=False)
    return parser


def _announce_training_mismatches() -> None:
    """Print each TrainingMismatchWarning once, as one line on stderr; other warnings as Python prints them."""
    import warnings

    from .config import TrainingMismatchWarning

    python_show, seen = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, TrainingMismatchWarning):
            python_show(message, category, filename, lineno, file, line)
        elif str(message) not in seen:  # once per message, however many sessions (files, utterances) repeat it
            seen.add(str(message))
            print(f"asr-stream: warning: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    warnings.simplefilter("always", TrainingMismatchWarning)  # deduplicated above (Python's "once" is per module)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":  # LightningCLI owns its own parser and reads sys.argv itself
        from .training.cli import main as train_main

        sys.argv = ["asr-stream train", *argv[1:]]
        train_main(None)
        return
    args = vars(build_parser().parse_args(argv))
    _announce_training_mismatches()
    fn = args.pop("_fn")
    command = args.pop("command")
    from contextlib import nullcontext

    from .signals import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt() if command in ("transcribe", "client", "mic") else nullcontext():
            fn(**args)
    except KeyboardInterrupt as e:  # Ctrl-C: 130; SIGTERM (signals.Terminated): 143
        sys.exit(128 + int(getattr(e, "signum", 2)))
    except Exception as e:  # noqa: BLE001 - filtered right below; anything else keeps its traceback
        if not isinstance(e, _user_errors()):
            raise
        print(f"asr-stream: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
