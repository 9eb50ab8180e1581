"""``asr-stream serve``: one client must never stall the others (issue 30, first part).

A share of audio per stream per engine tick, back-pressure on a connection whose waiting audio passes
``max_backlog_s``, a gone connection's audio dropped at once, the audio-based idle rule and the per-address cap.
The engine is driven tick by tick (``Server.tick``) and connections are fakes whose ``recv`` is counted, with an
injectable clock: nothing here depends on timing or machine load. Over real sockets, only outcomes are asserted.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK  # noqa: E402

from asr_stream.serving.client import ServerError, blocks_of, stream  # noqa: E402
from asr_stream.serving.fairness import AddressCount, AudioRate, take_share  # noqa: E402
from asr_stream.server import Server, ServerConfig, _Conn  # noqa: E402

from .test_serve import ENDPOINT, alone, as_pairs, cfg, check_matches, model, run, running, waves  # noqa: E402,F401

F32 = {"type": "start", "sample_rate": 16000, "format": "float32"}


def flood_wave() -> np.ndarray:
    """About 16 s with pauses (several segments): the backlog of a client that sends faster than real time."""
    return np.concatenate(waves())


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeWS:
    """A websocket whose ``recv`` returns scripted messages, counted, each after advancing ``clock`` by its delay;
    when the script is out it waits for :meth:`close` (then ``recv`` raises ConnectionClosed, as the library does)."""

    def __init__(self, script, clock: Clock | None = None, address: str = "10.0.0.1") -> None:
        self.script = iter(script)  # (seconds the clock advances before it arrives, message)
        self.clock, self.remote_address, self.transport = clock, (address, 40000), self
        self.recvs, self.sent = 0, []
        self.closed = asyncio.Event()

    async def recv(self):
        self.recvs += 1
        await asyncio.sleep(0)
        item = next(self.script, None) if not self.closed.is_set() else None
        if item is None:
            await self.closed.wait()
            raise ConnectionClosedOK(None, None)
        if self.clock is not None:
            self.clock.t += item[0]
        return item[1]

    async def send(self, msg) -> None:
        if self.closed.is_set():
            raise ConnectionClosedOK(None, None)
        self.sent.append(json.loads(msg))

    async def close(self, *_) -> None:
        self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def abort(self) -> None:
        self.closed.set()


async def settle(n: int = 3000) -> None:
    """Let every ready task run (fake sockets never wait for the network): a bounded number of loop turns."""
    for _ in range(n):
        await asyncio.sleep(0)


def frames(x: np.ndarray, ms: int = 100):
    return [(0.0, b.tobytes()) for b in blocks_of(x.astype("<f4"), ms)]


def spy_feed(server: Server) -> list[dict]:
    """Record the samples the engine is given per slot, one dict per tick."""
    fed: list[dict] = []
    feed, tick = server.streams.feed, server._tick

    def counted_feed(i, x):
        fed[-1][i] = fed[-1].get(i, 0) + x.shape[0]
        feed(i, x)

    def counted_tick(releases, jobs):
        fed.append({})
        return tick(releases, jobs)

    server.streams.feed, server._tick = counted_feed, counted_tick
    return fed


def conn(server: Server, slot: int) -> _Conn:
    """A connection in ``slot`` as the handler makes it, without a socket (its events stay in its queue)."""
    c = _Conn(id=slot, slot=slot, k=None, queue=asyncio.Queue(100_000))
    server.conns[slot] = c
    server.free.remove(slot)
    return c


def words_in(c: _Conn) -> list:
    out = []
    while not c.queue.empty():
        ev = c.queue.get_nowait()
        out += ev["words"] if ev["type"] == "partial" else []
        if ev["type"] == "eof":
            c.eof = ev
    return out


def test_take_share_keeps_order_and_splits_frames():
    inbox = [np.arange(0, 3), np.arange(3, 8), np.arange(8, 10)]
    out, n = take_share(inbox, 4)
    assert n == 4 and np.concatenate(out).tolist() == [0, 1, 2, 3] and np.concatenate(inbox).tolist() == list(range(4, 10))
    out, n = take_share(inbox, 100)
    assert n == 6 and np.concatenate(out).tolist() == list(range(4, 10)) and inbox == []


def test_a_flood_is_decoded_a_share_per_tick_beside_a_live_stream(model, cfg):
    """A client whose whole 16 s arrived at once and a live client sending one tick's audio per tick: every tick
    gives the flooder at most one share and the live stream everything it sent, so the live stream's words after
    every tick are exactly those it gets alone, whatever the flooder's backlog; the flooder's own transcript is the
    one it gets alone (a lone SegmentedSession)."""
    live_wave, flood = waves()[2], flood_wave()
    per_tick = int(model.chunk_ms * 16)  # real time: one tick (the model's chunk) of audio per tick

    async def drive(with_flood: bool):
        server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_backlog_s=60.0))
        server._work = asyncio.Event()
        fed = spy_feed(server)
        live = conn(server, 1)
        if with_flood:
            fl = conn(server, 0)
            for _, b in frames(flood):
                server._audio(fl, np.frombuffer(b, "<f4"), 1 << 40)
            fl.ended = True
        seen, j = [], 0
        while not live.finished or (with_flood and not fl.finished):
            if j < len(live_wave):
                server._audio(live, live_wave[j : j + per_tick], 1 << 40)
                j += per_tick
            live.ended = j >= len(live_wave)
            await server.tick()
            assert not live.inbox, "the live stream's audio waited beyond the tick after it arrived"
            seen.append(as_pairs(words_in(live)))
            assert len(seen) < 10_000
        return server, fed, seen, (words_in(fl), fl) if with_flood else None

    server, fed, beside, (flood_words, fl) = run(drive(True))
    _, _, solo, _ = run(drive(False))
    assert beside[: len(solo)] == solo and not any(beside[len(solo):])  # word for word, tick for tick
    share = server.share
    assert share == 2 * per_tick
    assert max(t.get(0, 0) for t in fed) == share and all(t.get(0, 0) <= share for t in fed)
    assert sum(t.get(0, 0) for t in fed) == len(flood)  # all of it, a share at a time
    ref = alone(model, cfg, flood)
    assert len(ref.segments) >= 4 and as_pairs(flood_words) == as_pairs(ref.words) and fl.eof["text"] == ref.text


def _back_pressure(model, cfg, close_when_paused: bool):
    """A client that sends 100 ms frames without end into a server whose engine does not tick; then one tick."""
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_backlog_s=1.0))
    frame = 1600  # samples per 100 ms frame
    ws = FakeWS([(0.0, json.dumps(F32))] + frames(flood_wave()))

    async def scenario():
        server._work = asyncio.Event()
        fed = spy_feed(server)
        task = asyncio.create_task(server.handler(ws))
        await settle()
        c = server.conns[0]
        paused = (ws.recvs, c.pending)
        await settle()
        still = (ws.recvs, c.pending)
        if close_when_paused:
            await ws.close()
            await settle()
            gone = (c.gone, c.inbox, c.pending, list(server.free), list(server._releases))
            await server.tick()
            await asyncio.wait_for(task, 10)
            return paused, still, gone, fed, server
        await server.tick()  # takes one share: reading resumes until the backlog is over the limit again
        await settle()
        resumed = (ws.recvs, c.pending)
        await ws.close()
        await asyncio.wait_for(task, 10)
        return paused, still, resumed, fed, server

    return run(scenario()), frame


def test_a_connection_over_its_backlog_is_not_read(model, cfg):
    """Frames are read until the waiting audio passes max_backlog_s (1 s: 11 frames of 100 ms), then not at all
    (recv is not called: the library's queue fills and TCP pushes back); a tick takes one share (320 ms) and reading
    resumes for just as long as it takes to pass the limit again (3 frames). Memory: at most the limit plus a frame."""
    ((paused, still, resumed, fed, server), frame) = _back_pressure(model, cfg, close_when_paused=False)
    assert paused == (1 + 11, 11 * frame) and still == paused
    assert fed == [{0: server.share}]
    assert resumed == (1 + 14, 14 * frame - server.share)


def test_a_closed_connection_is_dropped_at_once(model, cfg):
    """A client that leaves while over its backlog: its waiting audio is dropped at once (not decoded, memory
    freed), its slot is free, and the next tick releases its stream without feeding it anything."""
    ((paused, still, gone, fed, server), frame) = _back_pressure(model, cfg, close_when_paused=True)
    assert paused == (12, 11 * frame) and still == paused
    assert gone == (True, [], 0, [0], [0])
    assert fed == [{}] and server.streams.done(0) and not server.conns


def test_idle_rule_closes_a_trickle_and_keeps_a_slow_but_real_stream(model, cfg):
    """start, then 2 bytes every 20 s: closed at the first frame after 30 s with an error saying why (the old timeout
    only counted silence). One second of audio every 20 s meets the 1 s per 30 s minimum and is not closed."""
    clock = Clock()
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, idle_timeout_s=30.0, min_audio_s=1.0), clock=clock)
    trickle = FakeWS([(0.0, json.dumps({**F32, "format": "int16"}))] + [(20.0, b"\x01\x00")] * 10
                     + [(0.0, json.dumps({"type": "end"}))], clock)
    second = (0.3 * np.ones(16000)).astype("<f4").tobytes()
    steady = FakeWS([(0.0, json.dumps(F32))] + [(20.0, second)] * 6 + [(0.0, json.dumps({"type": "end"}))], clock)

    async def scenario(ws):
        server._work = asyncio.Event()
        task = asyncio.create_task(server.handler(ws))
        await settle()
        for _ in range(200):  # the steady client: its eof needs the engine
            if task.done():
                return ws
            await server.tick()
            await settle(50)
        task.cancel()
        raise AssertionError(f"the connection is still open after {ws.recvs} reads: {ws.sent}")

    trickle = run(scenario(trickle))
    assert trickle.recvs == 3 and [e["type"] for e in trickle.sent] == ["ready", "error"]
    assert trickle.sent[1]["reason"] == ("idle: less than 0.01 s of audio received in the last 30 s, less than the "
                                         "minimum of 1 s (stream audio continuously, silence included)")
    steady = run(scenario(steady))
    assert steady.recvs == 8 and steady.sent[-1]["type"] == "eof" and steady.sent[-1]["audio_ms"] == 6000
    assert not [e for e in steady.sent if e["type"] == "error"]


def test_after_the_session_limit_the_rest_is_read_and_dropped(model, cfg):
    """A client that sends 3 s into a 1 s session limit: the server keeps reading what it sends (and drops it), so the
    client's close frame is seen after eof instead of waiting out the close timeout behind a full queue."""
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_session_s=1.0))
    ws = FakeWS([(0.0, json.dumps(F32))] + frames(waves()[1][:48000]))

    async def scenario():
        server._work = asyncio.Event()
        task = asyncio.create_task(server.handler(ws))
        for _ in range(200):
            await settle(50)
            if task.done():
                return
            await server.tick()
        task.cancel()

    run(scenario())
    assert ws.sent[-1]["type"] == "eof" and ws.sent[-1]["audio_ms"] == 1000
    assert ws.recvs == 1 + 30 + 1  # start, every frame, then the read that sees the close


