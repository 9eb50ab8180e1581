"""``asr-stream serve`` with 200 idle connections (issue 30, "Must hold"): TCP connections that never send a request,
WebSocket upgrades that never send their start message, and uploads whose body never comes.

Each kind comes from its own loopback address (all of 127/8 is loopback), the normal client from 127.0.0.1. The
excess of each kind is refused at once with a one-line reason; those let in hold no engine slot and no other
address's place; a normal client meanwhile gets exactly its lone transcript and a normal upload its answer; once the
idle clients leave, every count is back to zero and their addresses are served. With short limits, the idle
connections let in are closed by the server with their reason. Every wait is for an event, with a generous bound;
nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlparse

import pytest

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import asr_stream.serving.rest as rest
from asr_stream.serving.client import blocks_of, stream
from asr_stream.server import Server, ServerConfig

from .test_serve import ENDPOINT, alone, cfg, check_matches, model, run, running, waves  # noqa: F401
from .test_serve_rest import BOUNDARY, form, wav

BOUND_S = 120.0  # s: a bound on any wait for the server, never a measurement
RAW, WS, REST = "127.0.0.3", "127.0.0.4", "127.0.0.5"


def until(done, what: str) -> None:
    """Wait (polling) until ``done()``; fail after BOUND_S naming ``what``."""
    deadline = time.monotonic() + BOUND_S
    while not done():
        assert time.monotonic() < deadline, f"not within {BOUND_S:g} s: {what}"
        time.sleep(0.02)


def raw(port: int, address: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND_S, source_address=(address, 0))


def answer(s: socket.socket) -> bytes:
    """Everything the server sends on ``s`` until it closes it (waits at most BOUND_S). A server that answers before
    it has read the whole body may close with a reset, after its answer."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def silent(s: socket.socket) -> bool:
    """Nothing has arrived on ``s`` and it is open (no data, no EOF, right now)."""
    s.setblocking(False)
    try:
        s.recv(1, socket.MSG_PEEK)
        return False  # data, or b"" (closed)
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.setblocking(True)


def stalled_upload(port: int, address: str, body: bytes) -> socket.socket:
    """An upload's headers and the first half of its body, then nothing."""
    s = raw(port, address)
    s.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + body[: len(body) // 2])
    return s


def upload(port: int, body: bytes, address: str = "127.0.0.1") -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND_S, source_address=(address, 0))
    try:
        conn.request("POST", "/v1/audio/transcriptions", body,
                     {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


async def upgrade(url: str, address: str):
    """A WebSocket opened from ``address`` that never sends its start message."""
    return await connect(url, open_timeout=BOUND_S, local_addr=(address, 0))


async def first_event(ws) -> tuple[dict, int]:
    """The first event on ``ws`` and the close code after it."""
    ev = json.loads(await asyncio.wait_for(ws.recv(), BOUND_S))
    try:
        await asyncio.wait_for(ws.recv(), BOUND_S)
    except ConnectionClosed as e:
        return ev, e.rcvd.code
    raise AssertionError("the connection stayed open after the error")


async def ready_from(url: str, address: str) -> str:
    async with connect(url, open_timeout=BOUND_S, local_addr=(address, 0)) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "float32"}))
        return json.loads(await asyncio.wait_for(ws.recv(), BOUND_S))["type"]


def refusals(server: Server) -> dict[str, float]:
    return {s.labels["reason"]: s.value for f in server.metrics.refusals.collect() for s in f.samples
            if s.name.endswith("_total") and s.value}


