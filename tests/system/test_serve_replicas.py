"""Replicas of ``asr-stream serve`` behind HAProxy (issue 30): deploy/haproxy.cfg and asr_stream/serving/replicas.py."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from asr_stream.audio.io import load_audio
from asr_stream.serving.client import ServerError, blocks_of, stream, stream_resuming
from asr_stream.serving.replicas import HAPROXY_CFG, haproxy_config, start

from ..sysdeps import needs
from .test_serve_auth import upload

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # s: a bound on the whole exchange, never a measurement


def test_config_rewrite_keeps_the_settings_and_lists_every_replica():
    """The repository's config, rewritten for 3 replicas: one server line each (the first line's options), the bind
    address replaced, every other line as it was; a config of another shape is a one-line error."""
    text = HAPROXY_CFG.read_text()
    out = haproxy_config(text, "127.0.0.1:9000", ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"])
    servers = [line.split() for line in out.splitlines() if line.split()[:1] == ["server"]]
    assert servers == [["server", f"r{i}", f"127.0.0.1:900{i}", "check"] for i in (1, 2, 3)]
    assert [line.split() for line in out.splitlines() if line.split()[:1] == ["bind"]] == [["bind", "127.0.0.1:9000"]]
    rest = lambda t: [x for x in t.splitlines() if x.split()[:1] not in (["server"], ["bind"])]  # noqa: E731
    assert rest(out) == rest(text)
    settings = [line.split() for line in out.splitlines() if not line.lstrip().startswith("#")]
    assert ["balance", "leastconn"] in settings and ["option", "httpchk", "GET", "/readyz"] in settings
    assert ["timeout", "tunnel", "15m"] in settings
    with pytest.raises(ValueError, match="one `bind` line and at least one `server` line"):
        haproxy_config("defaults\n    mode http\n", "127.0.0.1:1", ["127.0.0.1:2"])
    with pytest.raises(ValueError, match="addresses are chosen here"):
        start(2, serve_args=["--port", "9000"])


def test_restarts_back_off_and_a_crash_loop_is_left_down():
    """The rule on its own: exits in a row wait 1, 2, 4, 8 s before the next start (at most max_s), the 5th leaves the
    replica down; a replica that ran longer than window_s starts a fresh count."""
    from asr_stream.serving.replicas import Backoff, Restarts

    b = Backoff(Restarts(first_s=1.0, max_s=6.0, limit=5, window_s=300.0))
    assert [b.exited(t) for t in (0.0, 2.0, 5.0, 10.0)] == [1.0, 2.0, 4.0, 6.0]
    assert b.exited(20.0) is None
    b = Backoff(Restarts(first_s=1.0, max_s=30.0, limit=3, window_s=60.0))
    assert [b.exited(0.0), b.exited(2.0), b.exited(100.0), b.exited(101.0), b.exited(102.0)] == [1.0, 2.0, 1.0, 2.0, None]
    with pytest.raises(ValueError, match="--restart-limit must be a whole number >= 1"):
        Restarts(limit=0)


class FakeDeployment:
    """Processes standing in for replicas and the balancer: r1 exits at once each time it is started (a crash loop),
    r2 and the balancer run until killed. ``restart`` starts r1 again as Deployment.restart does (it fails: the process
    exits before it serves)."""

    def __init__(self) -> None:
        import subprocess
        import sys
        from types import SimpleNamespace

        self.run = lambda code: subprocess.Popen([sys.executable, "-c", code])
        self.replicas = [SimpleNamespace(index=1, process=self.run("raise SystemExit(3)"), url="ws://127.0.0.1:1/"),
                         SimpleNamespace(index=2, process=self.run("import time; time.sleep(600)"), url="ws://127.0.0.1:2/")]
        self.balancer = self.run("import time; time.sleep(600)")
        self.starts = 0

    def restart(self, r) -> None:
        self.starts += 1
        r.process = self.run("raise SystemExit(3)")
        r.process.wait()
        raise ValueError(f"replica r{r.index} exited with status 3 (its stderr is above, prefixed [r{r.index}])")

    def stop(self) -> None:
        for p in [r.process for r in self.replicas] + [self.balancer]:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_a_replica_in_a_crash_loop_is_left_down_and_the_others_serve_on():
    """`python -m asr_stream.serving.replicas` watching a replica that exits every time it starts: it is started again
    after 1x, 2x the first delay (not at once), then left down after the 3rd exit with one error line; the other
    replica and the balancer are not touched and the watch goes on until it is stopped (exit status 0)."""
    import threading

    from asr_stream.serving.replicas import Restarts, supervise

    dep, stop, lines, left = FakeDeployment(), threading.Event(), [], threading.Event()

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("error: r1"):
            left.set()

    rule = Restarts(first_s=0.05, max_s=1.0, limit=3, window_s=3600.0)
    watch = threading.Thread(target=lambda: lines.append(supervise(dep, stop, rule, say, poll_s=0.01)))
    try:
        watch.start()
        assert left.wait(TIMEOUT), lines
        alive = (dep.replicas[1].process.poll(), dep.balancer.poll())
        stop.set()
        watch.join(TIMEOUT)
    finally:
        stop.set()
        dep.stop()
    assert alive == (None, None) and dep.starts == 2, lines
    said = [x for x in lines if isinstance(x, str) and not x.startswith("replica r1 exited with status 3")]
    assert said == [
        "r1 (ws://127.0.0.1:1/) exited with status 3; HAProxy sends new connections to the others; starting it again "
        "in 0.05 s (exit 1 in a row, left down at 3)",
        "r1 (ws://127.0.0.1:1/) exited with status 3; HAProxy sends new connections to the others; starting it again "
        "in 0.1 s (exit 2 in a row, left down at 3)",
        "error: r1 (ws://127.0.0.1:1/) exited 3 times in a row (last status 3), each within 3600 s of the first: left "
        "down; the others serve on"]
    assert lines[-1] == 0


@needs("haproxy")
def test_a_second_balancer_on_the_same_port_fails(tmp_path):
    """HAProxy binds with SO_REUSEPORT unless told not to: two deployments on one port would share its connections.
    With deploy/haproxy.cfg the second balancer exits with an error instead."""
    import shutil
    import socket
    import subprocess
    import time

    from asr_stream.serving.replicas import free_port

    port = free_port()
    cfg = tmp_path / "h.cfg"
    cfg.write_text(haproxy_config(HAPROXY_CFG.read_text(), f"127.0.0.1:{port}", ["127.0.0.1:9"]))
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    first = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # the first one listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.1)
        second = subprocess.run([haproxy, "-db", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        assert second.returncode != 0 and "Address already in use" in second.stderr
    finally:
        first.kill()
        first.wait()


def sample() -> np.ndarray:
    return load_audio(ROOT / "asr_stream" / "assets" / "sample.wav")


def recording(pause_s: float) -> np.ndarray:
    """The bundled sample five times, with pauses between (a new utterance each time): about 14 s."""
    return np.concatenate([np.concatenate([sample(), np.zeros(int(pause_s * 16000), np.float32)])] * 5)


def connections(url: str) -> float:
    """The replica's asr_stream_connections gauge (open WebSocket connections)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(url.replace("ws://", "http://") + "metrics", timeout=30).read().decode()
    return next(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == "asr_stream_connections")


