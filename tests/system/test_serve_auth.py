"""``asr-stream serve`` with API keys and TLS (issue 30): every WebSocket and REST request presents a key (Bearer header,
or ``?api_key=`` for the browser page), compared in constant time; 401 without detail otherwise; the project's
clients send the key of ``ASR_STREAM_API_KEY`` or ``--api-key-file``. TLS with a self-signed certificate made here."""

from __future__ import annotations

import functools
import http.client
import json
import ssl
import subprocess
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from asr_stream.serving.client import ServerError, blocks_of, stream
from asr_stream.server import Server, ServerConfig
from asr_stream.serving.auth import ENV, Keys, client_key, read_keys, server_keys
from asr_stream.serving.tls import server_context

from ..sysdeps import needs
from .test_serve import ENDPOINT, alone, cfg, check_matches, model, run, running, waves  # noqa: F401
from .test_serve_rest import form, wav

KEYS = ["k1-0123456789abcdef", "k2-fedcba9876543210"]


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    u = urlparse(url)
    if context is not None:
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=120, context=context)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def upload(url: str, x: np.ndarray, headers: dict | None = None, path: str = "/v1/audio/transcriptions", **kw):
    return request(url, "POST", path, form({"model": "m"}, ("a.wav", wav(x))),
                   {"Content-Type": "multipart/form-data; boundary=asr-stream-test-boundary", **(headers or {})}, **kw)


def with_keys(server: Server, keys: list[str], **kw) -> Server:
    server.serve = functools.partial(server.serve, keys=Keys(keys), **kw)
    return server


def test_keys_from_files_and_the_variable(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# team keys\nk1-0123456789abcdef\n\n  k2-fedcba9876543210  \n")
    assert read_keys(f) == KEYS
    assert len(server_keys(str(f), {ENV: "k3"})) == 3 and len(server_keys(None, {})) == 0
    assert client_key(str(f), {ENV: "k3"}) == KEYS[0] and client_key(None, {ENV: " k3 "}) == "k3"
    assert client_key(None, {}) is None
    (tmp_path / "empty").write_text("# nothing\n\n")
    for bad, why in ((tmp_path / "empty", "no key in it"), (tmp_path / "none", "cannot read it")):
        with pytest.raises(ValueError, match=why):
            read_keys(bad)
    (tmp_path / "spaces").write_text("two words\n")
    with pytest.raises(ValueError, match="key 1 has spaces"):
        read_keys(tmp_path / "spaces")
    keys = Keys(KEYS)
    assert keys.allows({"Authorization": f"Bearer {KEYS[1]}"}, {}) and keys.allows({}, {"api_key": KEYS[0]})
    assert keys.allows({"Authorization": f"bearer {KEYS[0]}"}, {})
    for headers, query in (({}, {}), ({"Authorization": "Bearer k1"}, {}), ({"Authorization": f"Basic {KEYS[0]}"}, {}),
                           ({"Authorization": "Bearer "}, {}), ({}, {"api_key": KEYS[0] + "x"}),
                           ({"Authorization": "Bearer wrong"}, {"api_key": KEYS[0]})):  # a wrong Bearer is not rescued
        assert not keys.allows(headers, query), (headers, query)
    assert Keys([]).allows({}, {})


def test_every_websocket_and_rest_request_needs_a_key(model, cfg, tmp_path, monkeypatch, capsys):
    """No key, a wrong key, a key of another scheme: the WebSocket handshake and the upload get 401, the same answer
    each time; the right key as a Bearer header or ?api_key= is served. The page needs none. `asr-stream client` and
    `mic --url` send ASR_STREAM_API_KEY or the first key of --api-key-file, and say what a 401 means."""
    from asr_stream.audio.sources import FAKE_MIC_ENV
    from asr_stream.cli import main

    w = waves()[0]
    ref = alone(model, cfg, w)
    path = tmp_path / "w.wav"
    sf.write(path, w, 16000, subtype="FLOAT")
    keyfile = tmp_path / "keys"
    keyfile.write_text(KEYS[1] + "\n")
    monkeypatch.delenv(ENV, raising=False)
    server = with_keys(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2)), KEYS)
    with running(server) as url:
        async def handshake(extra: str = "", headers=None):
            try:
                async with connect(url + extra, additional_headers=headers):
                    return 101
            except InvalidStatus as e:
                return e.response.status_code, e.response.headers.get("WWW-Authenticate"), e.response.body

        refused = [run(handshake()), run(handshake(headers={"Authorization": "Bearer nope"})),
                   run(handshake("?api_key=nope")), run(handshake(headers={"Authorization": f"Basic {KEYS[0]}"}))]
        served = [run(stream(url, blocks_of(w, 100), api_key=KEYS[0])),
                  run(stream(url + f"?api_key={KEYS[1]}", blocks_of(w, 100)))]
        rest = [upload(url, w), upload(url, w, {"Authorization": "Bearer nope"}),
                upload(url, w, {"Authorization": f"Bearer {KEYS[1]}"}),
                upload(url, w, path=f"/v1/audio/transcriptions?api_key={KEYS[0]}")]
        page = request(url, "GET", "/")
        with pytest.raises(ServerError, match="HTTP 401"):
            run(stream(url, blocks_of(w, 100)))

        with pytest.raises(SystemExit) as e:  # the CLI: no key
            main(["client", str(path), "--url", url])
        assert e.value.code == 1
        assert "HTTP 401 (a missing or wrong API key: ASR_STREAM_API_KEY or --api-key-file)" in capsys.readouterr().err
        main(["client", str(path), "--url", url, "--api-key-file", str(keyfile)])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {ref.text}"
        monkeypatch.setenv(ENV, KEYS[0])
        main(["client", str(path), "--url", url])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {ref.text}"
        monkeypatch.setenv(FAKE_MIC_ENV, str(path))
        main(["mic", "--url", url])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {ref.text}"
        monkeypatch.delenv(ENV)
        main(["mic", "--url", url, "--api-key-file", str(keyfile)])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {ref.text}"
    assert refused == [(401, "Bearer", refused[0][2])] * 4
    for res in served:
        check_matches(res, ref)
    assert [r[0] for r in rest] == [401, 401, 200, 200]
    assert json.loads(rest[0][2]) == json.loads(rest[1][2]) == {
        "error": {"message": "unauthorized", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    assert json.loads(rest[2][2])["text"] == json.loads(rest[3][2])["text"] == ref.text
    assert page[0] == 200 and b"api_key" in page[2]  # the page passes ?api_key= on to its WebSocket
    with pytest.raises(SystemExit) as e:
        main(["mic", "--api-key-file", str(keyfile)])
    assert e.value.code == 2 and "--api-key-file is the key of a server: give --url too" in capsys.readouterr().err


def test_the_openai_client_sends_its_key(model, cfg, tmp_path):
    openai = pytest.importorskip("openai", reason="the openai package is not installed: pip install -e '.[openai]' "
                                                  "(make install installs it)")
    w = waves()[0]
    path = tmp_path / "w.wav"
    path.write_bytes(wav(w))
    with running(with_keys(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1)), KEYS)) as url:
        base = url.replace("ws://", "http://") + "v1"
        with path.open("rb") as f:
            text = openai.OpenAI(base_url=base, api_key=KEYS[0], max_retries=0).audio.transcriptions.create(
                model="m", file=f).text
        with pytest.raises(openai.AuthenticationError) as e, path.open("rb") as f:
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).audio.transcriptions.create(model="m", file=f)
    assert text == alone(model, cfg, w).text and e.value.status_code == 401


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


