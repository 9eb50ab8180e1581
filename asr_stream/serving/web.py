"""The HTTP side of ``asr-stream serve``: one port (aiohttp) for the WebSocket protocol, the browser page and the REST
endpoint (docs/protocol.md; docs/design.md says why aiohttp).

- ``GET`` with a WebSocket upgrade, on any path: one live stream (:meth:`Server.handler`, through :class:`Socket`,
  which gives aiohttp's WebSocket the small interface the session code uses).
- ``GET /`` (``/index.html``, ``/capture.js``) without an upgrade: the page that streams the browser's microphone.
- ``POST /v1/audio/transcriptions``: an OpenAI-style upload (:mod:`asr_stream.serving.rest`).
- ``GET /healthz`` (the process answers), ``GET /readyz`` (the model is loaded, the engine runs and the server is not
  draining), ``GET /metrics`` (Prometheus text format, :mod:`asr_stream.serving.metrics`).

Every connection passes :mod:`asr_stream.serving.gate` until its first request head is complete (a cap per address,
and ``--start-timeout-s`` to send it).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from importlib import resources
from typing import Callable, Optional

from aiohttp import WSMsgType, web

from .auth import Keys
from .drain import drain
from .gate import KEEPALIVE_S, Gate
from .rest import error_response, transcriptions

MAX_READ_BUFFER = 1 << 19
"""Bytes of parsed frames aiohttp holds for one WebSocket before it stops reading its socket (its reader's limit, twice
its 256 KiB chunk size): a connection under back-pressure holds at most this much there, then TCP pushes back."""


class Closed(ConnectionError):
    """The WebSocket was closed (by the client, or because a frame broke aiohttp's limits)."""


class Socket:
    """aiohttp's WebSocket as the session code uses it: ``recv`` (text as ``str``, binary as ``bytes``; :class:`Closed`
    once closed), ``send``, ``close``, ``wait_closed``, ``transport.abort()`` and ``remote_address``."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws, self._request = ws, request
        self.remote_address = (request.remote or "?", None)
        self.transport = self
        self._closed = asyncio.Event()

    async def recv(self):
        msg = await self._ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return msg.data
        self._closed.set()
        raise Closed(f"websocket closed ({msg.type.name})")

    async def send(self, text: str) -> None:
        await self._ws.send_str(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code=code, message=reason.encode()[:123])
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()


PAGES = {"/": ("index.html", "text/html"), "/index.html": ("index.html", "text/html"),
         "/capture.js": ("capture.js", "text/javascript")}


REST = "/v1/audio/transcriptions"
OPEN = ("/healthz", "/readyz")
"""Paths answered without a key (a load balancer's checks); the page too, when not asked for a WebSocket."""


def _upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def make_app(server, keys: Keys = Keys([])) -> web.Application:
    """The routes of ``server`` (a :class:`~asr_stream.serving.server.Server`); with ``keys``, every request but the
    page and the health checks must present one (401 otherwise, the same answer whatever was wrong)."""
    lim = server.limits

    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        public = request.path in OPEN or (request.method in ("GET", "HEAD") and request.path in PAGES
                                          and not _upgrade(request))
        if not public and not keys.allows(request.headers, request.query):
            server.metrics.refused("unauthorized")
            return error_response(401, "unauthorized", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    @web.middleware
    async def count(request: web.Request, handler) -> web.StreamResponse:
        """REST answers by status (401s included); the other routes are not counted here."""
        if request.path != REST:
            return await handler(request)
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            server.metrics.requests.labels(str(e.status)).inc()
            raise
        server.metrics.requests.labels(str(resp.status)).inc()
        return resp

    async def get(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, compress=False, max_msg_size=4 * lim.max_frame_bytes)
        if ws.can_prepare(request).ok:
            # No permessage-deflate: PCM barely compresses, and inflating every client's frames took about a tenth of
            # the server process's busy time at 40 clients (py-spy, benchmarks/serving/serve.py), time the engine shares.
            # Frames over 4x --max-frame-bytes are refused by aiohttp (close 1009); below it, by the session.
            await ws.prepare(request)
            try:
                await server.handler(Socket(ws, request))
            finally:
                await ws.close()
            return ws
        if request.path not in PAGES:
            return web.Response(status=404, text="not found\n")
        name, ctype = PAGES[request.path]
        text = resources.files("asr_stream").joinpath("assets", "web", name).read_text()
        return web.Response(text=text, content_type=ctype, charset="utf-8", headers={"Cache-Control": "no-store"})

    async def post_transcriptions(request: web.Request) -> web.StreamResponse:
        return await transcriptions(server, request)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        why = server.not_ready()
        return web.Response(status=503 if why else 200, text=f"{why or 'ready'}\n")

    async def metrics(request: web.Request) -> web.Response:
        body, ctype = server.metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": ctype})

    app = web.Application(middlewares=[count, guard] if keys else [count])
    app.router.add_post(REST, post_transcriptions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/{path:.*}", get)
    return app


async def serve(server, host: str, port: int, ready: Optional[Callable[[int], None]] = None, keys: Keys = Keys([]),
                ssl_context=None) -> None:
    """Serve ``server`` on ``host:port`` until cancelled, or until :meth:`Server.request_shutdown` (SIGTERM, SIGINT:
    a graceful drain, :mod:`asr_stream.serving.drain`); ``ready(port)`` once listening (port 0 picks a free one).
    ``keys``: the API keys asked for (none: no key); ``ssl_context``: TLS (https:// and wss://)."""
    engine = server.start_engine()
    # handler_cancellation: a client that goes away cancels its handler (an upload stops being decoded at once)
    runner = web.AppRunner(make_app(server, keys), handler_cancellation=True, access_log=None, shutdown_timeout=2.0,
                           keepalive_timeout=KEEPALIVE_S)
    await runner.setup()
    loop = asyncio.get_running_loop()
    signals = threading.current_thread() is threading.main_thread()  # (a server in a test's thread: no handlers)
    gate = Gate(server.waiting, server.limits.start_timeout_s, server.metrics.refused)
    listener = None
    try:  # aiohttp's protocol behind the gate (connections without a request yet: serving.gate)
        listener = await loop.create_server(gate.wrap(runner.server), host, port, ssl=ssl_context, backlog=128)
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, server.request_shutdown)
        if ready is not None:
            ready(listener.sockets[0].getsockname()[1])
        await server.shutdown.wait()
        listener.close()  # no new connections; those open are served (a load balancer's /readyz gets 503)
        await drain(server, server.limits.drain_s)
    finally:
        if listener is not None:
            listener.close()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        engine.cancel()
        await runner.cleanup()


__all__ = ["Closed", "MAX_READ_BUFFER", "Socket", "make_app", "serve"]
