"""Small helpers of the WebSocket sessions (:mod:`asr_stream.serving.server`): a read that a drain can stop, reading
to the close, and a fatal error event."""

from __future__ import annotations

import asyncio
import json


async def recv_or_stop(ws, stop: asyncio.Event, timeout: float):
    """``ws.recv()`` within ``timeout`` seconds (asyncio.TimeoutError after it); None once ``stop`` is set."""
    if stop.is_set():
        return None
    recv, stopped = asyncio.ensure_future(ws.recv()), asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait((recv, stopped), timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled (the client left): no read stays pending
        recv.cancel()
        raise
    finally:
        stopped.cancel()
    if recv in done:
        return recv.result()
    recv.cancel()
    if not done:
        raise asyncio.TimeoutError
    return None


async def discard(ws) -> None:
    """Read and drop what ``ws`` sends until it closes."""
    try:
        while True:
            await ws.recv()
    except Exception:  # noqa: BLE001 - closed
        pass


async def send_error(ws, reason: str, code: int = 1008) -> None:
    """Send one ``error`` event and close; the client may already be gone."""
    try:
        await ws.send(json.dumps({"type": "error", "reason": reason.splitlines()[0], "fatal": True}))
        await ws.close(code, reason[:120])
    except Exception:  # noqa: BLE001 - nothing more to tell a client that left
        pass


__all__ = ["discard", "recv_or_stop", "send_error"]
