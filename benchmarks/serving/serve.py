#!/usr/bin/env python3
"""`asr-stream serve` under load: emission lag of N real-time clients, batched scheduler vs one session per client.

Each client replays its own recording (held-out espeak sentences joined with 0.2-1.5 s pauses, different per client)
over loopback at real-time pace, 100 ms frames, starts staggered evenly over the first second. The server is the real
command in its own process (bundled model, its training settings, default endpointing), once per scheduler:

- ``batched``: one engine task, one batched decoder step for all streams with work (SegmentedStreams);
- ``per-client``: one SegmentedSession per client, run one after the other (the WhisperLive way).

Lag of a word = the wall time it reached the client minus the wall time the client had sent the audio it needed
(its ``time_ms``): what a user waits beyond the model's own wait-k delay. A client count is *held* when the p95 lag
over all words of all clients is <= 1 s.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving/serve.py --clients 1 4 16 32 --seconds 20 --output benchmarks/results/serve
    # near the limits, on a shared machine: both servers up, taking turns, 3 repeats, median p95 decides
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving/serve.py --grid batched=32,36,40 --grid per-client=10,12,14 --repeats 3

``--flood SECONDS`` measures fairness instead (issue 30): the live clients alone, then again beside one client that
sends a SECONDS-long recording as fast as the server reads it (started first): each live client's time to its final
(eof received − its last audio sent), the flooder's transcript against its transcript alone, and the server's RSS
before and after:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving/serve.py --flood 60 --clients 1 --seconds 2.5 --schedulers batched

``--load`` makes the load table of the README (issue 30), batched scheduler only: per ``--replicas`` value (0: one
server, clients connect to it; N: N replicas behind HAProxy with deploy/haproxy.cfg, asr_stream.serving.replicas) and
client count, the lag percentiles, the CPU time of the serving processes (replicas + balancer) per client and second,
and their resident memory per client (peak during the run minus idle, over the clients); then the REST throughput
(audio seconds decoded per wall second) of ``--uploads`` concurrent uploads of ``--upload-s`` seconds each, alone and
beside ``--rest-beside`` real-time clients:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving/serve.py --load --replicas 0 2 --clients 8 16 24 32 --output /tmp/load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HELD_P95_MS = 1000.0  # a client count is held when the p95 lag is at most this
sys.path.insert(0, str(ROOT))


def recordings(n: int, seconds: float) -> list[tuple[np.ndarray, str]]:
    from asr_stream.corpus.longform import join_utterances
    from asr_stream.corpus.synth import synthesize

    raw = json.loads((ROOT / "tests" / "data" / "heldout.json").read_text())
    items = [(it["id"], it["text"]) for it in raw]
    waves: dict[int, np.ndarray] = {}

    def load(i):
        if i not in waves:
            it = raw[i]
            waves[i] = synthesize(it["spoken"], it["voice"], it["rate"], it["pitch"])
        return waves[i]

    out = []
    for c in range(n):
        rec = join_utterances(items, load, seconds, seed=c)
        out.append((rec.audio[: int(seconds * 16000)], rec.text))
    return out


MODEL: str | None = None  # --model: the model directory every server of this run loads (None: the bundled model)


def start_server(scheduler: str, max_clients: int, tick_ms: float | None, threads: int = 1,
                 encoder_dtype: str = "float32") -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "asr_stream", "serve", "--port", "0", "--max-clients", str(max_clients),
           "--scheduler", scheduler, "--idle-timeout-s", "120", "--max-per-address", "0", "--threads", str(threads), "--encoder-dtype", encoder_dtype]
    cmd += [] if tick_ms is None else ["--tick-ms", str(tick_ms)]
    cmd += [] if MODEL is None else ["--model", MODEL]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        m = re.search(r"serving on (ws://\S+) ", line)
        if m:
            return p, m.group(1)
        if not line and p.poll() is not None:
            break
    p.kill()
    raise SystemExit(f"server did not start: {line}")


async def run_clients(url: str, recs: list[tuple[np.ndarray, str]], n: int, block_ms: int = 100):
    from asr_stream.serving.client import blocks_of, stream

    async def one(i: int):
        await asyncio.sleep(i / max(n, 1))  # staggered over the first second
        return await stream(url, blocks_of(recs[i][0], block_ms), 16000, None, block_ms)

    return await asyncio.gather(*[one(i) for i in range(n)])


def flood_recording(seconds: float) -> np.ndarray:
    """The flooder's recording: other sentences than the live clients' (seed 1000)."""
    from asr_stream.corpus.longform import join_utterances
    from asr_stream.corpus.synth import synthesize

    raw = json.loads((ROOT / "tests" / "data" / "heldout.json").read_text())
    rec = join_utterances([(it["id"], it["text"]) for it in raw],
                          lambda i: synthesize(raw[i]["spoken"], raw[i]["voice"], raw[i]["rate"], raw[i]["pitch"]),
                          seconds, seed=1000)
    return rec.audio[: int(seconds * 16000)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def final_ms(r) -> float:
    """Wall ms from the client's last audio sent to its eof: what a user waits for the whole transcript."""
    return (r.arrival[-1] - r.sent_at[-1][1]) * 1000.0


