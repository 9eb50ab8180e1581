"""A client of ``asr-stream serve`` (docs/protocol.md): send audio, receive events (was ``asr_stream.client``).

Used by ``asr-stream client`` and ``asr-stream mic --url``, and by the tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np


class ServerError(ValueError):
    """The server sent a fatal ``error`` event (its one-line reason is the message) or went away."""


class ConnectFailed(ServerError):
    """No stream could be opened: refused, timed out, or an HTTP status instead of the WebSocket handshake.
    ``transient``: worth trying again soon (no answer, or a 5xx from a balancer whose replica just died)."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class ConnectionLost(ServerError):
    """The connection closed mid-stream without a fatal ``error`` event (the server process died, or a balancer cut
    it): :func:`stream_resuming` may connect again."""


@dataclass
class Result:
    """What one stream got back."""

    events: list[dict] = field(default_factory=list)  # every event, in order
    arrival: list[float] = field(default_factory=list)  # wall time (time.monotonic) each event arrived
    sent_at: list[tuple[int, float]] = field(default_factory=list)  # (16 kHz samples sent up to here, wall time)

    @property
    def words(self) -> list[dict]:
        return [w for e in self.events if e["type"] == "partial" for w in e["words"]]

    @property
    def finals(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "final"]

    @property
    def segments(self) -> list[dict]:
        """The finals as ``transcribe --json`` lists its segments (asr_stream.transcript.SEGMENT_FIELDS)."""
        return [{"index": e["index"], "start_ms": e["start_ms"], "end_ms": e["end_ms"], "rule": e["rule"],
                 "text": e["text"], "words": [{"text": w["text"], "time_ms": w["time_ms"]} for w in e["words"]]}
                for e in self.finals]

    @property
    def text(self) -> str:
        return " ".join(w["text"] for w in self.words)

    @property
    def errors(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "error"]

    def lags_ms(self) -> list[float]:
        """Per word: the wall time it arrived minus the wall time the audio it needed had been sent (ms)."""
        out, j = [], 0
        for e, t in zip(self.events, self.arrival):
            if e["type"] != "partial":
                continue
            for w in e["words"]:
                need = int(w["time_ms"] * 16)
                while j + 1 < len(self.sent_at) and self.sent_at[j][0] < need:
                    j += 1
                out.append((t - self.sent_at[j][1]) * 1000.0)
        return out


