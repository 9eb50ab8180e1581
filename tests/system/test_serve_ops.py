"""``asr-stream serve`` in operation (issue 30): health checks, Prometheus metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from asr_stream.serving.client import blocks_of, stream
from asr_stream.server import Server, ServerConfig

from .test_serve import ENDPOINT, alone, cfg, check_matches, model, raw, run, running, waves  # noqa: F401
from .test_serve_auth import KEYS, request, upload, with_keys

F32 = {"type": "start", "sample_rate": 16000, "format": "float32"}


def scrape(url: str, headers: dict | None = None) -> dict:
    """GET /metrics, parsed: {(sample name, ((label, value), ...)): value}."""
    status, head, body = request(url, "GET", "/metrics", headers=headers)
    assert status == 200 and head["Content-Type"].startswith("text/plain; version="), (status, head)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def test_health_checks_and_metrics_count_what_happened(model, cfg):
    """One live stream, one upload, a bad upload, a bad start message, a held connection: /metrics counts each (audio
    seconds and words by kind, REST answers by status, refusals by reason, one lag sample per partial and final event,
    the tick histogram, open connections and streams); /healthz and /readyz answer 200."""
    live, up = waves()[0], waves()[1]
    ref_live, ref_up = alone(model, cfg, live), alone(model, cfg, up)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        health, ready = request(url, "GET", "/healthz"), request(url, "GET", "/readyz")
        res = run(stream(url, blocks_of(live, 100)))
        good, bad = upload(url, up), upload(url, np.zeros(0, np.float32))
        errors = run(raw(url, {"type": "start", "sample_rate": 5, "format": "int16"}))

        async def held():
            async with connect(url) as ws:
                await ws.send(json.dumps(F32))
                assert json.loads(await ws.recv())["type"] == "ready"
                while not server.conns:
                    await asyncio.sleep(0.01)
                return await asyncio.to_thread(scrape, url)

        during = run(held())
        while server.conns or server.metrics.connections._value.get():
            run(asyncio.sleep(0.05))
        after = scrape(url)
    assert (health[0], health[2], ready[0], ready[2]) == (200, b"ok\n", 200, b"ready\n")
    check_matches(res, ref_live)
    assert good[0] == 200 and bad[0] == 400 and errors[-1]["type"] == "error"
    m = lambda name, **labels: after[(name, tuple(sorted(labels.items())))]  # noqa: E731
    assert m("asr_stream_audio_seconds_total", kind="live") == pytest.approx(len(live) / 16000)
    assert m("asr_stream_audio_seconds_total", kind="upload") == pytest.approx(len(up) / 16000)
    assert m("asr_stream_words_total", kind="live") == len(ref_live.words)
    assert m("asr_stream_words_total", kind="upload") == len(ref_up.words)
    assert m("asr_stream_rest_requests_total", status="200") == 1 and m("asr_stream_rest_requests_total", status="400") == 1
    assert m("asr_stream_refusals_total", reason="protocol") == 1 and m("asr_stream_refusals_total", reason="busy") == 0
    lagged = [e for e in res.events if e["type"] in ("partial", "final")]
    assert m("asr_stream_lag_seconds_count") == len(lagged)
    assert m("asr_stream_lag_seconds_sum") == pytest.approx(sum(e["lag_ms"] for e in lagged) / 1000)
    assert m("asr_stream_tick_seconds_count") == server.ticks > 0
    assert during[("asr_stream_connections", ())] == 1 and during[("asr_stream_streams", (("kind", "live"),))] == 1
    assert m("asr_stream_connections") == 0 and m("asr_stream_streams", kind="live") == 0


def test_with_keys_metrics_need_one_and_health_checks_do_not(model, cfg):
    server = with_keys(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1)), KEYS)
    with running(server) as url:
        refused = request(url, "GET", "/metrics")
        checks = [request(url, "GET", "/healthz")[0], request(url, "GET", "/readyz")[0]]
        upload(url, waves()[0])  # no key: 401, counted
        got = scrape(url, {"Authorization": f"Bearer {KEYS[0]}"})
    assert refused[0] == 401 and checks == [200, 200]
    assert got[("asr_stream_refusals_total", (("reason", "unauthorized"),))] == 2
    assert got[("asr_stream_rest_requests_total", (("status", "401"),))] == 1


def shutdown_when(server: Server, event_ok):
    """An on_event callback that asks ``server`` (in its own thread) to shut down at the first event ``event_ok``
    accepts, as SIGTERM does."""
    asked = []

    def on_event(ev) -> None:
        if not asked and event_ok(ev):
            asked.append(ev)
            server.engine_task.get_loop().call_soon_threadsafe(server.request_shutdown)

    return on_event


def close_code(url: str, blocks, on_event) -> tuple:
    """Stream like ``asr_stream.serving.client.stream`` (float32, 16 kHz), keeping every event and the close code."""
    from websockets.exceptions import ConnectionClosed

    async def go():
        evs = []
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps(F32))

            async def send():
                for b in blocks:
                    await ws.send(b.astype("<f4").tobytes())
                    await asyncio.sleep(0.1)  # a microphone's pace: the drain comes while audio is still being sent
                await ws.send(json.dumps({"type": "end"}))

            sender = asyncio.create_task(send())
            try:
                async for m in ws:
                    evs.append(json.loads(m))
                    on_event(evs[-1])
            except ConnectionClosed:
                pass
            sender.cancel()
            return evs, ws.close_code

    return run(go())


def test_shutdown_ends_streams_at_a_pause_and_keeps_every_word(model, cfg):
    """SIGTERM (Server.request_shutdown) while a client streams 30 s with pauses: the listener closes (new connections
    are refused; /readyz on a connection already open says 503 draining), the stream goes on to the end of its
    utterance, then gets a non-fatal error saying the server is going away, every word of the audio read, eof, close
    1001; serve() returns."""
    import http.client
    import socket
    from urllib.parse import urlparse

    w = np.concatenate([waves()[1]] * 7)  # 31 s: speech, pauses
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, drain_s=60.0))
    with running(server) as url:
        u = urlparse(url)
        probe = http.client.HTTPConnection(u.hostname, u.port, timeout=60)  # a load balancer's kept-alive connection
        probe.request("GET", "/readyz")
        before = probe.getresponse().read()
        shutdown, seen = shutdown_when(server, lambda ev: ev["type"] == "partial"), {}

        def on_event(ev) -> None:
            shutdown(ev)
            if ev["type"] == "error" and not seen:  # the drain is under way (this stream is still open)
                probe.request("GET", "/readyz")
                r = probe.getresponse()
                seen["readyz"] = (r.status, r.read())
                try:
                    socket.create_connection((u.hostname, u.port), timeout=10).close()
                except ConnectionRefusedError:
                    seen["refused"] = True

        evs, code = close_code(url, blocks_of(w, 100), on_event)
        probe.close()
    assert before == b"ready\n" and seen == {"readyz": (503, b"draining\n"), "refused": True}
    kinds = [e["type"] for e in evs]
    assert kinds[0] == "ready" and kinds[-2:] == ["error", "eof"] and kinds.count("error") == 1, kinds
    gone, eof = evs[-2], evs[-1]
    assert gone["fatal"] is False and gone["reason"].startswith("the server is going away (shutting down): audio after ")
    assert "(at a pause)" in gone["reason"] and code == 1001
    read = int(eof["audio_ms"] * 16)
    assert 0 < read < len(w)  # the drain cut the stream; everything read was decoded and sent:
    ref = alone(model, cfg, w[:read])
    words = [x for e in evs if e["type"] == "partial" for x in e["words"]]
    assert [(x["text"], x["time_ms"]) for x in words] == [(x.text, round(x.time_ms, 1)) for x in ref.words]
    assert [f["text"] for f in evs if f["type"] == "final"] == [s.text for s in ref.segments]
    assert server.metrics.refusals.labels("draining")._value.get() == 0 and not server.conns


def test_shutdown_cuts_a_stream_without_pauses_at_drain_s_and_refuses_uploads(model, cfg):
    """A stream without a pause is ended at --drain-s with every word of what was read; an upload still being decoded
    at --drain-s gets 503 shutting_down (its engine held until the drain is under way)."""
    from ..conftest import noise_audio

    w = noise_audio(30.0, seed=5)  # no pause anywhere
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, drain_s=1.0))
    with running(server) as url:
        evs, code = close_code(url, blocks_of(w, 100), shutdown_when(server, lambda ev: ev["type"] == "partial"))
    kinds = [e["type"] for e in evs]
    assert code == 1001 and kinds[-1] == "eof" and kinds.count("error") == 1
    gone = evs[kinds.index("error")]  # then the open utterance's last words and its final (rule end), then eof
    assert "(no pause within --drain-s 1 s)" in gone["reason"] and kinds[-2] == "final" and evs[-2]["rule"] == "end"
    read = int(evs[-1]["audio_ms"] * 16)
    assert 0 < read < len(w)
    words = [x["text"] for e in evs if e["type"] == "partial" for x in e["words"]]
    assert words == [x.text for x in alone(model, cfg, w[:read]).words]

    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, drain_s=0.0))
    hold, tick = threading.Event(), server._tick
    server._tick = lambda *a: (hold.wait(60), tick(*a))[1]  # the upload cannot finish before the drain
    with running(server) as url:
        async def both():
            task = asyncio.create_task(asyncio.to_thread(upload, url, waves()[1]))
            while not server.conns:
                await asyncio.sleep(0.01)
            server.engine_task.get_loop().call_soon_threadsafe(server.request_shutdown)
            reply = await task
            hold.set()
            return reply

        status, headers, body = run(both())
    assert status == 503 and headers["Retry-After"] == "1"
    assert json.loads(body)["error"]["code"] == "shutting_down"


def test_sigterm_drains_the_real_server_and_exits_0():
    """`asr-stream serve` (the bundled model) sent SIGTERM while a client streams: the client gets the going-away
    error and its eof, the server says what it did on stderr and exits 0."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from asr_stream.audio.io import load_audio

    repo = Path(__file__).resolve().parents[2]
    sample = load_audio(repo / "asr_stream" / "assets" / "sample.wav")
    w = np.concatenate([np.concatenate([sample, np.zeros(8000, np.float32)])] * 20)  # a minute, with pauses
    p = subprocess.Popen([sys.executable, "-m", "asr_stream", "serve", "--port", "0", "--drain-s", "30"], cwd=repo,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = p.stderr.readline()
        while line and "serving on" not in line:
            line = p.stderr.readline()
        url = re.search(r"ws://\S+/", line).group(0)
        sent = []

        def on_event(ev) -> None:
            if ev["type"] == "partial" and not sent:
                sent.append(p.send_signal(signal.SIGTERM))

        evs, code = close_code(url, blocks_of(w, 100), on_event)
        rc = p.wait(timeout=120)
        said = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, said
    assert code == 1001 and evs[-1]["type"] == "eof" and 0 < evs[-1]["audio_ms"] < len(w) / 16
    assert [e["reason"].split(":")[0] for e in evs if e["type"] == "error"] == ["the server is going away (shutting down)"]
    assert "asr-stream: going away: 1 stream(s) end at their next pause" in said and "asr-stream: stopped\n" in said
