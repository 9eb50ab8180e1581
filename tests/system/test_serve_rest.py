"""``POST /v1/audio/transcriptions`` on the serve port (issue 30): an OpenAI-style upload decoded by the batched engine.

Requests are made with the standard library's ``http.client`` (bodies built by hand, so that broken ones can be
sent); the official ``openai`` client is tried where it is installed. Nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf

from asr_stream.serving.client import blocks_of, stream
from asr_stream.server import Server, ServerConfig
from asr_stream.transcript import render, to_srt, word_spans

from .test_serve import ENDPOINT, alone, cfg, check_matches, model, run, running, waves  # noqa: F401
from .test_serve_fairness import flood_wave, spy_feed

BOUNDARY = "asr-stream-test-boundary"


def form(fields: dict, file: tuple[str, bytes] | None = None, close: bool = True) -> bytes:
    """A multipart/form-data body; ``close=False`` leaves out the closing boundary (a truncated body)."""
    out = b""
    for name, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{v}\r\n").encode()
    if file is not None:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file[0]}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + file[1] + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def post(url: str, body: bytes, content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
         headers: dict | None = None) -> tuple[int, dict, bytes]:
    """POST ``body`` to the server's transcription endpoint: (status, headers, body)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": content_type, **(headers or {})})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def wav(x: np.ndarray, rate: int = 16000, subtype: str = "FLOAT", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def transcribed(model, cfg, x: np.ndarray) -> dict:
    """What ``transcribe`` computes for ``x`` (its session code): the text and segments of its result."""
    ref = alone(model, cfg, x)
    return {"text": ref.text, "segments": [s.as_dict() for s in ref.segments]}


def test_upload_answers_as_transcribe_in_every_format(model, cfg, tmp_path, monkeypatch, capsys):
    """One recording with several utterances, uploaded in each response_format: json's text and warnings, text / srt /
    vtt, verbose_json's segments, are what `asr-stream transcribe --format txt srt vtt --json` writes for the same file
    with the same model and endpoint rules; verbose_json's words are the subtitle writer's word times."""
    import asr_stream.cli as cli
    from asr_stream.cli import options

    x = np.concatenate(waves()[:2])
    path = tmp_path / "speech.wav"
    path.write_bytes(wav(x))
    monkeypatch.setattr(options, "load_model", lambda *a, **kw: model)  # the test model, the test's endpoint rules
    monkeypatch.setattr(options.EndpointOptions, "config", lambda self: ENDPOINT)
    cli.main(["transcribe", str(path), "--mode", "group", "--k", "2", "--format", "txt", "srt", "vtt",
              "--output-dir", str(tmp_path / "out"), "--json", str(tmp_path / "t.json")])
    capsys.readouterr()
    (ref,) = json.loads((tmp_path / "t.json").read_text())["files"]
    files = {fmt: (tmp_path / "out" / f"speech.{fmt}").read_text() for fmt in ("txt", "srt", "vtt")}
    assert len(ref["segments"]) >= 3 and ref["text"] and ref["warnings"]  # (noise: the repetition warning, at least)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        got = {fmt: post(url, form({"model": "whisper-1", "response_format": fmt}, ("speech.wav", path.read_bytes())))
               for fmt in ("json", "text", "srt", "vtt", "verbose_json")}
        default = post(url, form({"model": "any", "language": "en", "prompt": " "}, ("s.wav", path.read_bytes())))
    for fmt, (status, headers, body) in got.items():
        assert status == 200, (fmt, body)
    assert json.loads(got["json"][2]) == {"text": ref["text"], "warnings": ref["warnings"]}
    assert json.loads(default[2])["text"] == ref["text"]
    assert got["text"][2].decode() == files["txt"] == render(ref, "txt")
    assert got["srt"][2].decode() == files["srt"] and got["vtt"][2].decode() == files["vtt"]
    assert got["vtt"][1]["Content-Type"].startswith("text/vtt")
    assert json.loads(got["srt"][1]["X-ASR-Stream-Warnings"]) == ref["warnings"]
    v = json.loads(got["verbose_json"][2])
    assert v["text"] == ref["text"] and v["language"] == "english" and v["duration"] == pytest.approx(len(x) / 16000)
    assert v["warnings"] == ref["warnings"]
    assert [(s["id"], s["start"], s["end"], s["text"], s["rule"]) for s in v["segments"]] == \
        [(s["index"], round(s["start_ms"] / 1000, 3), round(s["end_ms"] / 1000, 3), s["text"], s["rule"])
         for s in ref["segments"]]
    spans = [w for s in ref["segments"] if s["text"] for w in word_spans(s)]
    assert [(w["word"], w["start"], w["end"]) for w in v["words"]] == \
        [(t, round(a / 1000, 3), round(b / 1000, 3)) for t, a, b in spans]
    assert " ".join(w["word"] for w in v["words"]) == ref["text"]
    assert not server.conns and sorted(server.free) == [0, 1]  # the upload's slot is free again


