"""``asr-stream serve``: many live clients over WebSocket, one model, one batched decoder.

Architecture (see docs/protocol.md for the wire protocol; :mod:`asr_stream.serving.web` is the HTTP side):

- The network side is an asyncio server (aiohttp, one port for the WebSocket, the page and the REST endpoints):
  one coroutine per connection parses the start
  message, checks and converts each binary PCM frame (int16 / float32, any rate -> 16 kHz float32 with one
  soxr stream per connection) and appends it to that connection's inbox. It never runs the model. When a
  connection's inbox holds more than ``--max-backlog-s`` of audio it stops reading that connection (back-pressure:
  the library's bounded queue fills, then TCP pushes back on the client) until the engine has taken enough.
- ONE engine task runs the model. Each tick it takes every connection's share of its inbox (at most ``share_ms`` of
  audio per stream: a client that sends faster than real time is decoded a share per tick beside the others, not
  to the end of its backlog first), ends, new and gone connections, hands them to :class:`~asr_stream.streaming.segment.SegmentedStreams` (each stream with its own
  endpointer: the project's one segmentation mechanism) and runs ONE ``drain()``: batched decoder steps over
  every stream that has work. The tick runs in a worker thread so the event loop keeps receiving audio. A gone
  connection's waiting audio is dropped at once; the engine never decodes more of it than the tick under way.
- Slots are held by streams, not sockets: the idle rule wants ``--min-audio-s`` of audio per ``--idle-timeout-s``,
  and one remote address may hold ``--max-per-address`` connections (:mod:`asr_stream.serving.fairness`).
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
from typing import Callable, Literal, Optional

import numpy as np
import torch

from ..audio.io import SAMPLE_RATE
from .fairness import AddressCount, AudioRate, take_share
from .config import ServerConfig
from .protocol import FORMATS, ProtocolError, decode_frame, parse_start  # noqa: F401 - FORMATS: re-exported
from .sockets import discard, recv_or_stop, send_error


# ----------------------------------------------------------------------------------------------- connections


@dataclass
class Conn:
    """One connection's state shared by its handler (event loop) and the engine task (takes the inbox per tick)."""

    id: int
    slot: int
    k: Optional[int]
    context: Optional[tuple] = None  # the client's context list (None: the server's --context, if any)
    inbox: list = field(default_factory=list)  # 16 kHz float32 arrays not yet given to the engine
    pending: int = 0  # samples in the inbox (back-pressure above --max-backlog-s)
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set by the engine when pending is back under the limit
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
    ws: object = None  # the websocket (None: an upload, whose events its REST handler reads from the queue)
    sender: Optional[asyncio.Task] = None  # the task that writes to it
    segments: Optional[list] = None  # an upload's segments (Segment), set by the engine with its eof
    draining: bool = False  # the server is going away: end this stream at its next pause (between utterances)
    pause: bool = False  # (engine) a draining stream has no open utterance: end it now
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: read no more audio (the server is going away)

    def take(self, n: int) -> list:
        """The engine's share of the inbox: at most ``n`` samples, in order; the rest waits for the next tick."""
        out, got = take_share(self.inbox, n)
        self.pending -= got
        return out

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
    """The model, the engine and the connections. :meth:`handler` is one WebSocket connection's handler."""

    def __init__(self, model, cfg, endpoint, limits: ServerConfig = ServerConfig(),
                 scheduler: Literal["batched", "per-client"] = "batched", model_name: str = "default",
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: seconds, for the idle rule (tests pass their own)."""
        from ..streaming.segment import PerClientStreams, SegmentedStreams
        from .metrics import Metrics

        self.model, self.cfg, self.endpoint, self.limits, self.model_name = model, cfg, endpoint, limits, model_name
        self.scheduler, self.clock = scheduler, clock
        self.tick_s = (limits.tick_ms if limits.tick_ms is not None else model.chunk_ms) / 1000.0
        share_ms = limits.share_ms if limits.share_ms is not None else 2 * max(self.tick_s * 1000.0, model.chunk_ms)
        self.share = max(1, int(share_ms * SAMPLE_RATE / 1000))  # samples per stream per tick
        self.backlog = int(limits.max_backlog_s * SAMPLE_RATE)
        self.addresses = AddressCount(limits.max_per_address)  # open WebSockets per address
        self.waiting = AddressCount(limits.max_per_address)  # connections without a request yet (serving.gate)
        self.uploading = AddressCount(limits.max_uploads if limits.max_per_address else 0)  # uploads (serving.rest)
        self._behind = False  # the last tick left audio waiting: tick again without gathering
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
        self.conns: dict[int, Conn] = {}  # slot -> connection
        self._releases: list[int] = []  # slots of connections gone since the last tick
        self._next_id = 0
        self._work: Optional[asyncio.Event] = None
        self.ticks = 0
        self.sessions_served = 0
        self.metrics = Metrics(lambda kind: sum((c.ws is None) == (kind == "upload") for c in self.conns.values()))
        self.engine_task: Optional[asyncio.Task] = None
        self.draining = False  # SIGTERM: no new streams; open ones end at their next pause (serving.drain)
        self.receiving = 0  # uploads being received, checked or decoded (serving.rest: at most 2 x --max-uploads)

    # -- the engine ---------------------------------------------------------------------------------------
    def _on_segment(self, i: int, seg) -> None:
        self._finals.setdefault(i, []).append(seg)

    def _tick(self, releases: list[int], jobs: list[tuple[Conn, list, bool, bool]]) -> dict[int, list[dict]]:
        """Engine thread: release the slots of connections that are gone (before a new connection's reset of the same
        slot), apply every connection's inbox, one drain, collect events per connection id."""
        torch.set_num_threads(self.limits.decoder_threads)  # this thread's own count; the encoder sets its own
        for slot in releases:
            self.streams.release(slot)
        for c, audio, start, end in jobs:
            if start:
                self.streams.reset(c.slot, c.k, c.context)
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
            if c.draining and not c.pause:  # between utterances: no segment open (every word of the last one is out)
                c.pause = not segs or segs[-1].end >= 0
            if c.end_sent and self.streams.done(i):
                c.finished = True
                segs = self.streams.segments(i)
                if c.ws is None:  # an upload: its segments for the REST answer (a reset of the slot makes new ones)
                    c.segments = list(segs)
                events.append({"type": "eof", "text": " ".join(s.text for s in segs if s.text), "segments": len(segs),
                               "audio_ms": round(c.samples_in / 16.0, 1), "lag_ms": round(c.lag_ms(c.samples_in / 16.0, now))})
            if events:
                out[c.id] = events
        return out

    @staticmethod
    def _partial(c: Conn, words: list, now: float) -> list[dict]:
        if not words:
            return []
        first = c.words_out
        c.words_out += len(words)
        lag = max(c.lag_ms(w.time_ms, now) for w in words)
        c.prune(words[-1].time_ms)
        return [{"type": "partial", "words": [_word(w, first + j) for j, w in enumerate(words)], "lag_ms": round(lag)}]

    async def engine(self) -> None:
        """The one engine task: wait for work (and gather for ``tick_s`` unless audio is already waiting), run ticks."""
        assert self._work is not None
        last = -math.inf
        while True:
            await self._work.wait()
            wait = last + self.tick_s - time.monotonic()
            if wait > 0 and not self._behind:
                await asyncio.sleep(wait)  # gather: everything that arrives meanwhile joins this tick
            self._work.clear()
            last = time.monotonic()
            await self.tick()
            if self._behind or any(c.end_sent and not c.finished and not c.gone for c in self.conns.values()):
                self._work.set()  # audio waits beyond a share, or a closing segment is still being finished

    def _take_work(self) -> tuple[list[int], list[tuple[Conn, list, bool, bool]]]:
        """Event loop: what the next tick does. Slots to release, and per connection (start?, its share of the
        inbox, end?); the end goes with the last of the audio. Connections back under the backlog limit are read
        again."""
        releases, self._releases = self._releases, []
        jobs = []
        for c in list(self.conns.values()):
            audio = c.take(self.share)
            start = not c.started
            c.started = True
            end = c.ended and not c.end_sent and not c.inbox
            c.end_sent = c.end_sent or end
            if audio or start or end or (c.end_sent and not c.finished) or (c.draining and not c.stop.is_set()):
                jobs.append((c, audio, start, end))
            if c.pending <= self.backlog:
                c.room.set()
        self._behind = any(c.inbox for c in self.conns.values())
        return releases, jobs

    async def tick(self) -> bool:
        """One engine tick: take the work (:meth:`_take_work`), run it in a worker thread, queue the events.
        False when there was nothing to do."""
        releases, jobs = self._take_work()
        if not jobs and not releases:
            return False
        t0 = time.monotonic()
        try:
            out = await asyncio.to_thread(self._tick, releases, jobs)
        except Exception as e:  # noqa: BLE001 - a bug must not hang every client: tell them, keep serving
            import traceback

            traceback.print_exc()
            for c, *_ in jobs:
                self._kick(c, f"internal error: {type(e).__name__}: {e}", "internal")
            return True
        m = self.metrics
        m.tick.observe(time.monotonic() - t0)
        for c, *_ in jobs:
            kind = "upload" if c.ws is None else "live"
            for ev in out.get(c.id, []):
                if ev["type"] == "partial":
                    m.words.labels(kind).inc(len(ev["words"]))
                if kind == "live" and ev["type"] in ("partial", "final"):
                    m.lag.observe(ev["lag_ms"] / 1000.0)
                self._send(c, ev)
            if c.pause and not c.stop.is_set():
                self.going_away(c, "at a pause")
        return True

    def _send(self, c: Conn, ev: dict) -> None:
        """Queue an event without waiting; a full queue (slow reader) marks the connection for closing."""
        if c.gone or c.overflow:
            return
        try:
            c.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self._kick(c, f"slow reader: more than {self.limits.send_queue} events waiting to be sent", "slow_reader")

    def _drop(self, c: Conn) -> None:
        """``c`` is over (eof sent, error, vanished): its audio not yet taken by the engine is dropped and its slot is
        free for the next connection at once; the engine releases it at its next tick, always before a new
        connection's reset of that slot (see ``_tick``), so what the departed still costs is at most the share of the
        tick under way."""
        if c.gone:
            return
        c.gone = True
        c.inbox, c.pending = [], 0
        c.room.set()
        if self.conns.get(c.slot) is c:
            del self.conns[c.slot]
            self.free.append(c.slot)
            self._releases.append(c.slot)
        self._work.set()

    def _kick(self, c: Conn, reason: str, why: str) -> None:
        """Disconnect ``c`` without waiting for it: an error event if its socket takes it within 2 s, then abort."""
        if c.overflow:
            return
        c.overflow = True
        self._drop(c)
        self.metrics.refused(why)
        if c.ws is None:  # an upload: its handler reads this from the queue (unbounded) and answers 500
            c.queue.put_nowait({"type": "error", "reason": reason.splitlines()[0], "fatal": True})
            return

        async def kick() -> None:
            if c.sender is not None:
                c.sender.cancel()
            try:
                await asyncio.wait_for(send_error(c.ws, reason), 2.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
            c.ws.transport.abort()

        asyncio.get_running_loop().create_task(kick())

    # -- connections --------------------------------------------------------------------------------------
    async def handler(self, ws) -> None:
        """One client: at most ``--max-per-address`` open per remote address, then :meth:`_session`."""
        address = str((getattr(ws, "remote_address", None) or ("?",))[0])
        if not self.addresses.admit(address):
            self.metrics.refused("per_address")
            await send_error(ws, f"busy: {self.limits.max_per_address} connections from {address} are open, the most "
                             "one address may have (--max-per-address)", code=1013)
            return
        if self.draining:
            self.addresses.leave(address)
            self.metrics.refused("draining")
            await send_error(ws, "the server is going away (shutting down): connect again (to another replica)", code=1001)
            return
        self.metrics.connections.inc()
        try:
            await self._session(ws)
        finally:
            self.addresses.leave(address)
            self.metrics.connections.dec()

    async def _session(self, ws) -> None:
        """Start message, then PCM frames and an end message; events go out through a sender task. Reading stops
        while the connection's waiting audio is over ``--max-backlog-s`` (:meth:`_room`)."""
        lim = self.limits
        try:
            first = await asyncio.wait_for(ws.recv(), lim.start_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.refused("start_timeout")
            await send_error(ws, f"no start message within {lim.start_timeout_s:g} s")
            return
        except Exception:  # noqa: BLE001 - the client left before starting
            return
        try:
            start = parse_start(first)
        except ProtocolError as e:
            self.metrics.refused("protocol")
            await send_error(ws, str(e))
            return
        if not self.free:
            self.metrics.refused("busy")
            await send_error(ws, f"busy: all {lim.max_clients} streams are in use, try again later", code=1013)
            return
        if start["context"] is not None:
            try:
                self.check_context(start["context"])
            except ValueError as e:
                self.metrics.refused("protocol")
                await send_error(ws, f"context: {e}")
                return
        slot = self.free.pop(0)
        c = Conn(id=self._next_id, slot=slot, k=start["k"], context=start["context"], queue=asyncio.Queue(lim.send_queue),
                 ws=ws)
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
        why = "protocol"  # the refusal's reason in the metrics, unless said below
        rate = AudioRate(lim.min_audio_s, lim.idle_timeout_s, self.clock())
        dropper: Optional[asyncio.Task] = None
        try:
            k = start["k"] if start["k"] is not None else self.cfg.k
            await ws.send(json.dumps({"type": "ready", "session": c.id, "sample_rate": start["sample_rate"], "format": start["format"],
                                "k": k, "mode": self.cfg.mode, "phi": self.cfg.phi, "chunk_ms": self.model.chunk_ms,
                                "model": self.model_name, "max_session_s": lim.max_session_s,
                                "context": list(start["context"] if start["context"] is not None else self.cfg.context),
                                "text_format": "plain" if self.cfg.plain else self.model.cfg.text_format,
                                "max_frame_bytes": lim.max_frame_bytes, "max_backlog_s": lim.max_backlog_s}))
            self._work.set()  # the engine resets the slot for this connection
            while not c.ended:
                if c.pending > self.backlog:  # back-pressure: not read until the engine has taken enough
                    if not await self._room(ws, c):
                        return  # closed meanwhile (finally: its waiting audio is dropped)
                    rate.restart(self.clock(), c.samples_in)
                now = self.clock()
                error = rate.why(now)
                if error is not None:
                    why = "idle"
                    break
                try:
                    msg = await recv_or_stop(ws, c.stop, rate.deadline() - now)
                except asyncio.TimeoutError:
                    continue  # the idle rule says why, at the top
                if msg is None:  # the server is going away: what was received is decoded, nothing more is read
                    if resampler is not None:
                        self._audio(c, resampler.resample_chunk(np.zeros(0, np.float32), last=True), limit)
                    c.ended = True
                    break
                if isinstance(msg, bytes):
                    if len(msg) > lim.max_frame_bytes:
                        error = f"frame of {len(msg)} bytes is over the limit of {lim.max_frame_bytes} bytes"
                        why = "frame_too_big"
                        break
                    try:
                        x = decode_frame(msg, start["format"])
                    except ProtocolError as e:
                        error = str(e)
                        break
                    if resampler is not None:
                        x = resampler.resample_chunk(x)
                    self._audio(c, x, limit)
                    rate.add(self.clock(), c.samples_in)
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
                self.metrics.refused(why)
                await send_error(ws, error)
                return
            if c.samples_in >= limit or c.stop.is_set():  # cut at the session limit or by a drain: what the client
                dropper = asyncio.create_task(discard(ws))  # still sends is read and dropped, so that its close frame is
                # seen (no 10 s close timeout)
            await sender  # ends after eof (or when the client goes away)
        except Exception:  # noqa: BLE001 - the client vanished (ConnectionClosed) or its socket failed
            pass
        finally:  # eof sent, error, or the client vanished: the engine releases the slot at its next tick
            self._drop(c)
            for t in (sender, dropper):
                if t is not None and not t.done():
                    t.cancel()

    async def _room(self, ws, c: Conn) -> bool:
        """Back-pressure: wait, without reading ``ws``, until the engine has taken ``c``'s audio down to the backlog
        limit (True) or the connection is closed or dropped meanwhile (False)."""
        c.room.clear()
        waits = [asyncio.ensure_future(c.room.wait()), asyncio.ensure_future(c.stop.wait())]
        closed = getattr(ws, "wait_closed", None)  # the library still reads until its own queue is full
        if closed is not None:
            waits.append(asyncio.ensure_future(closed()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        gone = len(waits) > 2 and waits[2].done() and not waits[2].cancelled()
        return not (gone or c.gone)

    def _audio(self, c: Conn, x: np.ndarray, limit: int) -> None:
        if c.ended or not x.size:
            return
        if c.samples_in + x.shape[0] >= limit:  # the session-length limit: keep what fits, then end the stream
            x = x[: limit - c.samples_in]
            c.ended = True
            self._send(c, {"type": "error", "reason": f"session length limit of {self.limits.max_session_s:g} s of audio "
                           "reached: the rest is ignored, decoding what was received", "fatal": False})
        c.inbox.append(x)
        c.pending += x.shape[0]
        c.samples_in += x.shape[0]
        self.metrics.audio.labels("upload" if c.ws is None else "live").inc(x.shape[0] / SAMPLE_RATE)
        c.arrivals.append((c.samples_in, time.monotonic()))

    def check_context(self, phrases) -> None:
        """ValueError (one line) for a client's context list the model cannot read (trained without context, or
        longer than it was trained to read)."""
        from ..context import check_context_length, context_ids

        check_context_length(self.model.cfg, len(context_ids(self.model.codec, phrases)))

    # -- uploads (POST /v1/audio/transcriptions, asr_stream.serving.rest) ----------------------------------------
    def open_upload(self, context: Optional[tuple] = None) -> Optional[Conn]:
        """An engine slot for an upload (``context``: its context list, checked by :meth:`check_context`; None: the
        server's); None when every slot, or ``--max-uploads`` of them, is taken. Its events go to an unbounded queue
        its REST handler reads (one file's words: bounded by ``--max-upload-mb``)."""
        if not self.free or sum(c.ws is None for c in self.conns.values()) >= self.limits.max_uploads:
            return None
        c = Conn(id=self._next_id, slot=self.free.pop(0), k=None, context=context, queue=asyncio.Queue())
        self._next_id += 1
        self.conns[c.slot] = c
        self._work.set()
        return c

    async def feed_upload(self, c: Conn, x: np.ndarray) -> bool:
        """Add ``x`` (16 kHz) to upload ``c``, a share at a time, each once ``c``'s waiting audio is at most
        ``--max-backlog-s``: an upload is a client sending faster than real time, decoded a share per tick beside the
        live streams, its memory bounded the same way. False when ``c`` was dropped (an internal error) or ended at
        ``--max-session-s`` (a non-fatal error event says so)."""
        for j in range(0, x.shape[0], self.share):
            while c.pending > self.backlog and not c.gone:
                c.room.clear()
                await c.room.wait()
            if c.gone or c.ended:
                return False
            self._audio(c, x[j : j + self.share], int(self.limits.max_session_s * SAMPLE_RATE))
            self._work.set()
        return not (c.gone or c.ended)

    def end_upload(self, c: Conn) -> None:
        """No more audio for upload ``c``: its eof comes once all of it is decoded."""
        c.ended = True
        self._work.set()

    def going_away(self, c: Conn, where: str) -> None:
        """The server is going away: read no more of ``c``'s audio; what was received is decoded and sent (its finals,
        then eof, then close 1001). A non-fatal error event says so first."""
        if c.stop.is_set() or c.gone or c.ended:  # (ended: the client's own end, or the session limit)
            return
        c.stop.set()
        self._send(c, {"type": "error", "reason": f"the server is going away (shutting down): audio after "
                       f"{c.samples_in / SAMPLE_RATE:.2f} s was not read ({where}); what came before is decoded",
                       "fatal": False})
        self._work.set()

    def drop(self, c: Conn) -> None:
        """Upload ``c`` is over (answered, failed, or its client left): see :meth:`_drop`."""
        self._drop(c)

    async def _sender(self, ws, c: Conn) -> None:
        """This connection's only writer: events in order; closes after eof, or when the client reads too slowly."""
        while not c.overflow:
            ev = await c.queue.get()
            await ws.send(json.dumps(ev))
            if ev["type"] == "eof":
                await (ws.close(1001, "going away") if c.stop.is_set() else ws.close())
                return

    # -- running ------------------------------------------------------------------------------------------
    def start_engine(self) -> asyncio.Task:
        """The engine task, on the running loop (:mod:`asr_stream.serving.web` starts it with the listener)."""
        self._work = asyncio.Event()
        self.shutdown = asyncio.Event()
        self.hurry = asyncio.Event()
        self.engine_task = asyncio.create_task(self.engine())
        return self.engine_task

    def request_shutdown(self) -> None:
        """SIGTERM (or SIGINT): drain and stop (:func:`asr_stream.serving.drain.drain`); a second one: at once."""
        if self.shutdown.is_set():
            self.hurry.set()
        self.shutdown.set()

    def wake(self) -> None:
        """Make the engine tick (and look at every stream) soon."""
        self._work.set()

    def not_ready(self) -> Optional[str]:
        """Why ``GET /readyz`` answers 503 (None: ready): the engine is not running, or the server is draining."""
        if self.engine_task is None or self.engine_task.done():
            return "engine not running"
        return "draining" if self.draining else None

    async def serve(self, host: str = "127.0.0.1", port: int = 8765, ready: Optional[Callable[[int], None]] = None,
                    keys=None, ssl_context=None) -> None:
        """Serve until cancelled. ``ready(port)`` is called once listening (port 0 picks a free one). ``keys``: an
        :class:`~asr_stream.serving.auth.Keys` (None: no key asked for); ``ssl_context``: TLS."""
        from .auth import Keys
        from .web import serve

        await serve(self, host, port, ready, keys if keys is not None else Keys([]), ssl_context)


__all__ = ["ProtocolError", "Server", "ServerConfig", "decode_frame", "parse_start"]
