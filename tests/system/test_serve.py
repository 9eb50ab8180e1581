"""``asr-stream serve`` over loopback: the protocol, concurrent clients against a lone SegmentedSession, faults.

The server runs in a thread with its own event loop; clients are ``asr_stream.serving.client.stream`` or raw
``websockets`` connections. Counts are bounded and every wait has a timeout; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from contextlib import contextmanager

import numpy as np
import pytest

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from asr_stream.serving.client import ServerError, blocks_of, stream  # noqa: E402
from asr_stream.server import Server, ServerConfig  # noqa: E402
from asr_stream.streaming import StreamingSession  # noqa: E402
from asr_stream.streaming.defaults import stream_config_for  # noqa: E402
from asr_stream.streaming.segment import EndpointConfig, SegmentedSession  # noqa: E402

from ..conftest import noise_audio  # noqa: E402

# rule 3 (the model's EOS at a pause) reads the model's state one batched round later than a lone session does
# (see SegmentedStreams), so it is off here: rules 1 and 2 cut every stream exactly where SegmentedSession cuts
ENDPOINT = EndpointConfig(eos_silence_ms=60_000)
TIMEOUT = 120  # s: a bound on any one client's whole exchange, never a measurement


def quiet(seconds: float, seed: int) -> np.ndarray:
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


def waves() -> list[np.ndarray]:
    """Four streams of 2-5 s with pauses: several segments each, all different."""
    return [np.concatenate([quiet(0.3, 1), noise_audio(1.5, 1), quiet(0.6, 2), noise_audio(1.0, 2)]),
            np.concatenate([noise_audio(2.0, 4), quiet(0.9, 4), noise_audio(1.5, 5)]),
            np.concatenate([quiet(0.8, 6), noise_audio(1.2, 6)]),
            np.concatenate([noise_audio(1.0, 7), quiet(0.5, 8), noise_audio(1.0, 8), quiet(0.5, 9), noise_audio(0.8, 9)])]


@pytest.fixture(scope="module")
def model(make_model):
    return make_model(160)


@pytest.fixture(scope="module")
def cfg(model):
    return stream_config_for(model, mode="group", k=2)


def alone(model, cfg, wave: np.ndarray) -> SegmentedSession:
    s = SegmentedSession(StreamingSession(model, cfg), ENDPOINT)
    for j in range(0, len(wave), 5120):
        s.push(wave[j : j + 5120])
    s.finish()
    return s


@contextmanager
def running(server: Server):
    """Serve on a free loopback port in a thread; yields the ws:// URL; stops the server afterwards (if it has not
    stopped by itself, as a drain does: then its loop is already closed)."""
    loop = asyncio.new_event_loop()
    ports: queue.Queue = queue.Queue()
    box: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        box["task"] = loop.create_task(server.serve("127.0.0.1", 0, ports.put))
        try:
            loop.run_until_complete(box["task"])
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
        loop.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    port = ports.get(timeout=60)
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        try:
            loop.call_soon_threadsafe(box["task"].cancel)
        except RuntimeError:  # the loop has closed: the server stopped by itself
            pass
        t.join(30)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def as_pairs(words) -> list[tuple[str, float]]:
    return [(w["text"], round(w["time_ms"], 1)) if isinstance(w, dict) else (w.text, round(w.time_ms, 1)) for w in words]


def check_matches(res, ref: SegmentedSession) -> None:
    """A client's events carry exactly the lone session's words, segments and word indices, in protocol order."""
    assert res.events[0]["type"] == "ready" and res.events[-1]["type"] == "eof"
    assert [e["type"] for e in res.events[1:-1]] and {e["type"] for e in res.events[1:-1]} <= {"partial", "final"}
    assert as_pairs(res.words) == as_pairs(ref.words)
    assert [w["index"] for w in res.words] == list(range(len(ref.words)))
    assert [(f["index"], f["text"], f["start_ms"], f["end_ms"], f["rule"]) for f in res.finals] == \
        [(s.index, s.text, s.start_ms, s.end_ms, s.rule) for s in ref.segments]
    assert [w for f in res.finals for w in f["words"]] == res.words  # finals repeat the partials' words, indices too
    seen = 0
    for e in res.events:  # a final comes after every partial word of its segment
        if e["type"] == "partial":
            seen += len(e["words"])
        elif e["type"] == "final" and e["words"]:
            assert e["words"][-1]["index"] < seen
    assert res.events[-1]["text"] == ref.text
    assert all(e["lag_ms"] >= 0 for e in res.events if "lag_ms" in e)


def test_protocol_round_trip(model, cfg):
    """ready -> partial words (append-only, indexed) -> one final per segment -> eof; int16 at 8 kHz is resampled."""
    w = waves()[0]
    ref = alone(model, cfg, w)
    assert len(ref.segments) == 2 and ref.words
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        res = run(stream(url, blocks_of(w, 100)))
        check_matches(res, ref)
        ready = res.events[0]
        assert (ready["k"], ready["mode"], ready["phi"], ready["sample_rate"]) == (2, "group", cfg.phi, 16000)
        assert res.events[-1]["audio_ms"] == pytest.approx(len(w) / 16)

        async def int16_8k():
            import librosa

            x8 = librosa.resample(w, orig_sr=16000, target_sr=8000)
            pcm = (np.clip(x8, -1, 1) * 32767).astype("<i2")
            async with connect(url) as ws:
                await ws.send(json.dumps({"type": "start", "sample_rate": 8000, "format": "int16", "k": 3}))
                evs = [json.loads(await ws.recv())]
                for j in range(0, len(pcm), 800):
                    await ws.send(pcm[j : j + 800].tobytes())
                await ws.send(json.dumps({"type": "end"}))
                async for m in ws:
                    evs.append(json.loads(m))
                return evs

        evs = run(int16_8k())
        assert evs[0]["type"] == "ready" and evs[0]["k"] == 3 and evs[-1]["type"] == "eof"
        assert evs[-1]["audio_ms"] == pytest.approx(len(w) / 16, abs=20)  # resampled to 16 kHz, nothing lost
        assert not [e for e in evs if e["type"] == "error"]


def test_concurrent_clients_each_get_their_lone_transcript(model, cfg):
    """Four clients at once, each sending its own stream in its own frame size: each gets exactly what a lone
    SegmentedSession gives for its stream (words, times, segments), and nothing of anybody else's."""
    ws_ = waves()
    refs = [alone(model, cfg, w) for w in ws_]
    assert len({r.text for r in refs}) == 4 and all(r.words for r in refs)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=4))
    with running(server) as url:
        async def all_at_once():
            return await asyncio.gather(*[stream(url, blocks_of(w, ms)) for w, ms in zip(ws_, (100, 37, 250, 1000))])

        results = run(all_at_once())
    for res, ref in zip(results, refs):
        check_matches(res, ref)
    assert server.sessions_served == 4