def test_upload_beside_a_live_stream_takes_a_share_per_tick(model, cfg):
    """A 16 s upload and a live WebSocket client paced in real time at once: the engine never gives the upload (or
    anyone) more than one share of audio per tick, so the live stream is decoded beside it, not after it; both get
    exactly their lone transcripts."""
    up, live = flood_wave(), waves()[2]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_backlog_s=1.0))
    fed = spy_feed(server)
    with running(server) as url:
        async def both():
            task = asyncio.create_task(asyncio.to_thread(post, url, form({"model": "m"}, ("up.wav", wav(up)))))
            while not server.conns:
                await asyncio.sleep(0.01)
            res = await stream(url, blocks_of(live, 100), block_ms=100)
            return await task, res

        (status, _, body), res = run(both())
    assert status == 200, body
    assert json.loads(body)["text"] == alone(model, cfg, up).text
    check_matches(res, alone(model, cfg, live))
    assert max(n for t in fed for n in t.values()) <= server.share
    ticks_with_both = [t for t in fed if len(t) == 2]
    assert ticks_with_both  # the live stream was decoded while the upload was under way


def test_bad_uploads_get_openai_errors_and_leave_the_server_serving(model, cfg):
    """Each bad request gets its status and OpenAI's error shape with a one-line message; afterwards every slot is
    free and a good upload and a live stream are served."""
    x = waves()[0]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_upload_mb=0.2))
    good = ("a.wav", wav(x[:16000], subtype="PCM_16"))  # 32 kB
    big = ("big.wav", wav(np.zeros(80000, np.float32)))  # 320 kB
    with running(server) as url:
        replies = {
            "not_multipart": post(url, b'{"model": "m"}', "application/json"),
            "no_file": post(url, form({"model": "m"})),
            "no_model": post(url, form({}, good)),
            "format": post(url, form({"model": "m", "response_format": "docx"}, good)),
            "language": post(url, form({"model": "m", "language": "de"}, good)),
            "temperature": post(url, form({"model": "m", "temperature": "0.7"}, good)),
            "unknown": post(url, form({"model": "m", "voice": "x"}, good)),
            "stream": post(url, form({"model": "m", "stream": "true"}, good)),
            "not_audio": post(url, form({"model": "m"}, ("notes.wav", b"this is not audio at all" * 40))),
            "empty": post(url, form({"model": "m"}, ("e.wav", b""))),
            "truncated": post(url, form({"model": "m"}, good, close=False)),
            "cut_mid_file": post(url, form({"model": "m"}, good)[:-5000]),
            "too_big": post(url, form({"model": "m"}, big)),
        }
        after = post(url, form({"model": "m"}, ("x.wav", wav(x, subtype="PCM_16"))))  # 125 kB
        live = run(stream(url, blocks_of(waves()[1], 100)))
    expect = {"not_multipart": (400, None, "invalid_content_type"), "no_file": (400, "file", "missing_parameter"),
              "no_model": (400, "model", "missing_parameter"), "format": (400, "response_format", "invalid_value"),
              "language": (400, "language", "unsupported_language"), "temperature": (400, "temperature", "invalid_value"),
              "unknown": (400, "voice", "unknown_parameter"), "stream": (400, "stream", "unsupported_value"),
              "not_audio": (400, "file", "invalid_audio"), "empty": (400, "file", "invalid_audio"),
              "truncated": (400, None, "invalid_multipart"), "cut_mid_file": (400, None, "invalid_multipart"),
              "too_big": (413, "file", "file_too_large")}
    for name, (status, headers, body) in replies.items():
        err = json.loads(body)["error"]
        assert (status, err["param"], err["code"]) == expect[name], (name, status, body)
        assert err["type"] == "invalid_request_error" and err["message"] and "\n" not in err["message"], (name, err)
    assert "notes.wav" in json.loads(replies["not_audio"][2])["error"]["message"]
    assert "asr-stream-upload" not in replies["not_audio"][2].decode()  # the server's temporary path is not shown
    assert "--max-upload-mb" in json.loads(replies["too_big"][2])["error"]["message"]
    x16 = sf.read(io.BytesIO(wav(x, subtype="PCM_16")), dtype="float32")[0]
    assert after[0] == 200 and json.loads(after[2])["text"] == alone(model, cfg, x16).text
    check_matches(live, alone(model, cfg, waves()[1]))
    assert not server.conns and sorted(server.free) == [0, 1]