def test_audio_rate_window_slides():
    """The rule on its own: 20 s of audio in the first 20 s, then nothing: closed 30 s after the audio stopped
    (within one bucket of the window, on the keeping side); a connection never read by the server is not idle."""
    r = AudioRate(1.0, 30.0, now=0.0)
    for t in range(20):
        r.add(t + 1.0, (t + 1) * 16000)
    assert r.why(49.0) is None and r.why(49.5) is None
    assert 49.5 < r.deadline() <= 50.0 + 30.0 / 64
    assert r.why(r.deadline()).startswith("idle: ")
    r.restart(100.0, 20 * 16000)  # e.g. resumed after back-pressure
    assert r.why(129.9) is None and r.why(130.0) == "idle: no audio received for 30 s"
    with pytest.raises(ValueError):
        AudioRate(2.0, 1.0, now=0.0)
    cap = AddressCount(2)
    assert cap.admit("a") and cap.admit("a") and not cap.admit("a") and cap.admit("b")
    cap.leave("a")
    assert cap.admit("a") and cap.open == {"a": 2, "b": 1}
    with pytest.raises(ValueError, match="--min-audio-s"):
        ServerConfig(min_audio_s=40.0)
    with pytest.raises(ValueError, match="--max-per-address"):
        ServerConfig(max_per_address=-1)