async def beside_flood(url: str, recs, n: int, flood: np.ndarray, block_ms: int = 100):
    """``n`` live clients started once a flooder (``flood`` sent unpaced) has been streaming for a second."""
    from asr_stream.serving.client import blocks_of, stream

    ready = asyncio.Event()
    flooder = asyncio.create_task(stream(url, blocks_of(flood, block_ms), 16000, None, None,
                                         lambda ev: ready.set() if ev["type"] == "ready" else None))
    await ready.wait()
    await asyncio.sleep(1.0)
    live = await run_clients(url, recs, n, block_ms)
    return live, await flooder


def measure_flood(url: str, pid: int, recs, n: int, flood: np.ndarray) -> dict:
    """Live clients alone, the flooder alone, then both; RSS of the server around it all."""
    from asr_stream.serving.client import blocks_of, stream

    rss0 = rss_mb(pid)
    alone = asyncio.run(run_clients(url, recs, n))
    flood_alone = asyncio.run(stream(url, blocks_of(flood, 100), 16000))
    rss1 = rss_mb(pid)
    t0 = time.monotonic()
    live, flooded = asyncio.run(beside_flood(url, recs, n, flood))
    wall = time.monotonic() - t0
    row = {"clients": n, "flood_s": len(flood) / 16000, "rss_mb_start": rss0, "rss_mb_after_flood_alone": rss1,
           "rss_mb_end": rss_mb(pid), "wall_s": wall,
           "flood_transcript_same": flooded.text == flood_alone.text,
           "live_transcripts_same": [a.text == b.text for a, b in zip(alone, live)]}
    for name, res in (("alone", alone), ("beside_flood", live)):
        lags = np.array([x for r in res for x in r.lags_ms()])
        row[name] = {"final_ms": [round(final_ms(r)) for r in res],
                     "p50_ms": float(np.percentile(lags, 50)) if lags.size else None,
                     "p95_ms": float(np.percentile(lags, 95)) if lags.size else None}
    return row


