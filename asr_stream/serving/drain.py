"""Graceful shutdown of ``asr-stream serve`` (SIGTERM; docs/protocol.md, "Graceful shutdown").

The listening socket is closed first (no new connections; ``/readyz`` answers 503 on connections already open). Each
open WebSocket stream goes on until it is between utterances (no segment open: every word of the last one has been
sent), at most ``--drain-s``; then the server stops reading it, sends a non-fatal ``error`` saying the server is
going away and how much audio was read, decodes everything received (its ``final`` events and ``eof``) and closes
with 1001 ("going away"). Uploads under way may finish within ``--drain-s``; those still running then get 503. After
that the engine has up to :data:`GRACE_S` to decode what was received (bounded by ``--max-backlog-s`` per stream);
connections still open then are closed by the runner. A second signal ends every stream at once.
"""

from __future__ import annotations

import asyncio
import sys
import time

GRACE_S = 10.0
"""Seconds after ``--drain-s`` for the engine to decode what was received and the clients to take their events."""
POLL_S = 0.05


async def _until(done, deadline: float, hurry: asyncio.Event) -> None:
    while not done() and time.monotonic() < deadline and not hurry.is_set():
        await asyncio.sleep(POLL_S)


async def drain(server, drain_s: float, say=lambda line: print(line, file=sys.stderr, flush=True)) -> bool:
    """Drain ``server``'s streams and uploads (see the module); True when every connection finished in time."""
    server.draining = True
    live = [c for c in server.conns.values() if c.ws is not None]
    uploads = [c for c in server.conns.values() if c.ws is None]
    say(f"asr-stream: going away: {len(live)} stream(s) end at their next pause, {len(uploads)} upload(s) may finish "
        f"(at most {drain_s:g} s; signal again to end them now)")
    for c in live:
        c.draining = True
    server.wake()
    await _until(lambda: all(c.stop.is_set() or c.ended or c.gone for c in live) and all(c.gone for c in uploads),
                 time.monotonic() + drain_s, server.hurry)
    for c in live:
        server.going_away(c, f"no pause within --drain-s {drain_s:g} s")
    for c in uploads:
        if not c.gone:
            c.queue.put_nowait({"type": "going_away"})  # its handler answers 503
    await _until(lambda: not server.conns, time.monotonic() + GRACE_S, asyncio.Event())
    left = len(server.conns)
    say(f"asr-stream: stopped{f' ({left} connection(s) still open, closed now)' if left else ''}")
    return not left


__all__ = ["GRACE_S", "drain"]
