"""Several ``asr-stream serve`` replicas on loopback behind HAProxy (``deploy/haproxy.cfg``): start, watch, stop.

    python -m asr_stream.serving.replicas --replicas 2 --port 8765 -- --max-clients 16 --encoder-dtype bfloat16

Each replica is the real ``asr-stream serve`` command in its own process, on a free port of 127.0.0.1 chosen by the
system (``--port 0``), with ``--max-per-address 0`` (behind the balancer every client has the balancer's address; the
per-address cap is HAProxy's stick table). Arguments after ``--`` go to every replica. HAProxy runs in the foreground
with the repository's config, its ``bind`` and ``server`` lines rewritten for these ports (:func:`haproxy_config`).
The rule for a replica that dies is HAProxy's: its clients' connections are closed, nobody else's is touched, and new
connections go to the replicas that pass the ``/readyz`` check (``asr-stream client --retries N`` connects again and
goes on from its last finished utterance). This tool says so on stderr and starts the replica again on its port,
after a back-off (:class:`Restarts`: 1 s, doubled after each exit in a row, at most 30 s); after ``--restart-limit``
exits in a row it leaves the replica down with one error line, and the others serve on.
SIGTERM or Ctrl-C stops the replicas first (each drains: its streams end at their next pause, ``--drain-s``), then the
balancer, which relays their last events until then.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"  # the repository's config
STARTUP_S = 180.0  # s: longest wait for a replica to load its model, or for the balancer to pass requests


def haproxy_config(template: str, bind: str, servers: Sequence[str]) -> str:
    """``template`` (an HAProxy config) with its one ``bind`` line's address set to ``bind`` and its ``server`` lines
    replaced, where the first one stood, by one line per address of ``servers`` (named r1, r2, ...; the first server
    line's options, e.g. ``check``, on each). A config without exactly one bind line or without a server line is a
    ValueError: this rewrite is for configs shaped like deploy/haproxy.cfg."""
    lines = template.splitlines()
    binds = [i for i, line in enumerate(lines) if line.split()[:1] == ["bind"]]
    srv = [i for i, line in enumerate(lines) if line.split()[:1] == ["server"]]
    if len(binds) != 1 or not srv:
        raise ValueError(f"the HAProxy config needs one `bind` line and at least one `server` line, it has "
                         f"{len(binds)} and {len(srv)}")
    if not servers:
        raise ValueError("no replica addresses for the HAProxy config")
    b = lines[binds[0]]
    indent, words = b[: len(b) - len(b.lstrip())], b.split()
    lines[binds[0]] = " ".join([f"{indent}bind", bind, *words[2:]])
    first = lines[srv[0]]
    indent, opts = first[: len(first) - len(first.lstrip())], first.split()[3:]
    new = [" ".join([f"{indent}server", f"r{i + 1}", addr, *opts]) for i, addr in enumerate(servers)]
    out = [line for i, line in enumerate(lines) if i not in srv[1:]]
    at = srv[0]
    out[at : at + 1] = new
    return "\n".join(out) + "\n"


@dataclass
class Replica:
    """One ``asr-stream serve`` process and the loopback port it serves on."""

    index: int  # 1-based: the HAProxy server name is r<index>
    process: subprocess.Popen
    port: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@dataclass
class Deployment:
    """Running replicas and their balancer; :meth:`stop` (or leaving the ``with`` block) ends them all."""

    replicas: list[Replica]
    balancer: subprocess.Popen
    host: str
    port: int
    workdir: Path
    serve_args: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    log: object = None

    @property
    def url(self) -> str:
        """The balancer's WebSocket address (clients connect here)."""
        return f"ws://{self.host}:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def states(self) -> dict[str, str]:
        """HAProxy's view of each replica, by server name (r1, r2, ...): UP, DOWN, ... (``show stat`` on its admin
        socket)."""
        import csv
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b"".join(iter(lambda: s.recv(65536), b""))
        rows = list(csv.reader(data.decode().lstrip("# ").splitlines()))
        i, j = rows[0].index("svname"), rows[0].index("status")
        return {row[i]: row[j].split()[0] for row in rows[1:] if len(row) > j and row[i].startswith("r")}

    def restart(self, r: Replica, startup_s: float = STARTUP_S) -> None:
        """Start replica ``r`` again on its port (after it exited), with the same arguments; returns once HAProxy's
        /readyz check has put it back in the rotation."""
        if r.process.poll() is None:
            raise ValueError(f"replica r{r.index} is running")
        deadline = time.monotonic() + startup_s
        new, found, box = _launch(r.index, r.port, self.serve_args, self.env, self.log)
        r.process = new.process
        _served(r, found, box, deadline)
        while self.states().get(f"r{r.index}") != "UP":
            if time.monotonic() > deadline:
                raise ValueError(f"replica r{r.index} serves but HAProxy does not have it UP after {startup_s:.0f} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM each replica still running (a graceful drain) and wait for it (SIGKILL after ``timeout`` s), then
        stop the balancer (SIGUSR1; SIGKILL after 10 s) and remove its config."""
        for r in self.replicas:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for r in self.replicas:
            _wait_or_kill(r.process, max(0.1, deadline - time.monotonic()))
        if self.balancer.poll() is None:
            self.balancer.send_signal(signal.SIGUSR1)  # HAProxy's soft stop: it exits 0 once its connections end
        _wait_or_kill(self.balancer, 10.0)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_or_kill(p: subprocess.Popen, timeout: float) -> None:
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _pump(stream, prefix: str, out, found: Optional[threading.Event] = None, box: Optional[dict] = None) -> None:
    """Copy a child's stderr lines to ``out`` with ``prefix`` (a pipe left unread would block the child); the first
    ``serving on ...:PORT/`` line sets ``box['port']`` and ``found``."""
    for line in stream:
        if found is not None and not found.is_set():
            m = re.search(r"serving on \w+://[^ ]*:(\d+)/", line)
            if m:
                box["port"] = int(m.group(1))
                found.set()
        if out is not None:
            out.write(prefix + line)
            out.flush()
    if found is not None:
        found.set()  # the process ended without serving: the waiter sees no port


def _launch(i: int, port: int, serve_args: Sequence[str], env: dict, log) -> tuple[Replica, threading.Event, dict]:
    """Start replica ``i`` (``asr-stream serve`` on 127.0.0.1:``port``, 0: a free one); the event is set once it
    serves (then ``box['port']`` is its port) or has exited."""
    cmd = [sys.executable, "-m", "asr_stream", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--max-per-address", "0", *serve_args]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=env)
    r, found, box = Replica(i, p), threading.Event(), {}
    threading.Thread(target=_pump, args=(p.stderr, f"[r{i}] ", log, found, box), daemon=True).start()
    return r, found, box


def _served(r: Replica, found: threading.Event, box: dict, deadline: float) -> None:
    if not found.wait(max(0.0, deadline - time.monotonic())) or "port" not in box:
        if found.is_set():  # its stderr ended: it is exiting
            _wait_or_kill(r.process, 10.0)
        why = f"exited with status {r.process.poll()}" if r.process.poll() is not None else "did not start serving in time"
        raise ValueError(f"replica r{r.index} {why} (its stderr is above, prefixed [r{r.index}])")
    r.port = box["port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the system says is free now (another process may take it before it is bound: a small race)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(replicas: int = 2, port: int = 8765, host: str = "127.0.0.1", serve_args: Sequence[str] = (),
          config: Path | str = HAPROXY_CFG, log=sys.stderr, env: Optional[dict] = None,
          startup_s: float = STARTUP_S) -> Deployment:
    """Start ``replicas`` ``asr-stream serve`` processes on free loopback ports (``serve_args`` passed to each) and
    HAProxy on ``host:port`` (0: a free port) with ``config`` rewritten for them; return once a request through the
    balancer reaches a ready replica and HAProxy has every replica UP. ``log``: where the children's stderr lines go (prefixed ``[rN]``/``[haproxy]``;
    None: discarded). Anything that fails to come up is stopped and raised as a one-line ValueError."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"--replicas must be a whole number >= 1, got {replicas!r}")
    haproxy = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if haproxy is None:
        raise ValueError("haproxy is not installed (Debian: apt-get install haproxy; `make sysdeps` does it)")
    owned = {"--port", "--host"} & {a.split("=")[0] for a in serve_args}
    if owned:
        raise ValueError(f"{', '.join(sorted(owned))}: the replicas' addresses are chosen here (use --port for the balancer)")
    cfg_path = Path(config)
    if not cfg_path.is_file():
        raise ValueError(f"{cfg_path}: no such HAProxy config (pass --config; the repository has deploy/haproxy.cfg)")
    template = cfg_path.read_text()
    haproxy_config(template, "127.0.0.1:1", ["127.0.0.1:2"])  # its shape, before anything starts
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    work = Path(tempfile.mkdtemp(prefix="asr-stream-replicas-"))
    procs: list[Replica] = []
    balancer = None
    try:
        waits = [_launch(i, 0, serve_args, env, log) for i in range(1, replicas + 1)]
        procs += [r for r, _, _ in waits]
        deadline = time.monotonic() + startup_s
        for w in waits:
            _served(*w, deadline)
        port = port or free_port(host)
        cfg = work / "haproxy.cfg"
        text = haproxy_config(template, f"{host}:{port}", [f"127.0.0.1:{r.port}" for r in procs])
        # an admin socket for `show stat` (Deployment.states) beside the config
        text = re.sub(r"^global[ \t]*$", f"global\n    stats socket {work / 'haproxy.sock'} mode 600 level admin", text,
                      count=1, flags=re.M)
        cfg.write_text(text)
        check = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ValueError(f"haproxy rejects the config: {(check.stderr or check.stdout).strip().splitlines()[-1:]}")
        balancer = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=_pump, args=(balancer.stderr, "[haproxy] ", log), daemon=True).start()
        dep = Deployment(procs, balancer, host, port, work, tuple(serve_args), env, log)
        while True:  # the balancer listens and a replica behind it answers /readyz
            if balancer.poll() is not None:
                raise ValueError(f"haproxy exited with status {balancer.returncode} (its stderr is above, prefixed "
                                 f"[haproxy]; is {host}:{port} taken?)")
            try:
                with urllib.request.urlopen(f"{dep.http_url}/readyz", timeout=2) as resp:
                    if resp.status == 200 and set(dep.states().values()) == {"UP"}:
                        return dep
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ValueError(f"the balancer on {host}:{port} did not pass /readyz within {startup_s:.0f} s")
            time.sleep(0.2)
    except BaseException:
        for r in procs:
            if r.process.poll() is None:
                r.process.kill()
            r.process.wait()
        if balancer is not None and balancer.poll() is None:
            balancer.kill()
            balancer.wait()
        shutil.rmtree(work, ignore_errors=True)
        raise