def test_per_client_scheduler_gives_the_same_transcripts(model, cfg):
    """The baseline (one SegmentedSession per client) and the batched engine agree."""
    ws_ = waves()[:2]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2), scheduler="per-client")
    with running(server) as url:
        async def both():
            return await asyncio.gather(*[stream(url, blocks_of(w, 100)) for w in ws_])

        results = run(both())
    for res, w in zip(results, ws_):
        check_matches(res, alone(model, cfg, w))


async def raw(url: str, start, frames=(), end: bool = True) -> list[dict]:
    """Send ``start`` (a dict or raw text/bytes), ``frames``, maybe the end message; return every event until close."""
    evs = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps(start) if isinstance(start, dict) else start)
        try:
            for f in frames:
                await ws.send(f)
            if end:
                await ws.send(json.dumps({"type": "end"}))
        except Exception:  # noqa: BLE001 - the server closed on an error: its event is read below
            pass
        try:
            async for m in ws:
                evs.append(json.loads(m))
        except ConnectionClosed:  # closed with an error code after the error event
            pass
    return evs


def test_faults_get_their_error_and_leave_other_clients_intact(model, cfg):
    """Busy, malformed JSON, a WAV header as PCM, a wrong sample format, an oversize frame and a client that
    vanishes mid-stream: each gets its one-line error (or is cleaned up), while two clients streaming at the
    same time get exactly their lone transcripts; the vanished client's slot serves a new client afterwards."""
    ws_ = waves()
    refs = [alone(model, cfg, w) for w in ws_[:3]]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=3, max_frame_bytes=16384))
    f32 = {"type": "start", "sample_rate": 16000, "format": "float32"}

    with running(server) as url:
        async def scenario():
            hold = asyncio.Event()

            async def healthy(w):
                # blocks only released once the faults have been tried: the two streams are live throughout
                def blocks():
                    yield w[:1600]
                    asyncio.run_coroutine_threadsafe(hold.wait(), loop).result(TIMEOUT)
                    yield from blocks_of(w[1600:], 100)

                return await stream(url, blocks())

            loop = asyncio.get_running_loop()
            good = [asyncio.create_task(healthy(w)) for w in ws_[:2]]

            # a client that vanishes mid-stream (TCP abort, no close frame) while holding the third slot
            vanish = await connect(url)
            await vanish.send(json.dumps(f32))
            assert json.loads(await vanish.recv())["type"] == "ready"
            await vanish.send(ws_[3][:4000].tobytes())  # 16000 bytes: under the frame limit
            while server.sessions_served < 3:
                await asyncio.sleep(0.05)
            busy = await raw(url, f32)  # all three slots taken
            vanish.transport.abort()
            while not server.free:  # the engine releases the vanished client's slot
                await asyncio.sleep(0.05)

            errors = {
                "json": await raw(url, "{not json", end=False),
                "wav": await raw(url, f32, [b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(64)]),
                "format": await raw(url, {"type": "start", "sample_rate": 16000, "format": "int8"}),
                "int16_as_float32": await raw(url, f32, [(ws_[3][:4000] * 32767).astype("<i2").tobytes()]),
                "oversize": await raw(url, f32, [bytes(32768)]),
                "rate": await raw(url, {"type": "start", "sample_rate": 100, "format": "int16"}),
                "binary_first": await raw(url, b"\x00\x01" * 100),
            }
            hold.set()
            results = await asyncio.gather(*good)
            # the vanished client's slot is free again: a new client gets its transcript
            after = await stream(url, blocks_of(ws_[2], 100))
            return busy, errors, results, after

        busy, errors, results, after = run(scenario())

    assert [e["type"] for e in busy] == ["error"] and busy[0]["reason"].startswith("busy"), (busy, [r.events[:3] for r in results])
    expect = {"json": "malformed JSON", "wav": "WAV header", "format": "format must be 'int16' or 'float32'",
              "int16_as_float32": "is the audio int16?", "oversize": "over the limit", "rate": "sample_rate must be",
              "binary_first": "expected a JSON start message"}
    for name, evs in errors.items():
        errs = [e for e in evs if e["type"] == "error"]
        assert len(errs) == 1 and expect[name] in errs[0]["reason"] and "\n" not in errs[0]["reason"], (name, evs)
        assert evs[-1]["type"] == "error" and errs[0]["fatal"], (name, evs)
    for res, ref in zip(results, refs):
        check_matches(res, ref)
    check_matches(after, refs[2])
    assert not server.conns and sorted(server.free) == [0, 1, 2]  # every slot released


