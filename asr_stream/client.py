"""A client of ``asr-stream serve`` (docs/protocol.md): send audio, receive events.

Used by ``asr-stream client`` and ``asr-stream mic --url``, and by the tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np


class ServerError(ValueError):
    """The server sent a fatal ``error`` event (its one-line reason is the message) or went away."""


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
                 open_timeout: float = 10.0, api_key: Optional[str] = None) -> Result:
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
        why = " (a missing or wrong API key: ASR_STREAM_API_KEY or --api-key-file)" if e.response.status_code == 401 else ""
        raise ServerError(f"cannot connect to {url}: HTTP {e.response.status_code}{why}") from None
    except (OSError, asyncio.TimeoutError) as e:
        raise ServerError(f"cannot connect to {url}: {e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. an HTTP error instead of a WebSocket handshake
        raise ServerError(f"cannot connect to {url}: {str(e).splitlines()[0]}") from None
    async with ws:
        start = {"type": "start", "sample_rate": int(sample_rate), "format": "float32"}
        if k is not None:
            start["k"] = int(k)
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
                    raise ServerError("the server closed the connection before eof") from None
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
                raise ServerError(f"sending audio failed: {sender.exception()}")
    return res


def blocks_of(samples: np.ndarray, block_ms: float) -> list[np.ndarray]:
    step = max(1, int(round(block_ms * 16)))
    return [samples[i : i + step] for i in range(0, samples.shape[0], step)]


__all__ = ["Result", "ServerError", "blocks_of", "stream"]