def parse_grids(clients: list[int], grids: list[str], schedulers: list[str]) -> dict[str, list[int]]:
    """Client counts per scheduler: ``--clients`` for all, ``--grid SCHED=N,N`` for one."""
    out = {s: list(clients) for s in schedulers}
    for g in grids:
        sched, _, counts = g.partition("=")
        if sched not in out or not counts:
            raise SystemExit(f"--grid {g!r}: expected SCHED=N,N,... with SCHED one of {', '.join(schedulers)}")
        out[sched] = [int(c) for c in counts.split(",")]
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (scheduler, clients) over its repeats: median p50 / p95 and every repeat's p95.

    A count is held when the median p95 over the repeats is <= 1 s: on a shared machine one run's p95 can move by
    more than the difference between neighbouring counts, so a single run decides nothing near the limit."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scheduler"], r["clients"]), []).append(r)
    out = []
    for (sched, n), rs in groups.items():
        p95 = [r["p95_ms"] for r in rs]
        out.append({"scheduler": sched, "threads": rs[0].get("threads", 1), "encoder_dtype": rs[0].get("encoder_dtype", "float32"),
                    "clients": n, "words": rs[0]["words"], "repeats": len(rs),
                    "p50_ms": float(np.median([r["p50_ms"] for r in rs])), "p95_ms": float(np.median(p95)),
                    "p95_each_ms": p95, "max_ms": max(r["max_ms"] for r in rs), "held": bool(np.median(p95) <= HELD_P95_MS)})
    return out


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)
    return total


def wav_bytes(x: np.ndarray) -> bytes:
    import io

    import soundfile as sf

    b = io.BytesIO()
    sf.write(b, x, 16000, format="WAV", subtype="PCM_16")
    return b.getvalue()