def test_idle_trickle_over_a_real_socket(model, cfg):
    """The same rule over loopback: 2 bytes every 0.1 s, with a 1 s window, is closed with the idle error."""
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, idle_timeout_s=1.0, min_audio_s=0.5))

    async def trickle(url):
        evs = []
        async with connect(url) as ws:
            await ws.send(json.dumps({**F32, "format": "int16"}))

            async def read():
                try:
                    async for m in ws:
                        evs.append(json.loads(m))
                except ConnectionClosed:  # closed with an error code after the error event
                    pass

            reader = asyncio.create_task(read())
            for _ in range(100):  # 10 s at most: the old rule never closes it, and gets the end below
                if reader.done():
                    break
                try:
                    await ws.send(b"\x01\x00")
                except ConnectionClosed:
                    break
                await asyncio.sleep(0.1)
            else:
                await ws.send(json.dumps({"type": "end"}))
            await reader
        return evs

    with running(server) as url:
        evs = run(trickle(url))
    assert [e["type"] for e in evs] == ["ready", "error"] and evs[1]["reason"].startswith("idle: ")
    assert "in the last 1 s, less than the minimum of 0.5 s" in evs[1]["reason"]


def test_per_address_cap_refuses_the_ninth(model, cfg):
    """Eight open connections from 127.0.0.1 (the default cap): the ninth gets a busy error naming the limit at once,
    before any start message (`asr-stream client` says it as one line); another address is served; once one of the eight leaves, 127.0.0.1 is served again."""
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=12))
    assert server.limits.max_per_address == 8

    async def scenario(url):
        held = []
        for _ in range(8):
            ws = await connect(url)
            await ws.send(json.dumps(F32))
            assert json.loads(await ws.recv())["type"] == "ready"
            held.append(ws)
        refused = []
        async with connect(url) as ninth:  # no start message sent: refused on connecting
            try:
                async for m in ninth:
                    refused.append(json.loads(m))
            except ConnectionClosed as e:  # 1013: try again later
                refused.append(e.rcvd.code)
        try:  # the project's client says why, one line (the refusal may close before its start message is sent)
            await stream(url, blocks_of(waves()[2], 100))
        except ServerError as e:
            refused.append(str(e))
        async with connect(url, local_addr=("127.0.0.2", 0)) as ws:  # another address (all of 127/8 is loopback)
            await ws.send(json.dumps(F32))
            other = json.loads(await ws.recv())
        await held[0].close()
        while server.addresses.open.get("127.0.0.1", 0) > 7:
            await asyncio.sleep(0.05)
        again = await stream(url, blocks_of(waves()[2], 100))
        for ws in held[1:]:
            await ws.close()
        return refused, other, again

    with running(server) as url:
        refused, other, again = run(scenario(url))
    assert refused == [{"type": "error", "fatal": True, "reason": "busy: 8 connections from 127.0.0.1 are open, the most "
                                                                  "one address may have (--max-per-address)"}, 1013,
                       "busy: 8 connections from 127.0.0.1 are open, the most one address may have (--max-per-address)"]
    assert other["type"] == "ready"
    check_matches(again, alone(model, cfg, waves()[2]))