async def stream(url: str, blocks: Iterable[np.ndarray], sample_rate: int = 16000, k: Optional[int] = None,
                 block_ms: Optional[float] = None, on_event: Optional[Callable[[dict], None]] = None,
                 open_timeout: float = 10.0, api_key: Optional[str] = None,
                 context: Optional[Sequence[str]] = None) -> Result:
    """Stream float32 ``blocks`` (mono, ``sample_rate`` Hz) to the server at ``url``; return every event.

    ``block_ms``: pace the blocks in real time, one every ``block_ms`` ms on an absolute schedule (None: as fast
    as the socket takes them). ``blocks`` may be a blocking iterator (a microphone): it is read in a thread.
    ``api_key``: sent as ``Authorization: Bearer`` (a server with keys answers 401 without it). A ``wss://`` server's
    certificate is checked against the system's CAs (``SSL_CERT_FILE`` names another bundle, e.g. a private CA).
    Raises ServerError on a fatal ``error`` event or when the connection closes before ``eof``.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    res = Result()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:  # PCM: deflate costs, saves little
        ws = await connect(url, open_timeout=open_timeout, max_size=None, compression=None, additional_headers=headers)
    except InvalidStatus as e:
        code = e.response.status_code
        why = " (a missing or wrong API key: ASR_STREAM_API_KEY or --api-key-file)" if code == 401 else ""
        raise ConnectFailed(f"cannot connect to {url}: HTTP {code}{why}", code >= 500) from None
    except (OSError, asyncio.TimeoutError) as e:
        raise ConnectFailed(f"cannot connect to {url}: {e}", True) from None
    except Exception as e:  # noqa: BLE001 - e.g. an HTTP error instead of a WebSocket handshake
        raise ConnectFailed(f"cannot connect to {url}: {str(e).splitlines()[0]}", False) from None
    async with ws:
        start = {"type": "start", "sample_rate": int(sample_rate), "format": "float32"}
        if k is not None:
            start["k"] = int(k)
        if context is not None:  # the stream's context list (docs/protocol.md)
            start["context"] = list(context)
        try:
            await ws.send(json.dumps(start))
            ready = json.loads(await ws.recv())
        except ConnectionClosed as e:  # refused at once (e.g. --max-per-address): the close says why
            why = e.rcvd.reason if e.rcvd is not None and e.rcvd.reason else "the server closed the connection"
            raise ServerError(why) from None
        res.events.append(ready)
        res.arrival.append(time.monotonic())
        if on_event is not None:
            on_event(ready)
        if ready["type"] == "error":
            raise ServerError(ready["reason"])

        async def send() -> None:
            it = iter(blocks)
            sent, t0, i = 0, time.monotonic(), 0
            loop = asyncio.get_running_loop()
            while True:
                x = await loop.run_in_executor(None, next, it, None)
                if x is None:
                    break
                if block_ms is not None:
                    wait = t0 + i * block_ms / 1000.0 - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                x = np.ascontiguousarray(x, dtype="<f4").reshape(-1)
                await ws.send(x.tobytes())
                sent += x.shape[0]
                res.sent_at.append((round(sent * 16000 / sample_rate), time.monotonic()))
                i += 1
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        try:
            while True:
                try:
                    msg = await ws.recv()
                except ConnectionClosed:
                    raise ConnectionLost("the server closed the connection before eof") from None
                ev = json.loads(msg)
                res.events.append(ev)
                res.arrival.append(time.monotonic())
                if on_event is not None:
                    on_event(ev)
                if ev["type"] == "error" and ev.get("fatal", True):
                    raise ServerError(ev["reason"])
                if ev["type"] == "eof":
                    break
        finally:
            if not sender.done():
                sender.cancel()
            elif not sender.cancelled() and sender.exception() is not None and not res.errors:
                if isinstance(sender.exception(), ConnectionClosed):  # the connection died under the sender first
                    raise ConnectionLost("the server closed the connection before eof") from None
                raise ServerError(f"sending audio failed: {sender.exception()}")
    return res


class _Tape:
    """The blocks of a stream, read once, with those from ``keep_from`` (a sample count) on kept to be sent again.

    Each :meth:`replay` reads by position under a lock: a connection given up may still have a read under way in a
    thread (a blocking source); what it read is kept and the next connection sends it."""

    def __init__(self, blocks: Iterable[np.ndarray]):
        self.it, self.kept, self.read, self.keep_from = iter(blocks), [], 0, 0
        self.lock = threading.Lock()

    def forget_before(self, sample: int) -> None:
        with self.lock:
            self.keep_from = max(self.keep_from, sample)
            while self.kept and self.kept[0][0] + self.kept[0][1].shape[0] <= self.keep_from:
                self.kept.pop(0)

    def _next(self, pos: int) -> Optional[np.ndarray]:
        with self.lock:
            for start, x in self.kept:
                if start <= pos < start + x.shape[0]:
                    return x[pos - start :]
            while self.read <= pos:  # pos is the end of what was read: read on
                x = next(self.it, None)
                if x is None:
                    return None
                x = np.asarray(x).reshape(-1)
                self.kept.append((self.read, x))
                self.read += x.shape[0]
                if self.read > pos:
                    return x[x.shape[0] - (self.read - pos) :]
            return None

    def replay(self):
        """The stream from ``keep_from`` on: the kept blocks, then the rest (kept as it is read)."""
        pos = self.keep_from
        while True:
            x = self._next(pos)
            if x is None:
                return
            pos += x.shape[0]
            yield x


def _shifted(ev: dict, ms: float, words: int, finals: int) -> dict:
    """An event of a resumed connection as one continuous stream has it: times + ``ms``, word and utterance indices
    + the counts before the connection."""
    ev = dict(ev)
    if "words" in ev:
        ev["words"] = [{**w, "time_ms": w["time_ms"] + ms, "index": w["index"] + words} if "index" in w else
                       {**w, "time_ms": w["time_ms"] + ms} for w in ev["words"]]
    for key in ("start_ms", "end_ms", "audio_ms"):
        if key in ev:
            ev[key] = ev[key] + ms
    if ev["type"] == "final":
        ev["index"] = ev["index"] + finals
    if ev["type"] == "eof" and "segments" in ev:
        ev["segments"] = ev["segments"] + finals
    return ev


RECONNECT_PAUSE_S = 0.5  # s between connection attempts after a lost connection
RECONNECT_PATIENCE_S = 10.0  # s of refused or 5xx connection attempts after a lost connection before giving up


async def stream_resuming(url: str, blocks: Iterable[np.ndarray], sample_rate: int = 16000, k: Optional[int] = None,
                          block_ms: Optional[float] = None, on_event: Optional[Callable[[dict], None]] = None,
                          api_key: Optional[str] = None, retries: int = 0,
                          on_retry: Optional[Callable[[ConnectionLost, float], None]] = None,
                          context: Optional[Sequence[str]] = None) -> Result:
    """:func:`stream`, and when the connection is lost mid-stream (:class:`ConnectionLost`: a replica behind a balancer
    died), up to ``retries`` times: connect to ``url`` again (the balancer picks a live replica) and send again the
    audio from the end of the last ``final`` on. The rule: every utterance finished before the loss is kept as it
    was; the one cut off is decoded again in full on the new connection; events of the new connection carry the times
    and indices of one continuous stream. Words of the cut utterance already passed to ``on_event`` are not in the
    result (the new connection sends that utterance's words again). The audio since the last final is kept in memory
    for this (the server's --max-segment-s bounds it). ``on_retry(error, resume_ms)`` is called before each new
    connection. A new connection that is refused, times out or gets a 5xx is tried again every RECONNECT_PAUSE_S for
    RECONNECT_PATIENCE_S (not counted in ``retries``). ``sent_at`` holds the last connection's sends (as samples of the whole stream)."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"--retries must be a whole number >= 0, got {retries!r}")
    tape, out = _Tape(blocks), Result()
    ms = 0.0  # audio (ms) before this connection's first sample: the end of the last final
    tries, patience = 0, 0.0  # patience: until when (monotonic) a transient connect failure is tried again
    while True:
        words, finals = len(out.words), len(out.finals)
        kept = len(out.events)  # events up to the last final of the previous connections

        def hook(ev: dict, ms=ms, words=words, finals=finals) -> None:
            if ev["type"] == "ready" and out.events:
                return  # a resumed connection: the stream has its ready
            ev = _shifted(ev, ms, words, finals)
            out.events.append(ev)
            out.arrival.append(time.monotonic())
            if ev["type"] == "final":
                tape.forget_before(int(round(ev["end_ms"] * sample_rate / 1000.0)))
            if on_event is not None:
                on_event(ev)

        try:
            res = await stream(url, tape.replay(), sample_rate, k, block_ms, hook, api_key=api_key, context=context)
            out.sent_at = [(n + round(ms * 16), t) for n, t in res.sent_at]
            return out
        except ConnectFailed as e:  # connecting again: the balancer may not know yet that a replica died
            if not (tries and e.transient and time.monotonic() < patience):
                raise
            await asyncio.sleep(RECONNECT_PAUSE_S)
        except ConnectionLost as e:
            if tries >= retries:
                raise
            tries += 1
            last = max((i for i, ev in enumerate(out.events) if ev["type"] == "final"), default=None)
            cut = max(kept, last + 1 if last is not None else 1)
            del out.events[cut:], out.arrival[cut:]
            ms = out.finals[-1]["end_ms"] if out.finals else 0.0
            tape.forget_before(int(round(ms * sample_rate / 1000.0)))
            patience = time.monotonic() + RECONNECT_PATIENCE_S
            if on_retry is not None:
                on_retry(e, ms)


def blocks_of(samples: np.ndarray, block_ms: float) -> list[np.ndarray]:
    step = max(1, int(round(block_ms * 16)))
    return [samples[i : i + step] for i in range(0, samples.shape[0], step)]


__all__ = ["ConnectFailed", "ConnectionLost", "Result", "ServerError", "blocks_of", "stream", "stream_resuming"]
