"""``asr-stream serve`` in operation (issue 30): health checks, Prometheus metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from asr_stream.client import blocks_of, stream
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