def test_flooder_beside_live_client_over_sockets(model, cfg):
    """A client sending 16 s as fast as the socket takes it, beside a live one, over loopback: the server never holds
    more of the flooder's audio than max_backlog_s plus one frame, no stream is given more than a share per tick, and
    both get exactly their lone transcripts."""
    server = Server(model, cfg, ENDPOINT, ServerConfig(max_clients=2, max_backlog_s=0.5))
    peak = {}
    audio = server._audio

    def watched(c, x, limit):
        audio(c, x, limit)
        peak[c.id] = max(peak.get(c.id, 0), c.pending)

    server._audio = watched
    fed = spy_feed(server)
    flood, live = flood_wave(), waves()[2]

    async def both(url):
        fl = asyncio.create_task(stream(url, blocks_of(flood, 100)))
        while not server.conns:
            await asyncio.sleep(0.01)
        return await fl, await stream(url, blocks_of(live, 100), block_ms=100)

    with running(server) as url:
        got_flood, got_live = run(both(url))
    check_matches(got_flood, alone(model, cfg, flood))
    check_matches(got_live, alone(model, cfg, live))
    assert max(peak.values()) <= 0.5 * 16000 + 1600
    assert max(n for t in fed for n in t.values()) <= server.share


def test_client_says_what_the_server_cut_and_streams_files_from_disk(model, cfg, tmp_path, capsys, monkeypatch):
    """`asr-stream client`: a session cut at the server's --max-session-s is said on stderr and in --json (warnings,
    complete: false, cut_short) and the exit status is 1, not a shorter transcript with exit 0. Files are read block by
    block as they are sent (the second 10 s block is read once the first block's 100 frames have gone): a file whose
    third block is bad (NaN) still gets the words of its first 20 s, then one error line and exit 1, like transcribe."""
    import soundfile as sf

    import asr_stream.serving.client
    from asr_stream.audio.io import AudioFile
    from asr_stream.cli import main

    from ..conftest import noise_audio

    w = waves()[1]
    long = np.concatenate([noise_audio(10.0, seed=11), noise_audio(10.0, seed=12), noise_audio(2.0, seed=13)])
    long[330_000] = np.nan  # in the file's third 10 s block
    paths = {"cut": tmp_path / "cut.wav", "nan": tmp_path / "nan.wav"}
    sf.write(paths["cut"], w, 16000, subtype="FLOAT")
    sf.write(paths["nan"], long, 16000, subtype="FLOAT")
    out = tmp_path / "r.json"
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1, max_session_s=2.0))) as url:
        with pytest.raises(SystemExit) as e:
            main(["client", str(paths["cut"]), "--url", url, "--json", str(out)])
    err = capsys.readouterr().err.splitlines()
    ref = alone(model, cfg, w[:32000])
    reason = ("session length limit of 2 s of audio reached: the rest is ignored, decoding what was received")
    assert e.value.code == 1
    assert err[0] == f"asr-stream: warning: {paths['cut']}: server: {reason}"  # (then the audio's own warnings)
    assert err[-1] == "asr-stream: 0 of 1 file(s) failed, 1 cut short by the server"
    r = json.loads(out.read_text())
    (f,) = r["files"]
    assert f["text"] == ref.text and f["complete"] is False and f["warnings"][0] == f"server: {reason}"
    assert r["cut_short"] == [{"file": str(paths["cut"]), "reason": reason}] and r["failed"] == []

    sent, read_at = [0], []  # frames handed to the socket; how many had gone when each block was read from disk
    blocks, send = AudioFile.blocks, asr_stream.serving.client.stream

    def spy_blocks(self):
        for b in blocks(self):
            read_at.append(sent[0])
            yield b

    def spy_stream(url, frames, *a, **kw):
        def counted():
            for x in frames:
                sent[0] += 1
                yield x

        return send(url, counted(), *a, **kw)

    monkeypatch.setattr(AudioFile, "blocks", spy_blocks)
    monkeypatch.setattr(asr_stream.serving.client, "stream", spy_stream)
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1))) as url:
        with pytest.raises(SystemExit) as e:
            main(["client", str(paths["nan"]), "--url", url, "--json", str(out)])
    printed = capsys.readouterr()
    assert read_at == [0, 100]  # (frames of the default 100 ms: 10 s per block)
    head = alone(model, cfg, long[:320_000])
    assert head.words and e.value.code == 1
    assert printed.out.splitlines()[-1] == f"final: {head.text}"
    bad = f"{paths['nan']}: audio has NaN/inf samples (at 20.0 s)"
    assert printed.err.splitlines()[-2:] == [f"asr-stream: error: {bad}", "asr-stream: 1 of 1 file(s) failed"]
    r = json.loads(out.read_text())
    assert r["files"][0]["text"] == head.text and r["files"][0]["complete"] is False
    assert r["failed"] == [{"file": str(paths["nan"]), "error": bad}]