def test_session_limit_and_idle_timeout(model, cfg):
    """At max_session_s the rest of the audio is ignored (a non-fatal error), what came is decoded to eof; a client
    that stops sending is closed with an idle error."""
    w = waves()[1]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_session_s=2.0, idle_timeout_s=1.0))
    ref = alone(model, cfg, w[:32000])
    with running(server) as url:
        res = run(stream(url, blocks_of(w, 100)))
        idle = run(raw(url, {"type": "start", "sample_rate": 16000, "format": "int16"}, end=False))
    errs = res.errors
    assert len(errs) == 1 and "session length limit" in errs[0]["reason"] and errs[0]["fatal"] is False
    assert res.events[-1]["type"] == "eof" and res.events[-1]["audio_ms"] == 2000
    assert as_pairs(res.words) == as_pairs(ref.words) and res.events[-1]["text"] == ref.text
    assert [e["type"] for e in idle] == ["ready", "error"] and idle[1]["reason"].startswith("idle")


def test_slow_reader_is_disconnected_without_stalling_the_engine(model, cfg):
    """A client whose socket takes nothing: its bounded queue overflows, the engine's _send never waits, and the
    connection is aborted (slot released)."""
    from asr_stream.server import _Conn

    class Stuck:
        """A websocket whose send never completes (a reader that never reads)."""

        def __init__(self):
            self.sent, self.aborted = 0, False
            self.transport = self

        async def send(self, _):
            self.sent += 1
            await asyncio.Event().wait()

        async def close(self, *a):
            await asyncio.Event().wait()

        def abort(self):
            self.aborted = True

    async def scenario():
        server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, send_queue=2))
        server._work = asyncio.Event()
        ws = Stuck()
        c = _Conn(id=0, slot=0, k=None, queue=asyncio.Queue(2), ws=ws)
        server.conns[0] = c
        c.sender = asyncio.create_task(server._sender(ws, c))
        for j in range(6):  # synchronous: the engine never awaits a client
            server._send(c, {"type": "partial", "words": [], "lag_ms": j})
        for _ in range(100):
            if ws.aborted:
                break
            await asyncio.sleep(0.05)
        return ws, c, server

    ws, c, server = run(scenario())
    assert ws.aborted and c.gone and c.overflow and server._work.is_set()
    assert ws.sent == 1  # the first event went to the stuck socket; the rest overflowed the queue of 2