def post_upload(http_url: str, body: bytes) -> tuple[int, str]:
    """POST /v1/audio/transcriptions (multipart, response_format text); (status, text)."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(http_url)
    sep = b"asr-stream-benchmark-boundary"
    form = (b"--" + sep + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\ndefault\r\n'
            + b"--" + sep + b'\r\nContent-Disposition: form-data; name="response_format"\r\n\r\ntext\r\n'
            + b"--" + sep + b'\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            + b"Content-Type: audio/wav\r\n\r\n" + body + b"\r\n--" + sep + b"--\r\n")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=900)
    try:
        conn.request("POST", "/v1/audio/transcriptions", form,
                     {"Content-Type": f"multipart/form-data; boundary={sep.decode()}"})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


async def uploads_beside(http_url: str, ws_url: str, bodies: list[bytes], recs, n_live: int):
    """``bodies`` uploaded at once (each in its own thread), started one second after ``n_live`` real-time clients
    (none: alone); returns (wall seconds of the uploads, their answers, the live clients' results)."""
    loop = asyncio.get_running_loop()
    live = asyncio.create_task(run_clients(ws_url, recs, n_live)) if n_live else None
    if live is not None:
        await asyncio.sleep(1.0)
    t0 = time.monotonic()
    answers = await asyncio.gather(*[loop.run_in_executor(None, post_upload, http_url, b) for b in bodies])
    wall = time.monotonic() - t0
    return wall, answers, (await live if live is not None else [])


def main_load(a) -> None:
    """The load table (see the module doc): per --replicas value and client count; REST alone and beside clients."""
    import tempfile
    import threading

    from asr_stream.serving.replicas import HAPROXY_CFG
    from asr_stream.serving.replicas import start as start_replicas

    recs = recordings(max(a.clients + [a.rest_beside]), a.seconds)
    up = flood_recording(a.upload_s)
    bodies = [wav_bytes(up)] * a.uploads
    # every benchmark client comes from 127.0.0.1: the config's per-address cap (8) would refuse the 9th
    cfg = Path(tempfile.mkdtemp(prefix="serve-bench-")) / "haproxy.cfg"
    cfg.write_text("\n".join(x for x in HAPROXY_CFG.read_text().splitlines() if "reject if { sc0_conn_cur" not in x) + "\n")
    serve_args = ["--max-clients", str(max(a.clients + [a.rest_beside]) + a.uploads), "--idle-timeout-s", "120",
                  "--threads", "1", "--encoder-dtype", a.encoder_dtype]
    rows, rest = [], []
    for n_rep in a.replicas:
        if n_rep == 0:
            proc, url = start_server("batched", int(serve_args[1]), a.tick_ms, 1, a.encoder_dtype)
            pids, http_url, stop = [proc.pid], url.replace("ws://", "http://").rstrip("/"), None
            where = "one server"
        else:
            dep = start_replicas(n_rep, 0, serve_args=serve_args, config=cfg, log=None,
                                 env={"PYTHONPATH": str(ROOT)})
            url, http_url = dep.url, dep.http_url
            pids = [r.process.pid for r in dep.replicas] + [dep.balancer.pid]
            proc, stop, where = None, dep, f"{n_rep} replica{'s' if n_rep > 1 else ''} behind HAProxy"
        try:
            asyncio.run(run_clients(url, recs, min(2, len(recs)), 100))  # warm-up (each replica, with leastconn)
            rss_idle = sum(rss_mb(p) for p in pids)
            for n in a.clients:
                peak, done = [rss_idle], threading.Event()

                def sample():
                    while not done.wait(0.5):
                        peak.append(sum(rss_mb(p) for p in pids))

                t = threading.Thread(target=sample, daemon=True)
                t.start()
                c0, t0 = cpu_s(pids), time.monotonic()
                results = asyncio.run(run_clients(url, recs, n))
                wall, cpu = time.monotonic() - t0, cpu_s(pids) - c0
                done.set()
                t.join()
                lags = np.array([x for r in results for x in r.lags_ms()])
                row = {"replicas": n_rep, "where": where, "clients": n, "words": int(lags.size),
                       "p50_ms": float(np.percentile(lags, 50)), "p95_ms": float(np.percentile(lags, 95)),
                       "held": bool(np.percentile(lags, 95) <= HELD_P95_MS), "wall_s": wall, "cpu_s": cpu,
                       "cpu_per_client_pct": 100.0 * cpu / wall / n, "rss_idle_mb": rss_idle, "rss_peak_mb": max(peak),
                       "rss_per_client_mb": (max(peak) - rss_idle) / n}
                rows.append(row)
                print(json.dumps(row), flush=True)
            alone_text = None
            for beside in (0, a.rest_beside):
                wall, answers, live = asyncio.run(uploads_beside(http_url, url, bodies, recs, beside))
                alone_text = answers[0][1] if alone_text is None else alone_text
                lags = np.array([x for r in live for x in r.lags_ms()])
                row = {"replicas": n_rep, "where": where, "uploads": a.uploads, "upload_s": a.upload_s,
                       "beside_clients": beside, "wall_s": wall, "statuses": [st for st, _ in answers],
                       "audio_s_per_s": a.uploads * a.upload_s / wall,
                       "same_text": {txt for _, txt in answers} == {alone_text},  # each as the first upload alone
                       "live_p95_ms": float(np.percentile(lags, 95)) if lags.size else None}
                rest.append({**row, "text": answers[0][1][:200]})
                print(json.dumps(row), flush=True)
        finally:
            if stop is not None:
                stop.stop()
            else:
                proc.terminate()
                proc.wait(30)
    lines = ["| serving | clients | p50 lag ms | p95 lag ms | held (p95 <= 1 s) | CPU per client (% of a core) | "
             "RSS idle MB | RSS per client MB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['where']} | {r['clients']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {'yes' if r['held'] else 'no'} | "
                     f"{r['cpu_per_client_pct']:.1f} | {r['rss_idle_mb']:.0f} | {r['rss_per_client_mb']:.1f} |")
    lines += ["", "| serving | uploads at once | live clients beside | audio s per s | live p95 lag ms | answers |",
              "|---|---|---|---|---|---|"]
    for r in rest:
        p95 = "" if r["live_p95_ms"] is None else f"{r['live_p95_ms']:.0f}"
        answers = ", ".join(map(str, r["statuses"])) + ("" if r["same_text"] else " (texts differ from alone)")
        lines.append(f"| {r['where']} | {r['uploads']} x {r['upload_s']:.0f} s | {r['beside_clients']} | "
                     f"{r['audio_s_per_s']:.1f} | {p95} | {answers} |")
    print("\n".join(lines))
    if a.output:
        out = Path(a.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "serve_load.json").write_text(json.dumps({"rows": rows, "rest": rest, "seconds": a.seconds,
                                                         "encoder_dtype": a.encoder_dtype}, indent=2) + "\n")
        (out / "serve_load.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory for the servers (default: the bundled model)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--grid", action="append", default=[], metavar="SCHED=N,N,...",
                    help="client counts for one scheduler instead of --clients (e.g. per-client=10,12,14); repeatable")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure every (scheduler, count) this many times; the schedulers' servers run side by side "
                         "and take turns, and a count is held when its median p95 is <= 1 s")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--schedulers", nargs="+", default=["batched", "per-client"])
    ap.add_argument("--output", default=None, help="folder for serve.json / serve.md")
    ap.add_argument("--compare-with", default=None, help="serve.json of an earlier run (the other scheduler): count identical transcripts")
    ap.add_argument("--tick-ms", type=float, default=None, help="the server's --tick-ms (default: its default)")
    ap.add_argument("--threads", default="batched=1,per-client=1",
                    help="the server's --threads (the encoder's CPU threads) per scheduler, as SCHED=N,...")
    ap.add_argument("--encoder-dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the server's --encoder-dtype, for every scheduler (compare schedulers at the same dtype)")
    ap.add_argument("--flood", type=float, default=None, metavar="SECONDS",
                    help="measure the live clients alone and beside one client sending SECONDS of audio unpaced")
    ap.add_argument("--load", action="store_true", help="the load table (module doc): --replicas, --clients, REST")
    ap.add_argument("--replicas", type=int, nargs="+", default=[0, 2],
                    help="--load: 0 = one server, N = N replicas behind HAProxy (default: 0 2)")
    ap.add_argument("--uploads", type=int, default=2, help="--load: uploads sent at once (default: 2)")
    ap.add_argument("--upload-s", type=float, default=60.0, help="--load: seconds of audio per upload (default: 60)")
    ap.add_argument("--rest-beside", type=int, default=8, help="--load: real-time clients beside the uploads (default: 8)")
    a = ap.parse_args(argv)
    global MODEL
    MODEL = a.model
    if a.load:
        return main_load(a)
    if a.flood is not None:
        return main_flood(a)
    if a.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {a.repeats}")
    threads = {k: int(v) for k, v in (kv.split("=") for kv in a.threads.split(","))}
    grids = parse_grids(a.clients, a.grid, a.schedulers)
    most = max(n for g in grids.values() for n in g)
    recs = recordings(most, a.seconds)
    raw, texts, stable = [], {}, {}
    servers = {}
    try:
        for sched in a.schedulers:  # all up before the first measurement; an idle server waits on an event
            servers[sched] = start_server(sched, max(grids[sched]), a.tick_ms, threads.get(sched, 1), a.encoder_dtype)
            asyncio.run(run_clients(servers[sched][1], recs, 1, 100))  # warm-up
        for rep in range(a.repeats):
            for sched in a.schedulers:  # take turns, so that each scheduler sees the same slow and fast minutes
                for n in grids[sched]:
                    t0 = time.monotonic()
                    results = asyncio.run(run_clients(servers[sched][1], recs, n))
                    wall = time.monotonic() - t0
                    lags = np.array([x for r in results for x in r.lags_ms()])
                    server_lag = max((e.get("lag_ms", 0) for r in results for e in r.events), default=0)
                    got = [r.text for r in results]
                    if (sched, n) in texts:  # a repeat must give the same transcripts
                        stable[(sched, n)] = stable.get((sched, n), True) and got == texts[(sched, n)]
                    texts.setdefault((sched, n), got)
                    row = {"scheduler": sched, "threads": threads.get(sched, 1), "encoder_dtype": a.encoder_dtype,
                           "clients": n, "repeat": rep, "words": int(lags.size),
                           "p50_ms": float(np.percentile(lags, 50)), "p95_ms": float(np.percentile(lags, 95)),
                           "max_ms": float(lags.max()), "server_lag_max_ms": server_lag, "wall_s": wall,
                           "held": bool(np.percentile(lags, 95) <= HELD_P95_MS)}
                    raw.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    rows = summarize(raw)
    same = {}
    if a.compare_with:  # runs of one scheduler each (each fits the 10-minute budget of a command)
        other = json.loads(Path(a.compare_with).read_text())
        theirs = {r.get("encoder_dtype", "float32") for r in other["rows"]}
        if theirs != {a.encoder_dtype}:
            raise SystemExit(f"--compare-with {a.compare_with}: its server ran the encoder in {', '.join(sorted(theirs))}, "
                             f"this one in {a.encoder_dtype}; compare schedulers at the same --encoder-dtype")
        for key, t2 in other["texts"].items():
            o_sched, n = key.split(":")
            texts.setdefault((o_sched, int(n)), t2)
            if o_sched not in a.schedulers:
                a.schedulers.append(o_sched)
                rows[:0] = [r for r in other["rows"] if r["scheduler"] == o_sched]
                grids[o_sched] = sorted({r["clients"] for r in other["rows"] if r["scheduler"] == o_sched})
    if len(a.schedulers) == 2:
        for n in sorted(set(grids[a.schedulers[0]]) & set(grids[a.schedulers[1]])):
            t1, t2 = texts.get((a.schedulers[0], n)), texts.get((a.schedulers[1], n))
            if t1 and t2:
                same[n] = sum(x == y for x, y in zip(t1, t2))
    best = {s: max([r["clients"] for r in rows if r["scheduler"] == s and r["held"]], default=0) for s in a.schedulers}
    lines = ["| scheduler | threads | encoder dtype | clients | words | p50 lag ms | p95 lag ms | p95 of each repeat | max lag ms | held (p95 <= 1 s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(f"{p:.0f}" for p in r.get("p95_each_ms", [r["p95_ms"]]))
        lines.append(f"| {r['scheduler']} | {r.get('threads', 1)} | {r.get('encoder_dtype', 'float32')} | {r['clients']} | {r['words']} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {each} | {r['max_ms']:.0f} | {'yes' if r['held'] else 'no'} |")
    lines.append("")
    lines.append("Most real-time clients held (of those tried" + (f"; median of {a.repeats} repeats" if a.repeats > 1 else "")
                 + "): " + ", ".join(f"{s}: {b}" for s, b in best.items()))
    if same:
        lines.append("Identical transcripts, batched vs per-client: " + ", ".join(f"{n} clients: {k}/{n}" for n, k in same.items()))
    if stable:
        bad = [f"{s} {n}" for (s, n), ok in stable.items() if not ok]
        lines.append("Repeats gave the same transcripts: " + ("all" if not bad else "not for " + ", ".join(bad)))
    print("\n".join(lines))
    if a.output:
        out = Path(a.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "serve.json").write_text(json.dumps({"rows": rows, "runs": raw, "best": best, "same_transcripts": same,
                                                    "seconds": a.seconds, "repeats": a.repeats,
                                                    "texts": {f"{s}:{n}": t for (s, n), t in texts.items()}}, indent=2) + "\n")
        (out / "serve.md").write_text("\n".join(lines) + "\n")


def main_flood(a) -> None:
    recs = recordings(max(a.clients), a.seconds)
    flood = flood_recording(a.flood)
    rows = []
    for sched in a.schedulers:
        proc, url = start_server(sched, max(a.clients) + 1, a.tick_ms, 1, a.encoder_dtype)
        try:
            asyncio.run(run_clients(url, recs, 1, 100))  # warm-up
            for n in a.clients:
                row = {"scheduler": sched, **measure_flood(url, proc.pid, recs, n, flood)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    if a.output:
        out = Path(a.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "serve_flood.json").write_text(json.dumps({"rows": rows, "seconds": a.seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