@dataclass(frozen=True)
class Restarts:
    """When a replica that exited is started again. The n-th exit in a row is followed by a start after
    ``first_s * 2**(n-1)`` seconds, at most ``max_s``; exits count "in a row" while each comes within ``window_s`` of
    the first of them (a replica that ran longer than that starts a fresh count). The ``limit``-th exit in a row
    leaves it down (a crash loop: a bad model path, a port taken, a GPU gone): one error line, the others serve on."""

    first_s: float = 1.0
    max_s: float = 30.0
    limit: int = 5
    window_s: float = 300.0

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.max_s) or self.window_s <= 0:
            raise ValueError(f"need 0 < first_s <= max_s and window_s > 0, got {self}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"--restart-limit must be a whole number >= 1, got {self.limit!r}")


class Backoff:
    """One replica's exits, against a :class:`Restarts` rule."""

    def __init__(self, rule: Restarts) -> None:
        self.rule, self.exits = rule, []  # monotonic times of the exits in a row

    def exited(self, now: float) -> Optional[float]:
        """Seconds to wait before starting it again; None: leave it down (``limit`` exits in a row)."""
        if self.exits and now - self.exits[0] > self.rule.window_s:
            self.exits = []  # it ran long enough: a fresh count
        self.exits.append(now)
        n = len(self.exits)
        if n >= self.rule.limit:
            return None
        return min(self.rule.max_s, self.rule.first_s * 2 ** (n - 1))


def _say(line: str) -> None:
    print(f"asr-stream replicas: {line}", file=sys.stderr, flush=True)


def supervise(dep: Deployment, stop: threading.Event, rule: Restarts = Restarts(), say=_say, poll_s: float = 0.2) -> int:
    """Watch ``dep`` until ``stop`` is set (0) or the balancer exits or every replica is left down (1): a replica that
    exits is started again on its port after its :class:`Backoff` delay (its start waits for it to serve; one that
    does not serve within the startup time is killed, an exit like any other), or left down after ``rule.limit``
    exits in a row. The caller stops ``dep``."""
    backoff = {r.index: Backoff(rule) for r in dep.replicas}
    due: dict[int, float] = {}  # replica index -> when it is started again
    down: set[int] = set()
    while not stop.wait(poll_s):
        if dep.balancer.poll() is not None:
            say(f"error: haproxy exited with status {dep.balancer.returncode}")
            return 1
        for r in dep.replicas:
            if r.index in down or stop.is_set():
                continue
            now = time.monotonic()
            if r.index in due:
                if now >= due[r.index]:
                    del due[r.index]
                    try:
                        dep.restart(r)
                        say(f"r{r.index} serves again ({r.url})")
                    except ValueError as e:
                        if r.process.poll() is None:  # started but not serving in time: ended, counted as an exit
                            r.process.kill()
                            r.process.wait()
                        say(str(e))
                continue
            if r.process.poll() is None:
                continue
            wait = backoff[r.index].exited(now)
            if wait is None:
                down.add(r.index)
                say(f"error: r{r.index} ({r.url}) exited {rule.limit} times in a row (last status "
                    f"{r.process.returncode}), each within {rule.window_s:g} s of the first: left down; the others serve on")
                if len(down) == len(dep.replicas):
                    say("error: every replica is down")
                    return 1
                continue
            due[r.index] = now + wait
            say(f"r{r.index} ({r.url}) exited with status {r.process.returncode}; HAProxy sends new connections to the "
                f"others; starting it again in {wait:g} s (exit {len(backoff[r.index].exits)} in a row, left down at "
                f"{rule.limit})")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    ours, serve_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m asr_stream.serving.replicas", description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=2, help="asr-stream serve processes (default: 2)")
    p.add_argument("--host", default="127.0.0.1", help="the balancer's address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="the balancer's port (default: 8765)")
    p.add_argument("--config", default=str(HAPROXY_CFG), help="HAProxy config to rewrite (default: deploy/haproxy.cfg)")
    p.add_argument("--restart-limit", type=int, default=Restarts.limit,
                   help=f"exits in a row after which a replica is left down (default: {Restarts.limit}); restarts "
                        f"wait {Restarts.first_s:g} s, then twice as long each time, at most {Restarts.max_s:g} s")
    a = p.parse_args(ours)
    try:
        rule = Restarts(limit=a.restart_limit)
    except ValueError as e:
        print(f"asr-stream replicas: error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        dep = start(a.replicas, a.port, a.host, serve_args, a.config)
    except ValueError as e:
        print(f"asr-stream replicas: error: {e}", file=sys.stderr)
        return 2
    print(f"asr-stream replicas: balancer on {dep.url} (uploads: {dep.http_url}/v1/audio/transcriptions) -> "
          + ", ".join(f"r{r.index} {r.url}" for r in dep.replicas), file=sys.stderr, flush=True)
    code = supervise(dep, stop, rule)
    _say("stopping (replicas drain first)")
    dep.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