def test_client_and_remote_mic_commands(model, cfg, tmp_path, capsys, monkeypatch):
    """`asr-stream client FILE... --url` prints what transcribe prints (words, then `final: ...` per file) and writes
    --json; a bad file is one error line, the next file is transcribed, exit 1; `mic --url` streams the (fake)
    microphone to the server."""
    import soundfile as sf

    from asr_stream.audio.sources import FAKE_MIC_ENV
    from asr_stream.cli import main

    ws_ = waves()[:2]
    paths = []
    for j, w in enumerate(ws_):
        paths.append(tmp_path / f"w{j}.wav")
        sf.write(paths[-1], w, 16000, subtype="FLOAT")
    refs = [alone(model, cfg, w) for w in ws_]
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    out = tmp_path / "r.json"
    with running(server) as url:
        main(["client", *map(str, paths), "--url", url, "--json", str(out)])
        printed = capsys.readouterr().out.splitlines()
        assert printed == [f"{paths[0]}: {refs[0].text} ", f"final: {refs[0].text}",
                           f"{paths[1]}: {refs[1].text} ", f"final: {refs[1].text}"]
        r = json.loads(out.read_text())
        assert [f["text"] for f in r["files"]] == [ref.text for ref in refs] and not r["failed"]
        assert [f["text"] for f in r["files"][1]["finals"]] == [s.text for s in refs[1].segments]

        # the audio checks transcribe makes: an 8 kHz file is transcribed, with transcribe's warning
        import librosa

        sf.write(tmp_path / "tel.wav", librosa.resample(ws_[0], orig_sr=16000, target_sr=8000), 8000)
        main(["client", str(tmp_path / "tel.wav"), "--url", url])
        assert "tel.wav: sampled at 8000 Hz: the model hears only up to 4000 Hz" in capsys.readouterr().err

        (tmp_path / "bad.wav").write_bytes(b"not audio")  # one error line; the next file goes on (as transcribe)
        with pytest.raises(SystemExit) as e:
            main(["client", str(tmp_path / "bad.wav"), str(paths[1]), "--url", url, "--json", str(out)])
        assert e.value.code == 1
        printed = capsys.readouterr()
        assert printed.out.splitlines() == [f"{paths[1]}: {refs[1].text} ", f"final: {refs[1].text}"]
        assert printed.err.splitlines()[0].startswith(f"asr-stream: error: {tmp_path / 'bad.wav'}: ")
        assert printed.err.splitlines()[-1] == "asr-stream: 1 of 2 file(s) failed"
        r = json.loads(out.read_text())
        assert [f["file"] for f in r["failed"]] == [str(tmp_path / "bad.wav")] and [f["text"] for f in r["files"]] == [refs[1].text]

        monkeypatch.setenv(FAKE_MIC_ENV, str(paths[0]))  # paced in real time, like a microphone
        main(["mic", "--url", url, "--output", str(tmp_path / "mic.txt")])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {refs[0].text}"
        assert (tmp_path / "mic.txt").read_text() == refs[0].text + "\n"
        with pytest.raises(SystemExit) as e:  # a local model's option with a remote model: refused, not ignored
            main(["mic", "--url", url, "--encoder-dtype", "bfloat16"])
        assert e.value.code == 2 and "--encoder-dtype sets a local model's encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the server is gone
        main(["client", str(paths[0]), "--url", url])
    assert e.value.code == 1 and "cannot connect" in capsys.readouterr().err


def test_server_runs_an_adaptive_policy_like_lone_sessions(make_model):
    """--policy reaches every served stream: with the ctc policy, each client gets what a lone session under that
    policy gives (the batched engine runs the same policy code)."""
    model = make_model(160, ctc_embed=True)
    # k_min 0: below this test model's only training k (3), so the policy's schedule can differ from wait-k 3's
    cfg = stream_config_for(model, mode="group", k=3, policy="ctc", policy_args={"threshold": 0.6, "k_max": 4, "k_min": 0})
    ws_ = waves()[:2]
    refs = [alone(model, cfg, w) for w in ws_]
    assert all(r.words for r in refs)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        async def both():
            return await asyncio.gather(*[stream(url, blocks_of(w, ms)) for w, ms in zip(ws_, (100, 250))])

        results = run(both())
    for res, ref in zip(results, refs):
        check_matches(res, ref)
    wk = alone(model, stream_config_for(model, mode="group", k=3), ws_[0])
    assert as_pairs(wk.words) != as_pairs(refs[0].words)  # the policy changed what was written, or when