def words(res) -> list[tuple[str, float]]:
    return [(w["text"], w["time_ms"]) for w in res.words]


@needs("haproxy")
@pytest.mark.timeout(TIMEOUT + 60)
def test_a_replica_killed_mid_stream_ends_only_its_own_clients():
    """Two replicas (the bundled model) behind HAProxy with deploy/haproxy.cfg; four real-time clients through the
    balancer are spread two and two. Once every client has a final, one replica is killed (SIGKILL): its two clients
    get an error (the connection closed before eof), the other two get exactly the transcripts their recordings get
    alone (words and times), and a new client and an upload through the balancer are served by the survivor. Then,
    the replica started again, the same with clients that connect again (--retries): the two cut off end with exactly
    their lone transcripts too. Last, the balancer's per-address cap: the 9th connection from one address is refused."""
    recs = [recording(0.4 + 0.15 * i) for i in range(4)]
    with start(2, port=0, log=None, serve_args=["--max-clients", "12"]) as dep:
        r1, r2 = dep.replicas

        async def alone():  # each recording by itself, on one replica directly, as fast as it is taken
            return [await stream(r2.url, blocks_of(w, 100)) for w in recs]

        refs = asyncio.run(asyncio.wait_for(alone(), TIMEOUT))
        assert all(len(r.finals) == 5 and r.words for r in refs)
        finals = [0] * 4
        seen: dict = {}

        def on_event(i):
            def f(ev) -> None:
                finals[i] += ev["type"] == "final"
                if min(finals) >= 1 and not seen:  # every client is mid-stream: which replica holds whom, then kill
                    seen["before"] = (connections(r1.url), connections(r2.url))
                    r1.process.kill()
            return f

        async def four():
            return await asyncio.gather(*[stream(dep.url, blocks_of(w, 100), block_ms=100, on_event=on_event(i))
                                          for i, w in enumerate(recs)], return_exceptions=True)

        got = asyncio.run(asyncio.wait_for(four(), TIMEOUT))
        assert seen["before"] == (2.0, 2.0)  # spread: least connections
        failed = [i for i, g in enumerate(got) if isinstance(g, BaseException)]
        assert len(failed) == 2, got
        for i in failed:
            assert isinstance(got[i], ServerError) and "closed the connection before eof" in str(got[i])
        for i in set(range(4)) - set(failed):
            assert words(got[i]) == words(refs[i]) and got[i].events[-1]["type"] == "eof"
        assert r1.process.wait(timeout=30) != 0

        again = asyncio.run(asyncio.wait_for(stream(dep.url, blocks_of(sample(), 100)), TIMEOUT))
        assert again.text == "WHEN IT'S DARK ENOUGH YOU CAN SEE THE STARS"
        status, _, body = upload(dep.http_url, sample())
        assert status == 200 and json.loads(body)["text"].upper() == again.text
        assert connections(r2.url) == 0.0

        # the same with clients that connect again (asr-stream client --retries 1), r1 started again first
        dep.restart(r1)
        assert dep.states() == {"r1": "UP", "r2": "UP"}
        finals, seen, retried = [0] * 4, {}, {}

        def on_retry(i):
            def f(e, ms) -> None:
                retried[i] = (str(e), ms, finals[i])
            return f

        def on_event2(i):
            def f(ev) -> None:
                finals[i] += ev["type"] == "final"
                if min(finals) >= 1 and not seen:
                    seen["before"] = (connections(r1.url), connections(r2.url))
                    r2.process.kill()
            return f

        async def resuming():
            return await asyncio.gather(*[stream_resuming(dep.url, blocks_of(w, 100), block_ms=100, on_event=on_event2(i),
                                                          retries=1, on_retry=on_retry(i)) for i, w in enumerate(recs)])

        got = asyncio.run(asyncio.wait_for(resuming(), TIMEOUT))
        assert seen["before"] == (2.0, 2.0) and len(retried) == 2, retried
        for i, g in enumerate(got):
            assert g.events[-1]["type"] == "eof" and [e["type"] for e in g.events].count("ready") == 1
            assert words(g) == words(refs[i]), (i, i in retried)  # the resumed ones too: times of one stream
            assert [(f["index"], f["start_ms"], f["end_ms"]) for f in g.finals] == \
                [(f["index"], f["start_ms"], f["end_ms"]) for f in refs[i].finals]
        for i, (why, ms, n) in retried.items():  # it went on from the end of its last final
            assert "closed the connection before eof" in why and n >= 1 and ms == got[i].finals[n - 1]["end_ms"]

        # the per-address cap is the balancer's: 8 connections from 127.0.0.1, the 9th refused; 127.0.0.2 still served
        asyncio.run(asyncio.wait_for(capped(dep.url), TIMEOUT))


async def capped(url: str) -> None:
    from websockets.asyncio.client import connect

    held = [await connect(url, open_timeout=30) for _ in range(8)]
    try:
        with pytest.raises(Exception) as refused:
            await connect(url, open_timeout=30)
        assert not isinstance(refused.value, asyncio.TimeoutError)
        other = await connect(url, open_timeout=30, local_addr=("127.0.0.2", 0))
        await other.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "float32"}))
        assert json.loads(await other.recv())["type"] == "ready"
        await other.close()
    finally:
        for ws in held:
            await ws.close()