def test_busy_off_and_too_long_uploads(model, cfg):
    """Every slot held by a live stream: an upload gets 429 with Retry-After at once, and is served once the stream
    has gone; --max-uploads 0: 404; audio at or over --max-session-s: 400 before any decoding."""
    from websockets.asyncio.client import connect

    x = waves()[2]
    body = form({"model": "m"}, ("a.wav", wav(x)))
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1))
    with running(server) as url:
        async def hold_the_slot():
            async with connect(url) as ws:
                await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "float32"}))
                assert json.loads(await ws.recv())["type"] == "ready"
                return await asyncio.to_thread(post, url, body)

        busy = run(hold_the_slot())
        while server.conns or not server.free:
            run(asyncio.sleep(0.05))
        served = post(url, body)
    assert busy[0] == 429 and busy[1]["Retry-After"] == "1" and json.loads(busy[2])["error"]["code"] == "busy"
    assert served[0] == 200 and json.loads(served[2])["text"] == alone(model, cfg, x).text
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_uploads=0))) as url:
        off = post(url, body)
    assert off[0] == 404 and "--max-uploads 0" in json.loads(off[2])["error"]["message"]
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_session_s=1.0))) as url:
        long = post(url, body)
    err = json.loads(long[2])["error"]
    assert long[0] == 400 and err["code"] == "audio_too_long" and "--max-session-s" in err["message"]


def test_the_openai_client_works_against_the_server(model, cfg, tmp_path):
    """The official client, pointed at the server with base_url: verbose_json, srt, and a BadRequestError."""
    openai = pytest.importorskip("openai", reason="the openai package is not installed: pip install -e '.[openai]' "
                                                  "(make install installs it)")
    x = np.concatenate(waves()[:2])
    ref = transcribed(model, cfg, x)
    path = tmp_path / "speech.wav"
    path.write_bytes(wav(x))
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1))) as url:
        client = openai.OpenAI(base_url=url.replace("ws://", "http://") + "v1", api_key="none", max_retries=0)
        with path.open("rb") as f:
            v = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                   timestamp_granularities=["word", "segment"])
        with path.open("rb") as f:
            srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
        with path.open("rb") as f:
            plain = client.audio.transcriptions.create(model="whisper-1", file=f)
        with pytest.raises(openai.BadRequestError) as e, path.open("rb") as f:
            client.audio.transcriptions.create(model="whisper-1", file=f, language="fr")
    assert v.text == ref["text"] == plain.text
    assert [s.text for s in v.segments] == [s["text"] for s in ref["segments"]]
    assert [w.word for w in v.words] == ref["text"].split()
    assert srt == to_srt(ref["segments"])
    assert e.value.status_code == 400 and "English only" in str(e.value)


def test_slow_bodies_are_bounded(model, cfg):
    """Uploads whose bodies arrive slowly hold no engine slot, but each has a temporary file: at most 2 x --max-uploads
    are received at once (here from two addresses: one address may have --max-uploads), one more gets 429 before its
    body is read; once the slow clients leave, uploads are served."""
    import socket
    from urllib.parse import urlparse

    x = waves()[2]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_uploads=1))
    with running(server) as url:
        u = urlparse(url)
        body = form({"model": "m"}, ("a.wav", wav(x)))
        slow = []
        for address in ("127.0.0.3", "127.0.0.4"):  # headers and the first half of the body, then nothing
            s = socket.create_connection((u.hostname, u.port), timeout=30, source_address=(address, 0))
            s.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                       f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + body[: len(body) // 2])
            slow.append(s)
        while server.receiving < 2:
            run(asyncio.sleep(0.05))
        third = post(url, body)
        for s in slow:
            s.close()
        while server.receiving:
            run(asyncio.sleep(0.05))
        after = post(url, body)
    assert third[0] == 429 and "2 x --max-uploads" in json.loads(third[2])["error"]["message"]
    assert after[0] == 200 and json.loads(after[2])["text"] == alone(model, cfg, x).text


def test_a_body_that_stops_arriving_is_abandoned(model, cfg, monkeypatch):
    """A client that sends half its body and then nothing (the socket left open) gets 408 after BODY_IDLE_S of silence
    (shortened here) instead of holding its place for ever."""
    import socket
    from urllib.parse import urlparse

    import asr_stream.serving.rest as rest

    monkeypatch.setattr(rest, "BODY_IDLE_S", 0.5)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_uploads=1))
    body = form({"model": "m"}, ("a.wav", wav(waves()[2])))
    with running(server) as url:
        u = urlparse(url)
        with socket.create_connection((u.hostname, u.port), timeout=60) as s:
            s.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                       f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + body[: len(body) // 2])
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += s.recv(65536)
        while server.receiving:
            run(asyncio.sleep(0.05))
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