def test_engine_thread_counts(model, cfg):
    """The engine sets its own thread counts: --decoder-threads in the thread that ticks (OpenMP counts are per
    thread; torch's default of every core made the per-client baseline miss real time with 16 clients), --threads
    on the encoder. Bad counts are a one-line error."""
    import torch

    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="--threads must be a whole number >= 1"):
            ServerConfig(threads=bad)
    with pytest.raises(ValueError, match="--decoder-threads must be"):
        ServerConfig(decoder_threads=0)
    before = torch.get_num_threads()
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, threads=before + 1, decoder_threads=before + 2))
    try:
        assert model.encoder.threads == before + 1
        seen = []

        def tick() -> None:
            server._tick([], [])
            seen.append(torch.get_num_threads())

        t = threading.Thread(target=tick)
        t.start()
        t.join(60)
        assert seen == [before + 2] and torch.get_num_threads() == before  # set in the engine's thread only
    finally:
        model.encoder.threads = None


def test_client_sigterm_keeps_what_the_server_sent(model, cfg, tmp_path):
    """`client` stopped by SIGTERM (or Ctrl-C) once words are coming: --json keeps the words received for the file
    in progress (complete: false); exit status 143 for SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import soundfile as sf

    wav, out, stdout = tmp_path / "long.wav", tmp_path / "r.json", tmp_path / "stdout.txt"
    sf.write(wav, noise_audio(30.0, seed=3), 16000, subtype="FLOAT")
    repo = Path(__file__).resolve().parents[2]
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))) as url, stdout.open("w") as fo:
        p = subprocess.Popen([sys.executable, "-m", "asr_stream", "client", str(wav), "--url", url, "--realtime",
                              "--json", str(out)], stdout=fo, stderr=subprocess.DEVNULL, cwd=repo,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            end, heard = time.monotonic() + TIMEOUT, []
            while time.monotonic() < end and p.poll() is None and len(heard) < 2:  # words have come (paced audio)
                printed = stdout.read_text()
                heard = printed[: printed.rfind(" ") + 1].split()[1:]  # words end with a space: none cut off
                time.sleep(0.1)
            assert len(heard) >= 2, stdout.read_text()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
    assert rc == 143
    (f,) = json.loads(out.read_text())["files"]
    assert f["file"] == str(wav) and f["complete"] is False
    assert f["text"].split()[: len(heard)] == heard


def test_remote_mic_connects_again_after_a_lost_connection(model, cfg, tmp_path, capsys, monkeypatch):
    """`mic --url --retries 1`: the server's side of the connection is closed (no error event, as when a replica dies)
    right after the first final has been sent; the microphone goes on over a new connection from the end of that final
    (the audio since was kept), and what is printed and written is the transcript of the whole stream, the one a lone
    session gives. Without --retries the same loss is one error line (exit 2); --retries without --url is refused."""
    import soundfile as sf

    from asr_stream.audio.sources import FAKE_MIC_ENV
    from asr_stream.cli import main
    from asr_stream.serving.web import Socket

    w = waves()[0]
    ref = alone(model, cfg, w)
    assert len(ref.segments) >= 2
    sf.write(tmp_path / "mic.wav", w, 16000, subtype="FLOAT")
    monkeypatch.setenv(FAKE_MIC_ENV, str(tmp_path / "mic.wav"))  # paced in real time, like a microphone
    cuts: list[float] = []
    send = Socket.send

    async def cut_after_the_first_final(self, text: str) -> None:
        await send(self, text)
        ev = json.loads(text)
        if ev["type"] == "final" and not cuts:
            cuts.append(ev["end_ms"])
            self._request.transport.close()  # what was sent goes out, then the TCP connection ends: no close frame

    monkeypatch.setattr(Socket, "send", cut_after_the_first_final)
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        main(["mic", "--url", url, "--retries", "1", "--output", str(tmp_path / "mic.txt")])
        printed = capsys.readouterr()
        served = server.sessions_served
        cuts.clear()
        with pytest.raises(SystemExit) as e:
            main(["mic", "--url", url])
        without = capsys.readouterr().err
    assert served == 2 and printed.out.splitlines()[-1] == f"final: {ref.text}"
    assert (tmp_path / "mic.txt").read_text() == ref.text + "\n"
    assert (f"asr-stream: error: microphone: the server closed the connection before eof; connecting again, from "
            f"{ref.segments[0].end_ms / 1000:.1f} s") in printed.err
    assert e.value.code == 2 and "the server closed the connection before eof" in without
    with pytest.raises(SystemExit) as e:
        main(["mic", "--retries", "1"])
    assert e.value.code == 2 and "--retries connects to a server again: give --url too" in capsys.readouterr().err