@pytest.mark.timeout(900)
def test_200_idle_connections_are_refused_past_the_caps_and_hold_nothing_else(model, cfg, monkeypatch):
    """70 TCP connections that send nothing, 70 WebSockets that send no start, 60 uploads whose body stops halfway
    (timeouts out of reach here): per address, 8 silent connections and 8 WebSockets are let in (--max-per-address)
    and 1 upload (--max-uploads), every further one is refused at once with its one-line reason (HTTP 429 / the
    busy error event, close 1013 / OpenAI's error JSON). Meanwhile a live client from another address gets exactly its
    lone transcript and an upload from it is answered. Once the idle clients leave, nothing is held and each of their
    addresses is served again."""
    monkeypatch.setattr(rest, "BODY_IDLE_S", 3600.0)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_uploads=1, start_timeout_s=3600.0))
    x = waves()[2]
    body = form({"model": "m"}, ("a.wav", wav(x)))
    ref = alone(model, cfg, x)
    with running(server) as url:
        port = urlparse(url).port
        tcp = [raw(port, RAW) for _ in range(70)]
        until(lambda: sum(not silent(s) for s in tcp) >= 62 and server.waiting.open.get(RAW) == 8,
              "62 silent connections refused, 8 let in")
        held_tcp = [s for s in tcp if silent(s)]
        refused_tcp = [answer(s) for s in tcp if s not in held_tcp]

        async def websockets():
            socks = [await upgrade(url, WS) for _ in range(70)]
            events = [asyncio.ensure_future(first_event(ws)) for ws in socks]
            deadline = time.monotonic() + BOUND_S
            while sum(t.done() for t in events) < 62 and time.monotonic() < deadline:
                await asyncio.wait(events, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            held = [ws for ws, t in zip(socks, events) if not t.done()]
            refused = [t.result() for t in events if t.done()]
            for t in events:
                t.cancel()
            await asyncio.gather(*events, return_exceptions=True)
            return held, refused

        loop = asyncio.new_event_loop()  # the held WebSockets live on this loop until they are closed below
        held_ws, refused_ws = loop.run_until_complete(asyncio.wait_for(websockets(), BOUND_S))
        stalled = []
        for _ in range(60):  # one by one, each once its head is read (not 9 connected at once before they send)
            stalled.append(stalled_upload(port, REST, body))
            until(lambda: not server.waiting.open.get(REST), "the upload's head read")
        until(lambda: server.receiving == 1 and sum(not silent(s) for s in stalled) >= 59, "59 uploads refused")
        refused_rest = [answer(s) for s in stalled if not silent(s)]
        held_rest = [s for s in stalled if silent(s)]
        assert server.receiving == 1 and not server.conns  # idle connections hold no engine slot

        live = run(stream(url, blocks_of(x, 100), block_ms=100))  # a normal client, from 127.0.0.1, in real time
        served = upload(port, body)

        for s in held_tcp + held_rest:
            s.close()
        async def close(socks):
            await asyncio.gather(*[ws.close() for ws in socks])

        loop.run_until_complete(close(held_ws))
        loop.close()
        until(lambda: not (server.addresses.open or server.receiving or server.waiting.open or server.uploading.open
                           or server.conns), "every place freed")
        again = [run(ready_from(url, a)) for a in (RAW, WS)] + [upload(port, body, REST)[0]]

    assert len(held_tcp) == 8 and len(refused_tcp) == 62 and len(held_ws) == 8
    assert all(r.startswith(b"HTTP/1.1 429 ") for r in refused_tcp), refused_tcp[0]
    assert refused_tcp[0].split(b"\r\n\r\n", 1)[1] == (f"busy: 8 connections from {RAW} have sent no request yet, the "
                                                        "most one address may have (--max-per-address)\n").encode()
    assert refused_ws == [({"type": "error", "fatal": True, "reason": f"busy: 8 connections from {WS} are open, the most "
                                                                      "one address may have (--max-per-address)"}, 1013)] * 62
    assert len(held_rest) == 1 and len(refused_rest) == 59
    head, _, js = refused_rest[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ") and json.loads(js)["error"] == {
        "message": f"busy: 1 upload from {REST} is being received or decoded, the most one address may have "
                   "(--max-uploads; --max-per-address 0 lifts it), try again later",
        "type": "invalid_request_error", "param": None, "code": "busy"}
    check_matches(live, ref)
    assert served[0] == 200 and served[1]["text"] == ref.text
    assert again == ["ready", "ready", 200]
    assert refusals(server) == {"per_address": 62 + 62}


@pytest.mark.timeout(600)
def test_idle_connections_let_in_are_closed_with_their_reason(model, cfg, monkeypatch):
    """With short limits (1 s), the idle connections that were let in do not stay: a connection that sends no request
    gets 408 and a one-line reason, one that sends half a request head too (a slow-loris), a WebSocket without its
    start message gets the error event, an upload whose body stops gets OpenAI's 408 error; then nothing is held."""
    monkeypatch.setattr(rest, "BODY_IDLE_S", 1.0)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_uploads=1, start_timeout_s=1.0))
    body = form({"model": "m"}, ("a.wav", wav(waves()[2])))
    with running(server) as url:
        port = urlparse(url).port
        nothing, half = raw(port, RAW), raw(port, RAW)
        half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        stalled = stalled_upload(port, REST, body)
        ws_event = run(_no_start(url))
        got = [answer(s) for s in (nothing, half, stalled)]
        until(lambda: not (server.addresses.open or server.receiving or server.waiting.open or server.uploading.open
                           or server.conns), "every place freed")
    reason = b"no request within 1 s of connecting (--start-timeout-s)\n"
    for r in got[:2]:
        assert r.startswith(b"HTTP/1.1 408 ") and r.split(b"\r\n\r\n", 1)[1] == reason, r
    head, _, js = got[2].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and json.loads(js)["error"]["message"] == \
        "nothing of the request body arrived for 1 s: upload abandoned"
    assert ws_event == ({"type": "error", "fatal": True, "reason": "no start message within 1 s"}, 1008)
    assert refusals(server) == {"request_timeout": 2, "start_timeout": 1}


async def _no_start(url: str):
    return await first_event(await upgrade(url, WS))


def test_a_burst_of_ordinary_clients_from_one_address_is_not_refused(model, cfg, monkeypatch):
    """12 connections from one address accepted before any of them sent its request (a burst the event loop accepts
    before it reads): the 4 over the per-address cap are not refused while they are within GRACE_S (made long here),
    and once each sends its request, all 12 are answered 200."""
    import asr_stream.serving.gate as gate

    monkeypatch.setattr(gate, "GRACE_S", 3600.0)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1))
    with running(server) as url:
        port = urlparse(url).port
        socks = [raw(port, RAW) for _ in range(12)]
        until(lambda: server.waiting.open.get(RAW) == 8, "8 connections counted")
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = [answer(s) for s in socks]
        until(lambda: not server.waiting.open, "every place freed")
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"\r\n\r\nok\n") for r in got), got
    assert refusals(server) == {}
