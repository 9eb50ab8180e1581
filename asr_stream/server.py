"""``asr-stream serve``: many live clients over WebSocket, one model, one batched decoder.

Architecture (see docs/protocol.md for the wire protocol):

- The network side is the ``websockets`` asyncio server: one coroutine per connection parses the start
  message, checks and converts each binary PCM frame (int16 / float32, any rate -> 16 kHz float32 with one
  soxr stream per connection) and appends it to that connection's inbox. It never runs the model.
- ONE engine task runs the model. Each tick it takes every connection's inbox (audio, end, new and gone
  connections), hands it to :class:`~asr_stream.streaming.segment.SegmentedStreams` (each stream with its own
  endpointer: the project's one segmentation mechanism) and runs ONE ``drain()``: batched decoder steps over
  every stream that has work. The tick runs in a worker thread so the event loop keeps receiving audio.
- Events go to a bounded send queue per connection, drained by that connection's own sender coroutine: the
  engine never awaits a client's socket, so a slow reader stalls nobody (its queue overflows and it is
  disconnected with an error).

``scheduler="per-client"`` swaps the batched engine for one :class:`SegmentedSession` per connection, run one
after the other in the same engine task (the WhisperLive way: a model call per client); the benchmark
compares the two.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Literal, Optional

import numpy as np
import torch

from .audio.io import MAX_INPUT_RATE, MIN_INPUT_RATE, SAMPLE_RATE


@dataclass(frozen=True)
class ServerConfig:
    """Limits of one server. Times in seconds, sizes in bytes."""

    max_clients: int = 8
    """Concurrent streams (engine slots); one more gets a ``busy`` error at once."""
    max_session_s: float = 3600.0
    """Audio per connection, in seconds; at the limit the server stops reading, finishes decoding and closes."""
    idle_timeout_s: float = 30.0
    """A connection that sends nothing for this long gets an error and is closed."""
    max_frame_bytes: int = 1 << 20
    """Largest binary frame accepted (1 MiB = 16 s of 16 kHz int16); larger: error, closed."""
    send_queue: int = 256
    """Events waiting for one client's socket; a client that lets more pile up (a slow reader) is disconnected."""
    start_timeout_s: float = 10.0
    """Time a new connection has to send its start message."""
    tick_ms: Optional[float] = None
    """Least time between the starts of two engine ticks (None: the model's chunk length). Audio that arrives
    meanwhile waits, so streams whose chunks complete at different moments step together: one batched step for
    all of them, and cache columns shared instead of one stream's slots padded into every other row. The price is
    up to one tick of added latency when the server is idle. 0: tick as soon as anything arrives."""
    threads: int = 1
    """CPU threads for the encoder's call of a tick (every stream's next chunk at once)."""
    decoder_threads: int = 1
    """CPU threads for the decoder's steps (set in the engine thread at every tick: OpenMP counts are per thread)."""

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise ValueError(f"--max-clients must be >= 1, got {self.max_clients}")
        for name in ("max_session_s", "idle_timeout_s", "start_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if self.tick_ms is not None and not (math.isfinite(self.tick_ms) and 0 <= self.tick_ms <= 10_000):
            raise ValueError(f"tick_ms must be from 0 to 10000, got {self.tick_ms!r}")
        for name in ("threads", "decoder_threads"):
            v = getattr(self, name)
            if not (isinstance(v, int) and 1 <= v <= 1024):
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
        if self.max_frame_bytes < 1024 or self.send_queue < 1:
            raise ValueError("max_frame_bytes must be >= 1024 and send_queue >= 1")


class ProtocolError(ValueError):
    """A client broke the protocol: sent as an ``error`` event (one line), then the connection closes."""


FORMATS = {"int16": (np.dtype("<i2"), 32768.0), "float32": (np.dtype("<f4"), 1.0)}


def parse_start(text: str | bytes, max_k: int = 64) -> dict:
    """The client's start message -> {"sample_rate": int, "format": str, "k": int | None}; ProtocolError if bad."""
    if isinstance(text, bytes):
        if text[:4] == b"RIFF":
            raise ProtocolError("got a WAV header (RIFF) before the start message: send a JSON start message, then raw PCM without the header")
        raise ProtocolError("expected a JSON start message first, got a binary frame")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"malformed JSON in start message: {e.msg} at char {e.pos}") from None
    if not isinstance(msg, dict) or msg.get("type", "start") != "start":
        raise ProtocolError('the first message must be a JSON object {"type": "start", "sample_rate": ..., "format": ...}')
    rate, fmt, k = msg.get("sample_rate"), msg.get("format", "int16"), msg.get("k")
    if isinstance(rate, bool) or not isinstance(rate, int) or not (MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE):
        raise ProtocolError(f"sample_rate must be an integer from {MIN_INPUT_RATE} to {MAX_INPUT_RATE} Hz, got {rate!r}")
    if fmt not in FORMATS:
        raise ProtocolError(f"format must be 'int16' or 'float32', got {fmt!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k):
        raise ProtocolError(f"k must be an integer from 1 to {max_k}, got {k!r}")
    unknown = set(msg) - {"type", "sample_rate", "format", "k"}
    if unknown:
        raise ProtocolError(f"unknown field(s) in start message: {', '.join(sorted(unknown))}")
    return {"sample_rate": rate, "format": fmt, "k": k}


def decode_frame(data: bytes, fmt: str) -> np.ndarray:
    """One binary frame -> float32 samples at the client's rate; ProtocolError for WAV headers and wrong formats."""
    if data[:4] == b"RIFF":
        raise ProtocolError("got a WAV header (RIFF) as PCM: send raw samples without the file header")
    dtype, scale = FORMATS[fmt]
    if len(data) % dtype.itemsize:
        raise ProtocolError(f"frame of {len(data)} bytes is not a whole number of {fmt} samples")
    x = np.frombuffer(data, dtype=dtype).astype(np.float32)
    if fmt == "float32":
        # int16 PCM read as float32 gives NaN/inf or huge values: say so instead of transcribing noise
        if not np.isfinite(x).all() or (x.size and float(np.abs(x).max()) > 8.0):
            raise ProtocolError("float32 frame has samples outside [-1, 1] or NaN/inf: is the audio int16? (set format)")
        return x
    return x / scale


# ----------------------------------------------------------------------------------------------- engines


class PerClientStreams:
    """One :class:`SegmentedSession` per slot, with the :class:`SegmentedStreams` API the server uses (the baseline:
    every stream runs its own decoder calls, one stream after the other)."""

    def __init__(self, model, n: int, cfg, endpoint, on_segment: Optional[Callable] = None) -> None:
        self.model, self.n, self.cfg, self.endpoint, self.on_segment = model, n, cfg, endpoint, on_segment
        self.sessions: list = [None] * n
        self.inbox: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.ending = [False] * n
        self.new: list[list] = [[] for _ in range(n)]

    def reset(self, i: int, k: Optional[int] = None) -> None:
        from .streaming import StreamingSession
        from .streaming.defaults import with_k
        from .streaming.segment import SegmentedSession

        cb = (lambda seg, i=i: self.on_segment(i, seg)) if self.on_segment else None
        cfg = with_k(self.cfg, k) if k is not None else self.cfg
        self.sessions[i] = SegmentedSession(StreamingSession(self.model, cfg), self.endpoint, cb)
        self.inbox[i], self.ending[i], self.new[i] = [], False, []

    def release(self, i: int) -> None:
        self.sessions[i] = None
        self.inbox[i], self.ending[i], self.new[i] = [], False, []

    def feed(self, i: int, samples: np.ndarray) -> None:
        self.inbox[i].append(samples)

    def end(self, i: int) -> None:
        self.ending[i] = True

    def drain(self) -> None:
        for i, s in enumerate(self.sessions):
            if s is None or s.finished:
                continue
            if self.inbox[i]:
                x = np.concatenate(self.inbox[i])
                self.inbox[i] = []
                self.new[i] += s.push(x)
            if self.ending[i]:
                self.new[i] += s.finish()

    def poll(self, i: int) -> list:
        new, self.new[i] = self.new[i], []
        return new

    def segments(self, i: int) -> list:
        return self.sessions[i].segments

    def done(self, i: int) -> bool:
        return self.sessions[i] is not None and self.sessions[i].finished


# ----------------------------------------------------------------------------------------------- connections


@dataclass
class _Conn:
    """One connection's state shared by its handler (event loop) and the engine task (takes the inbox per tick)."""

    id: int
    slot: int
    k: Optional[int]
    inbox: list = field(default_factory=list)  # 16 kHz float32 arrays not yet given to the engine
    arrivals: list = field(default_factory=list)  # (16 kHz samples received up to the end of a frame, wall time)
    samples_in: int = 0  # 16 kHz samples received
    ended: bool = False  # no more audio (client's end message or the session limit)
    end_sent: bool = False  # the engine has been told
    started: bool = False  # the engine slot has been reset for this connection
    gone: bool = False  # the socket is closed: release the slot
    finished: bool = False  # eof queued
    words_out: int = 0  # words sent (the next word's index)
    queue: Optional[asyncio.Queue] = None  # events for the client (bounded)
    overflow: bool = False  # disconnected by the server (slow reader, internal error)
    ws: object = None  # the websocket
    sender: Optional[asyncio.Task] = None  # the task that writes to it

    def lag_ms(self, time_ms: float, now: float) -> float:
        """Wall ms between the arrival of the audio up to ``time_ms`` and ``now`` (0 if not arrived: the zero tail)."""
        need = int(time_ms * 16)
        for n, t in self.arrivals:
            if n >= need:
                return max(0.0, (now - t) * 1000.0)
        return max(0.0, (now - self.arrivals[-1][1]) * 1000.0) if self.arrivals else 0.0

    def prune(self, time_ms: float) -> None:
        """Forget arrival times before ``time_ms`` (words come in time order): memory stays bounded."""
        need = int(time_ms * 16)
        j = 0
        while j + 1 < len(self.arrivals) and self.arrivals[j][0] < need:
            j += 1
        del self.arrivals[:j]


def _word(w, index: int) -> dict:
    return {"text": w.text, "time_ms": round(w.time_ms, 1), "index": index}


class Server:
    """The model, the engine and the connections. :meth:`handler` is the ``websockets`` connection handler."""

    def __init__(self, model, cfg, endpoint, limits: ServerConfig = ServerConfig(),
                 scheduler: Literal["batched", "per-client"] = "batched", model_name: str = "default") -> None:
        from .streaming.segment import SegmentedStreams

        self.model, self.cfg, self.endpoint, self.limits, self.model_name = model, cfg, endpoint, limits, model_name
        self.scheduler = scheduler
        model.encoder.threads = limits.threads
        self._finals: dict[int, list] = {}  # slot -> segments closed during the current tick
        if scheduler == "batched":
            self.streams = SegmentedStreams(model, limits.max_clients, cfg, endpoint, on_segment=self._on_segment)
            for i in range(limits.max_clients):
                self.streams.release(i)  # free slots cost nothing
        elif scheduler == "per-client":
            self.streams = PerClientStreams(model, limits.max_clients, cfg, endpoint, on_segment=self._on_segment)
        else:
            raise ValueError(f"scheduler must be 'batched' or 'per-client', got {scheduler!r}")
        self.free = list(range(limits.max_clients))
        self.conns: dict[int, _Conn] = {}  # slot -> connection
        self._releases: list[int] = []  # slots of connections gone since the last tick
        self._next_id = 0
        self._work: Optional[asyncio.Event] = None
        self.ticks = 0
        self.sessions_served = 0

    # -- the engine ---------------------------------------------------------------------------------------
    def _on_segment(self, i: int, seg) -> None:
        self._finals.setdefault(i, []).append(seg)

    def _tick(self, releases: list[int], jobs: list[tuple[_Conn, list, bool, bool]]) -> dict[int, list[dict]]:
        """Engine thread: release the slots of connections that are gone (before a new connection's reset of the same
        slot), apply every connection's inbox, one drain, collect events per connection id."""
        torch.set_num_threads(self.limits.decoder_threads)  # this thread's own count; the encoder sets its own
        for slot in releases:
            self.streams.release(slot)
        for c, audio, start, end in jobs:
            if start:
                self.streams.reset(c.slot, c.k)
            for x in audio:
                self.streams.feed(c.slot, x)
            if end:
                self.streams.end(c.slot)
        self._finals = {}
        self.streams.drain()
        self.ticks += 1
        now = time.monotonic()
        out: dict[int, list[dict]] = {}
        for c, *_ in jobs:
            if c.gone or c.finished:
                continue
            events, i = [], c.slot
            words = self.streams.poll(i)
            segs = self.streams.segments(i)
            for seg in self._finals.get(i, []):  # each final right after the partial with its segment's last words
                n0 = sum(len(s.words) for s in segs[: seg.index])  # its first word's index
                take = max(0, n0 + len(seg.words) - c.words_out)
                events += self._partial(c, words[:take], now)
                words = words[take:]
                events.append({"type": "final", "index": seg.index, "text": seg.text, "start_ms": seg.start_ms,
                               "end_ms": seg.end_ms, "rule": seg.rule,
                               "words": [_word(w, n0 + j) for j, w in enumerate(seg.words)],
                               "lag_ms": round(c.lag_ms(seg.end_ms, now))})
            events += self._partial(c, words, now)
            if c.end_sent and self.streams.done(i):
                c.finished = True
                segs = self.streams.segments(i)
                events.append({"type": "eof", "text": " ".join(s.text for s in segs if s.text), "segments": len(segs),
                               "audio_ms": round(c.samples_in / 16.0, 1), "lag_ms": round(c.lag_ms(c.samples_in / 16.0, now))})
            if events:
                out[c.id] = events
        return out

    @staticmethod
    def _partial(c: _Conn, words: list, now: float) -> list[dict]:
        if not words:
            return []
        first = c.words_out
        c.words_out += len(words)
        lag = max(c.lag_ms(w.time_ms, now) for w in words)
        c.prune(words[-1].time_ms)
        return [{"type": "partial", "words": [_word(w, first + j) for j, w in enumerate(words)], "lag_ms": round(lag)}]

    async def engine(self) -> None:
        """The one engine task: wait for work, take every inbox, run one tick in a worker thread, queue events."""
        assert self._work is not None
        tick_s = (self.limits.tick_ms if self.limits.tick_ms is not None else self.model.chunk_ms) / 1000.0
        last = -math.inf
        while True:
            await self._work.wait()
            wait = last + tick_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # gather: everything that arrives meanwhile joins this tick
            self._work.clear()
            last = time.monotonic()
            releases, self._releases = self._releases, []
            jobs = []
            for c in list(self.conns.values()):
                audio, c.inbox = c.inbox, []
                start = not c.started
                c.started = True
                end = c.ended and not c.end_sent
                c.end_sent = c.end_sent or end
                if audio or start or end or (c.end_sent and not c.finished):
                    jobs.append((c, audio, start, end))
            if not jobs and not releases:
                continue
            try:
                out = await asyncio.to_thread(self._tick, releases, jobs)
            except Exception as e:  # noqa: BLE001 - a bug must not hang every client: tell them, keep serving
                import traceback

                traceback.print_exc()
                for c, *_ in jobs:
                    self._kick(c, f"internal error: {type(e).__name__}: {e}")
                continue
            for c, *_ in jobs:
                for ev in out.get(c.id, []):
                    self._send(c, ev)
            if any(c.end_sent and not c.finished and not c.gone for c in self.conns.values()):
                self._work.set()  # a closing segment is still being finished: keep ticking

    def _send(self, c: _Conn, ev: dict) -> None:
        """Queue an event without waiting; a full queue (slow reader) marks the connection for closing."""
        if c.gone or c.overflow:
            return
        try:
            c.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self._kick(c, f"slow reader: more than {self.limits.send_queue} events waiting to be sent")

    def _drop(self, c: _Conn) -> None:
        """``c`` is over (eof sent, error, vanished): its slot is free for the next connection at once; the engine
        releases it at its next tick, always before a new connection's reset of that slot (see ``_tick``)."""
        if c.gone:
            return
        c.gone = True
        if self.conns.get(c.slot) is c:
            del self.conns[c.slot]
            self.free.append(c.slot)
            self._releases.append(c.slot)
        self._work.set()

    def _kick(self, c: _Conn, reason: str) -> None:
        """Disconnect ``c`` without waiting for it: an error event if its socket takes it within 2 s, then abort."""
        if c.overflow:
            return
        c.overflow = True
        self._drop(c)

        async def kick() -> None:
            if c.sender is not None:
                c.sender.cancel()
            try:
                await asyncio.wait_for(_error(c.ws, reason), 2.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
            c.ws.transport.abort()

        asyncio.get_running_loop().create_task(kick())

    # -- connections --------------------------------------------------------------------------------------
    async def handler(self, ws) -> None:
        """One client: start message, then PCM frames and an end message; events go out through a sender task."""
        lim = self.limits
        try:
            first = await asyncio.wait_for(ws.recv(), lim.start_timeout_s)
        except asyncio.TimeoutError:
            await _error(ws, f"no start message within {lim.start_timeout_s:g} s")
            return
        except Exception:  # noqa: BLE001 - the client left before starting
            return
        try:
            start = parse_start(first)
        except ProtocolError as e:
            await _error(ws, str(e))
            return
        if not self.free:
            await _error(ws, f"busy: all {lim.max_clients} streams are in use, try again later", code=1013)
            return
        slot = self.free.pop(0)
        c = _Conn(id=self._next_id, slot=slot, k=start["k"], queue=asyncio.Queue(lim.send_queue), ws=ws)
        self._next_id += 1
        self.conns[slot] = c
        self.sessions_served += 1
        resampler = None
        if start["sample_rate"] != SAMPLE_RATE:
            import soxr  # a librosa dependency; one stream per connection keeps frame edges seamless

            resampler = soxr.ResampleStream(start["sample_rate"], SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        sender = c.sender = asyncio.create_task(self._sender(ws, c))  # waits for the first event
        limit = int(lim.max_session_s * SAMPLE_RATE)
        error: Optional[str] = None
        try:
            k = start["k"] if start["k"] is not None else self.cfg.k
            await ws.send(json.dumps({"type": "ready", "session": c.id, "sample_rate": start["sample_rate"], "format": start["format"],
                                "k": k, "mode": self.cfg.mode, "phi": self.cfg.phi, "chunk_ms": self.model.chunk_ms,
                                "model": self.model_name, "max_session_s": lim.max_session_s,
                                "max_frame_bytes": lim.max_frame_bytes}))
            self._work.set()  # the engine resets the slot for this connection
            while not c.ended:
                try:
                    msg = await asyncio.wait_for(ws.recv(), lim.idle_timeout_s)
                except asyncio.TimeoutError:
                    error = f"idle: nothing received for {lim.idle_timeout_s:g} s"
                    break
                if isinstance(msg, bytes):
                    if len(msg) > lim.max_frame_bytes:
                        error = f"frame of {len(msg)} bytes is over the limit of {lim.max_frame_bytes} bytes"
                        break
                    try:
                        x = decode_frame(msg, start["format"])
                    except ProtocolError as e:
                        error = str(e)
                        break
                    if resampler is not None:
                        x = resampler.resample_chunk(x)
                    self._audio(c, x, limit)
                else:
                    try:
                        m = json.loads(msg)
                    except json.JSONDecodeError as e:
                        error = f"malformed JSON: {e.msg} at char {e.pos}"
                        break
                    if not isinstance(m, dict) or m.get("type") != "end":
                        error = 'expected binary PCM frames or {"type": "end"}'
                        break
                    if resampler is not None:
                        self._audio(c, resampler.resample_chunk(np.zeros(0, np.float32), last=True), limit)
                    c.ended = True
                self._work.set()
            if error is not None:
                self._drop(c)
                sender.cancel()
                await _error(ws, error)
                return
            await sender  # ends after eof (or when the client goes away)
        except Exception:  # noqa: BLE001 - the client vanished (ConnectionClosed) or its socket failed
            pass
        finally:  # eof sent, error, or the client vanished: the engine releases the slot at its next tick
            self._drop(c)
            if not sender.done():
                sender.cancel()

    def _audio(self, c: _Conn, x: np.ndarray, limit: int) -> None:
        if c.ended or not x.size:
            return
        if c.samples_in + x.shape[0] >= limit:  # the session-length limit: keep what fits, then end the stream
            x = x[: limit - c.samples_in]
            c.ended = True
            self._send(c, {"type": "error", "reason": f"session length limit of {self.limits.max_session_s:g} s of audio "
                           "reached: the rest is ignored, decoding what was received", "fatal": False})
        c.inbox.append(x)
        c.samples_in += x.shape[0]
        c.arrivals.append((c.samples_in, time.monotonic()))

    async def _sender(self, ws, c: _Conn) -> None:
        """This connection's only writer: events in order; closes after eof, or when the client reads too slowly."""
        while not c.overflow:
            ev = await c.queue.get()
            await ws.send(json.dumps(ev))
            if ev["type"] == "eof":
                await ws.close()
                return

    # -- running ------------------------------------------------------------------------------------------
    def page(self, connection, request):
        """``websockets`` process_request: the browser page at ``/`` (plain HTTP GET); WebSocket upgrades pass."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        path = request.path.split("?", 1)[0]
        files = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
                 "/capture.js": ("capture.js", "text/javascript; charset=utf-8")}
        if path not in files:
            return connection.respond(404, "not found\n")
        name, ctype = files[path]
        resp = connection.respond(200, resources.files("asr_stream").joinpath("assets", "web", name).read_text())
        del resp.headers["Content-Type"]
        resp.headers["Content-Type"] = ctype
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def serve(self, host: str = "127.0.0.1", port: int = 8765, ready: Optional[Callable[[int], None]] = None) -> None:
        """Serve until cancelled. ``ready(port)`` is called once listening (port 0 picks a free one)."""
        from websockets.asyncio.server import serve

        self._work = asyncio.Event()
        engine = asyncio.create_task(self.engine())
        # frames over the library's limit are refused by the library (close 1009); below it, by us with an error.
        # No permessage-deflate: PCM barely compresses, and inflating every client's frames took about a tenth of
        # the server process's busy time at 40 clients (py-spy, benchmarks/serve.py), time the engine shares.
        async with serve(self.handler, host, port, process_request=self.page, max_size=4 * self.limits.max_frame_bytes,
                         max_queue=64, ping_interval=20, ping_timeout=20, compression=None) as srv:
            bound = srv.sockets[0].getsockname()[1]
            if ready is not None:
                ready(bound)
            try:
                await asyncio.Future()
            finally:
                engine.cancel()


async def _error(ws, reason: str, code: int = 1008) -> None:
    """Send one ``error`` event and close; the client may already be gone."""
    try:
        await ws.send(json.dumps({"type": "error", "reason": reason.splitlines()[0], "fatal": True}))
        await ws.close(code, reason[:120])
    except Exception:  # noqa: BLE001 - nothing more to tell a client that left
        pass


__all__ = ["PerClientStreams", "ProtocolError", "Server", "ServerConfig", "decode_frame", "parse_start"]
