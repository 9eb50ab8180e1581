"""Connections of ``asr-stream serve`` that have not sent a request yet (docs/protocol.md, "Limits and faults").

Every TCP connection passes through a :class:`Gated` protocol in front of aiohttp's own, from the moment it is
accepted (after the TLS handshake, with TLS) until its first request head is complete (the blank line after the
headers). Meanwhile:

- one remote address may have at most ``--max-per-address`` such connections (0: no limit); one more that has not
  sent its whole request head within :data:`GRACE_S` (half a second; an ordinary client sends it at once) is answered
  ``429`` with a one-line reason and closed;
- a connection whose request head is not complete ``--start-timeout-s`` after it was accepted (it sent nothing, or a
  slow-loris sends its head a byte at a time) is answered ``408`` with a one-line reason and closed.

After its head, a connection is aiohttp's: a WebSocket then has ``--start-timeout-s`` for its start message and counts
against ``--max-per-address`` open WebSockets, an upload's body has ``rest.BODY_IDLE_S`` between chunks and counts
against ``--max-uploads`` per address (:mod:`asr_stream.serving.rest`), an idle keep-alive connection is closed by
aiohttp after :data:`KEEPALIVE_S`.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from .fairness import AddressCount

KEEPALIVE_S = 75.0
"""Seconds aiohttp keeps an idle keep-alive connection open between requests (its own default for ``run_app``)."""
HEAD_END = (b"\r\n\r\n", b"\n\n")
GRACE_S = 0.5
"""Seconds a connection over the per-address cap has to complete its request head before it is refused (429): an
ordinary client sends it at once, so a burst of them is not refused for being accepted before their heads are read."""


def http_answer(status: int, reason: str, text: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, with ``text`` (one line) as its plain-text body."""
    body = (text.splitlines()[0] + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class Gate:
    """The rule for connections without a request yet: ``waiting`` counts them per address (limit ``limit``, 0: none);
    each has ``timeout_s`` to complete its request head. ``refused(reason)`` is told of each refusal (metrics)."""

    def __init__(self, waiting: AddressCount, timeout_s: float, refused: Callable[[str], None]) -> None:
        self.waiting, self.timeout_s, self.refused = waiting, timeout_s, refused

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server``: ``factory``'s protocols (aiohttp's), each behind this gate."""
        return lambda: Gated(factory(), self)


class Gated(asyncio.Protocol):
    """One connection: passes everything to ``inner`` (aiohttp's protocol) once admitted; see the module."""

    def __init__(self, inner: asyncio.Protocol, gate: Gate) -> None:
        self.inner: Optional[asyncio.Protocol] = inner
        self.gate = gate
        self.address = "?"
        self.waiting = False  # no complete request head yet
        self.counted = False  # counted in gate.waiting (not when let in over the cap, for GRACE_S)
        self.tail = b""  # the last bytes received, to find the end of the head across reads
        self.timer: Optional[asyncio.TimerHandle] = None
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        gate = self.gate
        loop = asyncio.get_running_loop()
        self.waiting = True
        if gate.waiting.admit(self.address):
            self.counted = True
            self.timer = loop.call_later(gate.timeout_s, self._expire)
        else:  # over the cap: refused unless its head comes at once (a burst of ordinary clients is not refused)
            self.timer = loop.call_later(GRACE_S, self._refuse)
        self.inner.connection_made(transport)

    def _leave(self) -> None:
        self.waiting = False
        if self.counted:
            self.counted = False
            self.gate.waiting.leave(self.address)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        """No complete request head within ``--start-timeout-s``: 408, closed."""
        self._close(408, "Request Timeout", "request_timeout",
                    f"no request within {self.gate.timeout_s:g} s of connecting (--start-timeout-s)")

    def _refuse(self) -> None:
        """Over the per-address cap and no complete head within :data:`GRACE_S`: 429, closed."""
        self._close(429, "Too Many Requests", "per_address",
                    f"busy: {self.gate.waiting.limit} connections from {self.address} have sent no request yet, the "
                    "most one address may have (--max-per-address)")

    def _close(self, status: int, phrase: str, why: str, text: str) -> None:
        self.timer = None
        if not self.waiting or self.transport is None or self.transport.is_closing():
            return
        self._leave()
        self.gate.refused(why)
        inner, self.inner = self.inner, None
        self.transport.write(http_answer(status, phrase, text))
        self.transport.close()
        if inner is not None:
            inner.connection_lost(None)  # aiohttp's handler ends now (it is told nothing more of this connection)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.waiting:
            seen = self.tail + data
            if any(end in seen for end in HEAD_END):
                self._leave()
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._leave()
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


__all__ = ["GRACE_S", "Gate", "Gated", "KEEPALIVE_S", "http_answer"]