@needs("openssl")
def test_tls_with_a_self_signed_certificate(model, cfg, certificate, tmp_path, monkeypatch, capsys):
    """--certfile/--keyfile: wss:// and https:// with the certificate trusted (SSL_CERT_FILE for the CLI client);
    plain ws:// and an untrusting client are refused; a key without its certificate is a one-line error."""
    from asr_stream.cli import main

    cert, key = certificate
    w = waves()[0]
    ref = alone(model, cfg, w)
    path = tmp_path / "w.wav"
    sf.write(path, w, 16000, subtype="FLOAT")
    trust = ssl.create_default_context(cafile=cert)
    server = with_keys(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2)), [], ssl_context=server_context(cert, key))
    with running(server) as url:
        wss = url.replace("ws://", "wss://")
        async def secure():
            return await stream(wss, blocks_of(w, 100))

        monkeypatch.setenv("SSL_CERT_FILE", cert)  # what a client does to trust a private CA
        res = run(secure())
        main(["client", str(path), "--url", wss])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {ref.text}"
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"):
            run(secure())
        with pytest.raises(ServerError, match="cannot connect"):
            run(stream(url, blocks_of(w, 100)))  # plain ws:// to a TLS port
        rest = upload(url, w, context=trust)
    check_matches(res, ref)
    assert rest[0] == 200 and json.loads(rest[2])["text"] == ref.text
    with pytest.raises(ValueError, match="--certfile and --keyfile go together"):
        server_context(None, key)
    with pytest.raises(ValueError, match="--keyfile .*: no such file"):
        server_context(cert, str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="--certfile"):
        server_context(key, key)  # a key where the certificate should be
