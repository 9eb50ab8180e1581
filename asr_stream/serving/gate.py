"""Connections of ``asr-stream serve`` that have not sent a request yet (docs/protocol.md, "Limits and faults").

Every TCP connection passes through a :class:`Gated` protocol in front of aiohttp's own, from the moment it is
accepted (after the TLS handshake, with TLS) until its first request head is complete (the blank line after the
headers). Meanwhile:

- one remote address may have at most ``--max-per-address`` such connections (0: no limit); one more is answered
  at once with ``429`` and a one-line reason, and closed (aiohttp never sees it), unless its whole request head has
  already arrived (a burst of clients that send their requests at once is not refused for being faster than the
  event loop's reads);
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


def http_answer(status: int, reason: str, text: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, with ``text`` (one line) as its plain-text body."""
    body = (text.splitlines()[0] + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def _head_waiting(transport) -> bool:
    """Whether a whole request head is already in the kernel's buffer for ``transport`` (a plain TCP socket): sent at
    once by the client, it only awaits the event loop's next read. So a burst of connections from one address that
    each send their request at once is not refused; those that sent nothing, or half a head, are. With TLS the
    buffer is encrypted: False."""
    import socket

    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return False
    try:
        with sock.dup() as s:
            data = s.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return False
    return any(end in data for end in HEAD_END)


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
        self.waiting = False  # counted in gate.waiting: no complete request head yet
        self.tail = b""  # the last bytes received, to find the end of the head across reads
        self.timer: Optional[asyncio.TimerHandle] = None
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        gate = self.gate
        if gate.waiting.admit(self.address):
            self.waiting = True
            self.timer = asyncio.get_running_loop().call_later(gate.timeout_s, self._expire)
        elif not _head_waiting(transport):
            gate.refused("per_address")
            self.inner = None
            transport.write(http_answer(429, "Too Many Requests", f"busy: {gate.waiting.limit} connections from "
                                        f"{self.address} have sent no request yet, the most one address may have "
                                        "(--max-per-address)"))
            transport.close()
            return
        self.inner.connection_made(transport)

    def _leave(self) -> None:
        if self.waiting:
            self.waiting = False
            self.gate.waiting.leave(self.address)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        """No complete request head within the time: 408, closed."""
        self.timer = None
        if not self.waiting or self.transport is None or self.transport.is_closing():
            return
        self._leave()
        self.gate.refused("request_timeout")
        inner, self.inner = self.inner, None
        self.transport.write(http_answer(408, "Request Timeout", f"no request within {self.gate.timeout_s:g} s of "
                                         "connecting (--start-timeout-s)"))
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


__all__ = ["Gate", "Gated", "KEEPALIVE_S", "http_answer"]
