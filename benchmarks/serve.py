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

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve.py --clients 1 4 16 32 --seconds 20 --output benchmarks/results/serve
    # near the limits, on a shared machine: both servers up, taking turns, 3 repeats, median p95 decides
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve.py --grid batched=32,36,40 --grid per-client=10,12,14 --repeats 3

``--flood SECONDS`` measures fairness instead (issue 30): the live clients alone, then again beside one client that
sends a SECONDS-long recording as fast as the server reads it (started first): each live client's time to its final
(eof received − its last audio sent), the flooder's transcript against its transcript alone, and the server's RSS
before and after:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve.py --flood 60 --clients 1 --seconds 2.5 --schedulers batched
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

ROOT = Path(__file__).resolve().parents[1]
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


def start_server(scheduler: str, max_clients: int, tick_ms: float | None, threads: int = 1,
                 encoder_dtype: str = "float32") -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "asr_stream", "serve", "--port", "0", "--max-clients", str(max_clients),
           "--scheduler", scheduler, "--idle-timeout-s", "120", "--max-per-address", "0", "--threads", str(threads), "--encoder-dtype", encoder_dtype]
    cmd += [] if tick_ms is None else ["--tick-ms", str(tick_ms)]
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
    from asr_stream.client import blocks_of, stream

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
    from asr_stream.client import blocks_of, stream

    ready = asyncio.Event()
    flooder = asyncio.create_task(stream(url, blocks_of(flood, block_ms), 16000, None, None,
                                         lambda ev: ready.set() if ev["type"] == "ready" else None))
    await ready.wait()
    await asyncio.sleep(1.0)
    live = await run_clients(url, recs, n, block_ms)
    return live, await flooder


def measure_flood(url: str, pid: int, recs, n: int, flood: np.ndarray) -> dict:
    """Live clients alone, the flooder alone, then both; RSS of the server around it all."""
    from asr_stream.client import blocks_of, stream

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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    a = ap.parse_args(argv)
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
