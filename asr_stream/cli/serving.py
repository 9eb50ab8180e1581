"""``asr-stream serve`` (live transcription over WebSocket, a browser page and uploads, on one port) and
``asr-stream client`` (audio files through a running server)."""

from __future__ import annotations

import sys
from typing import Literal, Optional

from .console import check_block_ms, say_error, warn
from .options import EndpointOptions, StreamOptions


def serve(options: StreamOptions = StreamOptions(), host: str = "127.0.0.1", port: int = 8765,
          max_clients: int = 8, max_session_s: float = 3600.0,
          idle_timeout_s: float = 30.0, min_audio_s: float = 1.0, max_backlog_s: float = 5.0, max_per_address: int = 8,
          max_frame_bytes: int = 1 << 20, send_queue: int = 256, endpoint: EndpointOptions = EndpointOptions(),
          tick_ms: Optional[float] = None, scheduler: Literal["batched", "per-client"] = "batched",
          threads: int = 1, decoder_threads: int = 1, max_upload_mb: float = 25.0,
          max_uploads: int = 2, api_key_file: Optional[str] = None, certfile: Optional[str] = None,
          keyfile: Optional[str] = None, drain_s: float = 30.0, start_timeout_s: float = 10.0) -> None:
    """Serve live transcription over WebSocket (docs/protocol.md), a browser page at http://HOST:PORT/ and OpenAI-style
    uploads at POST /v1/audio/transcriptions, on one port.

    One model and one engine task: each tick advances every stream that has audio in one batched decoder step;
    each stream is cut into utterances at pauses, so a connection can stay open for hours.

    Args:
        options: which model, where, and how it streams (:class:`~asr_stream.cli.options.StreamOptions`).
        host: address to listen on (default: loopback only; 0.0.0.0 exposes the server to the network).
        port: TCP port (0: any free port, printed at start).
        k: default wait-k in chunks (default: 3 if the model was trained with it, else its training k closest to 3); a client may ask for its own.
        context: the context list of every connection that sends none in its start message (words and phrases separated
            by commas; a client's own list replaces it). Needs a model trained with context lists.
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
        endpoint: where each stream is cut into utterances (:class:`~asr_stream.cli.options.EndpointOptions`).
        tick_ms: least ms between engine ticks (default: the model's chunk length): streams whose audio arrives
            within one tick step together; 0 ticks on every frame (lower latency when idle, much less batching).
        scheduler: batched (one decoder step for all streams) or per-client (one session per client, for comparison).
        policy: read/write policy of every stream: waitk, ctc or confidence (see transcribe --policy); a client's own
            k is its wait-k k, or its adaptive policy's default k_max.
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
        start_timeout_s: seconds a new connection has to send its request (else 408 and closed; --max-per-address
            such connections per address, one more gets 429 at once), and a WebSocket its start message.
    """
    import asyncio
    import os

    if threads > 1 and "torch" not in sys.modules:  # read once, when the OpenMP runtime loads with torch
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..serving.config import ServerConfig
    from ..serving.server import Server

    limits = ServerConfig(max_clients=max_clients, max_session_s=max_session_s, idle_timeout_s=idle_timeout_s,
                          min_audio_s=min_audio_s, max_backlog_s=max_backlog_s, max_per_address=max_per_address,
                          max_frame_bytes=max_frame_bytes, send_queue=send_queue, tick_ms=tick_ms,
                          threads=threads, decoder_threads=decoder_threads, max_upload_mb=max_upload_mb,
                          max_uploads=max_uploads, drain_s=drain_s, start_timeout_s=start_timeout_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {port}")
    rules = endpoint.config()
    from ..serving.auth import server_keys
    from ..serving.tls import server_context

    keys = server_keys(api_key_file)
    tls = server_context(certfile, keyfile)
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ValueError(f"serve needs the {e.name} package: pip install 'asr-stream[serve]'") from None
    options.policy_params()  # a bad parameter fails before the model loads
    options.context_phrases()  # so does a bad --context (every connection's list unless it sends its own)
    m = options.load()
    cfg = options.config(m)  # unset: the training values
    server = Server(m, cfg, rules, limits, scheduler,
                    model_name=str(options.model) if options.model is not None else "default")

    def ready(bound: int) -> None:
        ws, http = ("wss", "https") if tls is not None else ("ws", "http")
        print(f"asr-stream: serving on {ws}://{host}:{bound}/ (page: {http}://{host}:{bound}/, uploads: "
              f"{http}://{host}:{bound}/v1/audio/transcriptions; {len(keys)} API key(s)) mode={cfg.mode} k={cfg.k} "
              f"policy={cfg.policy} phi={cfg.phi:g} chunk_ms={m.chunk_ms} max_clients={max_clients} scheduler={scheduler} "
              f"encoder_dtype={options.encoder_dtype}", file=sys.stderr, flush=True)

    try:
        asyncio.run(server.serve(host, port, ready, keys=keys, ssl_context=tls))
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def client(files: list[str], url: str = "ws://127.0.0.1:8765/", realtime: bool = False, block_ms: int = 100,
           k: Optional[int] = None, json: Optional[str] = None, api_key_file: Optional[str] = None,
           retries: int = 0, plain: bool = False, context: Optional[str] = None,
           context_file: Optional[str] = None) -> None:
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
        json: also write every file's result to this JSON file, rewritten after each file: the fields transcribe
            --json has (segments, words with emission times, text, audio seconds, warnings, complete;
            docs/protocol.md, "Result files") and the server's settings.
        api_key_file: send the first key of this file (default: the ASR_STREAM_API_KEY variable, if set).
        retries: when the connection is lost mid-file (a replica behind a balancer died), connect again up to this many
            times and send the file again from the end of its last finished utterance (asr_stream.serving.client.stream_resuming).
        plain: show and write the server's words as upper-case text without punctuation (a server whose model writes
            case and punctuation; a plain server's words are unchanged).
        context: ask the server to use this context list (words and phrases separated by commas; the server's model
            must have been trained with context lists).
        context_file: the context list from a UTF-8 file (phrases one a line or separated by commas), after --context's.
    """
    import asyncio
    import json as jsonlib

    from ..audio.io import SAMPLE_RATE, SAMPLES_PER_MS, AudioError, AudioFile, LevelCheck
    from ..serving.client import Result, ServerError, stream_resuming
    from ..serving.auth import client_key
    from ..transcript import atomic_write, check_outputs, plain_event, repetition_warning

    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"--url must start with ws:// or wss://, got {url!r}")
    key = client_key(api_key_file)
    check_block_ms(block_ms)
    if retries < 0:
        raise ValueError(f"--retries must be >= 0, got {retries}")
    from ..context import context_from_options

    phrases = context_from_options(context, context_file)
    check_outputs(files, [json] if json is not None else [])
    results, failed, cut, unsaved = [], [], [], False
    settings = {"url": url, "k": k, "block_ms": block_ms, "realtime": realtime, "retries": retries}  # each file's
    # server settings: its "settings" (the ready event)
    step = max(1, int(round(block_ms * SAMPLES_PER_MS)))

    def save() -> None:
        nonlocal unsaved
        if json is not None:
            try:
                atomic_write(json, jsonlib.dumps({"settings": settings, "files": results, "failed": failed,
                                                  "cut_short": cut, "url": url}, indent=2) + "\n")
                unsaved = False
            except (OSError, ValueError) as e:  # a full disk: said, naming the file; the next files go on
                say_error(str(e))
                unsaved = True

    for f in files:
        try:
            audio = AudioFile(f)  # what transcribe reads and warns about, the same way
        except AudioError as e:
            say_error(str(e).splitlines()[0])
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
            ev = plain_event(ev) if plain else ev
            got.append(ev)
            if ev["type"] == "partial":
                print(" ".join(w["text"] for w in ev["words"]), end=" ", flush=True)

        try:
            res = asyncio.run(stream_resuming(url, blocks(), SAMPLE_RATE, k, block_ms if realtime else None, show, key,
                                              retries, lambda e, ms: say_error(f"{f}: {e}; connecting again, from {ms / 1000:.1f} s"),
                                              phrases or None))
        except ServerError as e:
            print()
            say_error(f"{f}: {e}")
            failed.append({"file": str(f), "error": str(e)})
            save()
            continue
        except KeyboardInterrupt:  # keep what the server sent for this file so far
            results.append(_result(f, Result(events=got), None, [], False))
            print()
            save()
            raise
        if plain:
            res.events[:] = [plain_event(e) for e in res.events]
        print()
        print(f"final: {res.text}", flush=True)
        server_said = [f"server: {e['reason']}" for e in res.errors if not e.get("fatal", True)]
        warns = server_said + audio.warnings + check.warnings()
        repeated = repetition_warning([w["text"] for w in res.words])
        warns += [repeated] if repeated else []
        warn(f, warns)
        eof = res.events[-1]
        results.append(_result(f, res, eof.get("audio_ms"), warns, audio.complete and not bad and not server_said))
        if bad:
            say_error(bad[0])
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


def _result(f, res, audio_ms: Optional[float], warns: list[str], complete: bool) -> dict:
    """One file's entry of ``client --json``: the fields ``transcribe --json`` has (asr_stream.transcript.RESULT_FIELDS),
    then the server's settings (its ready event) and, for readers of the older entries, ``finals`` and ``audio_ms``."""
    return {"file": str(f), "text": res.text, "segments": res.segments, "words": res.words,
            "audio_s": None if audio_ms is None else audio_ms / 1000.0, "warnings": warns, "complete": complete,
            "settings": res.events[0] if res.events else None, "finals": res.finals, "audio_ms": audio_ms}
