"""``asr-stream mic``: the microphone live, through a local model or a running ``asr-stream serve`` (``--url``)."""

from __future__ import annotations

import sys
from typing import Optional

from .console import check_block_ms, print_words, say_error, warn
from .options import EndpointOptions, StreamOptions


def mic(options: StreamOptions = StreamOptions(), device_index: Optional[int] = None, list_devices: bool = False,
        output: Optional[str] = None, block_ms: int = 100, endpoint: EndpointOptions = EndpointOptions(),
        url: Optional[str] = None, api_key_file: Optional[str] = None, retries: int = 0) -> None:
    """Transcribe the microphone live: words are printed as they come; Ctrl-C stops and prints the transcript.

    Args:
        options: which model, where, and how it streams (:class:`~asr_stream.cli.options.StreamOptions`).
        device_index: input device (see --list-devices); default: the system's default input.
        list_devices: list the input devices and exit.
        output: also write the transcript to this file, word by word as they are emitted (any stop keeps them).
        block_ms: audio per microphone block, in ms.
        endpoint: where the stream is cut into utterances (:class:`~asr_stream.cli.options.EndpointOptions`).
        min_silence_ms: a pause this long (ms) after speech ends an utterance (the session restarts, text goes on).
        url: decode on a running asr-stream serve at this ws:// address instead of loading a model here (the
            server's model, mode, φ, policy and endpoint rules apply; --k and --context are sent as this stream's).
        api_key_file: with --url: send the first key of this file (default: the ASR_STREAM_API_KEY variable, if set).
        retries: with --url: when the connection is lost (a replica behind a balancer died), connect again up to this
            many times and send again the audio from the end of the last finished utterance, kept meanwhile (as
            client --retries; the words of the cut utterance come again).
    """
    from ..audio.io import LevelCheck
    from ..audio.sources import list_input_devices, microphone_blocks
    from ..live import run_live, watch_level
    from ..streaming import StreamingSession
    from ..streaming.segment import SegmentedSession
    from ..transcript import LiveOutput, check_outputs

    if list_devices:
        for d in list_input_devices():
            print(f"{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz)")
        return
    rules = endpoint.config()
    options.policy_params()  # a bad parameter fails before the microphone opens
    context = options.context_phrases()  # so does a bad context
    check_block_ms(block_ms)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"--retries must be a whole number >= 0, got {retries!r}")
    if retries and url is None:
        raise ValueError("--retries connects to a server again: give --url too")
    if output is not None:
        check_outputs([], [output])
    blocks = microphone_blocks(device_index, block_ms=block_ms)  # checks the device before the model loads
    # a muted or quiet microphone is said live, and the level checks are said again at the end
    check = LevelCheck(remedy="raise the microphone's input gain (or speak closer to it)")
    blocks = watch_level(blocks, check, lambda w: warn("microphone", [w]))
    if api_key_file is not None and url is None:
        raise ValueError("--api-key-file is the key of a server: give --url too")
    if url is not None:
        from ..serving.auth import client_key

        key = client_key(api_key_file)
        if options.policy != "waitk" or options.policy_args:
            raise ValueError("--policy and --policy-args choose a local model's policy; with --url the server's applies")
        if options.encoder_dtype != "float32":
            raise ValueError("--encoder-dtype sets a local model's encoder; with --url the server's applies")
        if endpoint.vad != "energy":
            raise ValueError("--vad sets the local endpointer; with --url the server's endpoint rules apply")
        try:
            _remote_mic(url, blocks, options.k, output, key, retries, options.plain, context)
        finally:
            warn("microphone", check.warnings())
        return
    m = options.load()
    stream = SegmentedSession(StreamingSession(m, **options.session_fields()),
                              rules)  # unset: the training values
    out = LiveOutput(output, say_error) if output is not None else None

    def on_words(words) -> None:
        print_words(words)
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
    warn("microphone", check.warnings())
    if not saved:
        sys.exit(1)


def _remote_mic(url: str, blocks, k: Optional[int], output: Optional[str], key: Optional[str] = None,
                retries: int = 0, plain: bool = False, context: tuple[str, ...] = ()) -> None:
    """``mic --url``: stream the microphone to a server; the first Ctrl-C (or SIGTERM) stops the microphone, sends the
    end message and waits for the server's last words; a second one aborts. A lost connection is taken up again
    ``retries`` times (:func:`~asr_stream.serving.client.stream_resuming`): the words since the last final are dropped
    and come again from the new connection; ``--output`` ends with the transcript of the whole stream. ``plain``: the
    server's words are made plain here (:func:`asr_stream.transcript.plain_text`)."""
    import asyncio
    import signal
    import threading

    from ..audio.io import SAMPLE_RATE
    from ..serving.client import ServerError, stream_resuming
    from ..transcript import LiveOutput, plain_text

    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"--url must start with ws:// or wss://, got {url!r}")
    stop = threading.Event()
    out = LiveOutput(output, say_error) if output is not None else None
    words: list[str] = []
    kept = [0]  # words up to the end of the last final: what a lost connection does not take back

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
            new = [t for t in (plain_text(w["text"]) if plain else w["text"] for w in ev["words"]) if t]
            words.extend(new)
            print(" ".join(new), end=" ", flush=True)
            if out is not None:
                out.add(new)
        elif ev["type"] == "final":
            kept[0] = len(words)
        elif ev["type"] == "error" and not ev.get("fatal", True):  # e.g. the session length limit: said at once
            print(f"\nasr-stream: warning: microphone: server: {ev['reason']}", file=sys.stderr, flush=True)

    def on_retry(e, ms: float) -> None:
        del words[kept[0]:]
        print(f"\nasr-stream: error: microphone: {e}; connecting again, from {ms / 1000:.1f} s (the words since are "
              "decoded again)", file=sys.stderr, flush=True)

    def on_signal(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    saved = True
    print(f"listening... decoding on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        asyncio.run(stream_resuming(url, until_stopped(), SAMPLE_RATE, k, None, show, key, retries, on_retry,
                                    context=context or None))
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


