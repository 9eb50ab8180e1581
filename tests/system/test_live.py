"""Live transcription: pacing, the live loop == one-shot streaming, a real PortAudio stream on an ALSA
file device, Ctrl-C, bounded memory over long sessions, and one-line errors.

The tiny random model emits arbitrary but deterministic words: equal words mean equal computation.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_stream.audio import sources
from asr_stream.audio.sources import AudioSourceError, microphone_blocks, paced_blocks
from asr_stream.live import run_live
from asr_stream.streaming import StreamingSession
from asr_stream.streaming.segment import EndpointConfig, SegmentedSession

from ..conftest import noise_audio
from ..sysdeps import needs

REPO = Path(__file__).resolve().parents[2]
SETTINGS = dict(mode="group", k=3, phi=0.0)  # the session settings of both paths compared below
BLOCK = 1600  # 100 ms at 16 kHz


def one_shot(model, wave: np.ndarray, block: int = BLOCK) -> StreamingSession:
    """What `transcribe` does: one session over the whole array, pushed in blocks, then finish()."""
    s = StreamingSession(model, **SETTINGS)
    for i in range(0, len(wave), block):
        s.push(wave[i : i + block])
    s.finish()
    return s


def words_of(session_or_words) -> list[tuple[str, float]]:
    ws = session_or_words.words if isinstance(session_or_words, StreamingSession) else session_or_words
    return [(w.text, w.time_ms) for w in ws]


def quiet(seconds: float, seed: int = 0) -> np.ndarray:
    """Background hiss at about -80 dBFS: a pause in speech."""
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != sources.FAKE_MIC_ENV}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # see one_torch_thread
    env.update(extra)
    return env


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model gains nothing from threads, and on a busy 2-core machine two OpenMP threads that
    wait on each other made the long-session test ~100x slower (measured: 27 s vs 0.2 s per 10 s)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model_dir(make_model, tmp_path_factory) -> Path:
    return make_model(160).save(tmp_path_factory.mktemp("model") / "tiny")


# -- pacing ----------------------------------------------------------------------------------------
class FakeClock:
    """Seconds that move only when someone sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.sleeps.append(dt)
        self.t += dt


def test_paced_blocks_release_times_and_content():
    x = np.arange(16000 * 2 + 500, dtype=np.float32)  # 2.03 s: the last block is partial
    clock = FakeClock()
    released, blocks = [], []
    for b in paced_blocks(x, block_ms=100, realtime=True, clock=clock, sleep=clock.sleep):
        released.append(clock() - 100.0)
        blocks.append(b)
    assert len(blocks) == 21 and len(blocks[-1]) == 500
    assert np.array_equal(np.concatenate(blocks), x)
    assert released == pytest.approx([i * 0.1 for i in range(21)])  # block i at i * block_ms


def test_paced_blocks_slow_consumer_does_not_drift_and_no_pacing_never_sleeps():
    x = np.zeros(16000, np.float32)
    clock = FakeClock()
    released = []
    for i, _ in enumerate(paced_blocks(x, block_ms=100, clock=clock, sleep=clock.sleep)):
        released.append(clock() - 100.0)
        if i == 2:
            clock.t += 0.35  # the consumer stalls for 350 ms: blocks 3-5 are due, so they come at once
    assert released[:3] == pytest.approx([0.0, 0.1, 0.2])
    assert released[3:6] == pytest.approx([0.55, 0.55, 0.55])
    assert released[6:] == pytest.approx([0.6, 0.7, 0.8, 0.9])  # back on the original schedule
    clock2 = FakeClock()
    assert np.array_equal(np.concatenate(list(paced_blocks(x, realtime=False, clock=clock2, sleep=clock2.sleep))), x)
    assert clock2.sleeps == []


# -- the live loop ---------------------------------------------------------------------------------
def test_live_loop_on_paced_source_equals_one_shot(make_model):
    """The mic path (run_live over a paced source) gives exactly the words of one-shot streaming."""
    model = make_model(160)
    wave = noise_audio(3.0, seed=3)
    clock = FakeClock()  # paced like a microphone, on a fake clock so the test does not wait
    got: list = []
    s = StreamingSession(model, **SETTINGS)
    text = run_live(SegmentedSession(s, None), paced_blocks(wave, 100, clock=clock, sleep=clock.sleep), got.extend)
    ref = one_shot(model, wave)
    assert words_of(s) == words_of(ref) and ref.words
    assert words_of(got) == words_of(ref)  # on_words saw every word once, in order (append-only)
    assert text == ref.text
    assert clock.t - 100.0 == pytest.approx(2.9)  # 30 blocks released over 2.9 s


def test_segmentation_at_a_pause_resets_the_session_and_text_continues(make_model):
    """A pause ends the utterance 300 ms in; the next one starts at the next speech (less 20 ms of pre-roll),
    in a fresh session; word times stay absolute."""
    model = make_model(160)
    a, b = noise_audio(4.0, seed=1), noise_audio(4.0, seed=2)
    wave = np.concatenate([a, quiet(1.0), b])
    states, got = [], []
    s = StreamingSession(model, **SETTINGS)

    def on_segment(seg) -> None:
        st = s.state
        states.append((seg.start, seg.end, seg.rule, st.chunks_read, st.rows, st.samples_in, st.cache.get_seq_length()))

    # the random model asks for EOS at random: rule 3 (the model's end at a pause) is tested on its own
    stream = SegmentedSession(s, EndpointConfig(eos_silence_ms=10_000), on_segment=on_segment)
    text = run_live(stream, paced_blocks(wave, 100, realtime=False), got.extend)
    cut, start2 = len(a) + 4800, len(a) + 16000 - 320
    assert [st[:3] for st in states] == [(0, cut, "silence"), (start2, len(wave), "end")]
    assert states[0][3:] == (0, 0, 0, len(model.prompt_ids))  # fresh state after the cut
    first, second = one_shot(model, wave[:cut]), one_shot(model, wave[start2:])
    assert first.words and second.words
    assert words_of(stream.words) == words_of(first) + [(t, ms + start2 / 16) for t, ms in words_of(second)]
    assert text == " ".join(w.text for w in first.words + second.words)
    assert words_of(got) == words_of(stream.words)
    assert [sg.text for sg in stream.segments] == [first.text, second.text]


def test_max_segment_length_cuts_without_a_pause(make_model):
    model = make_model(160)
    wave = noise_audio(5.0, seed=4)
    stream = SegmentedSession(StreamingSession(model, **SETTINGS), EndpointConfig(max_segment_s=2.0, threshold_db=-200.0))
    run_live(stream, paced_blocks(wave, 100, realtime=False), lambda w: None)
    ref = [one_shot(model, wave[i : i + 32000]) for i in range(0, len(wave), 32000)]  # 2 s + 2 s + 1 s
    assert [(sg.start, sg.end, sg.rule) for sg in stream.segments] == [(0, 32000, "max_length"), (32000, 64000, "max_length"),
                                                                        (64000, 80000, "end")]
    assert stream.text == " ".join(r.text for r in ref if r.text)


@pytest.fixture
def sigint_as_at_a_terminal():
    """Python's own Ctrl-C handler, even when the test run inherited SIGINT ignored (a background job)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_during_a_step_is_held_until_the_step_is_done(make_model, sigint_as_at_a_terminal):
    """SIGINT inside session.push must not leave a half-updated cache: the step completes, then we stop."""
    model = make_model(160)
    wave = noise_audio(2.0, seed=5)
    closed = []

    class InterruptedSession(StreamingSession):
        calls = 0

        def push(self, samples):
            type(self).calls += 1
            if type(self).calls == 5:
                signal.raise_signal(signal.SIGINT)  # as if Ctrl-C came in the middle of this step
            return super().push(samples)

    def source():
        try:
            yield from paced_blocks(wave, 100, realtime=False)
        finally:
            closed.append(True)  # run_live closes the source (the microphone) before finishing

    s = InterruptedSession(model, **SETTINGS)
    text = run_live(SegmentedSession(s, None), source(), lambda w: None)
    ref = one_shot(model, wave[: 5 * BLOCK])
    assert closed == [True] and s.state.finished
    assert s.state.samples_in == 5 * BLOCK
    assert text == ref.text and words_of(s) == words_of(ref)


# -- bounded memory over long sessions --------------------------------------------------------------
def never_ending(model):
    """A copy of the model that never predicts EOS: the worst case for memory (it keeps writing)."""
    m = copy.deepcopy(model)
    eos = m.codec.eos_id

    def no_eos(module, inputs, logits):
        logits = logits.clone()
        logits[..., eos] = float("-inf")
        return logits

    m.llm.lm_head.register_forward_hook(no_eos)
    return m


def cache_bytes(session: StreamingSession) -> int:
    return sum(t.numel() * t.element_size() for layer in session.state.cache.layers
               for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None)


def long_session(model, seconds: int, period_s: float = 10.0, pause_s: float = 0.8) -> dict:
    """Speech-like noise with a pause every ``period_s``, fed through run_live as fast as possible.

    Records the decoder cache (slots and bytes) after every block, per segment.
    """
    s = StreamingSession(model, **SETTINGS)
    per_segment: list[tuple[int, int]] = [(0, 0)]
    n_periods = int(seconds // period_s)

    def blocks():
        for i in range(n_periods):
            x = np.concatenate([noise_audio(period_s - pause_s, seed=i), quiet(pause_s, seed=i)])
            for j in range(0, len(x), BLOCK):
                yield x[j : j + BLOCK]
                # back here once run_live has pushed that block: record what the session holds now
                slots, nbytes = s.state.cache.get_seq_length(), cache_bytes(s)
                per_segment[-1] = (max(per_segment[-1][0], slots), max(per_segment[-1][1], nbytes))

    t = time.perf_counter()
    # pause_after_s: the noise's envelope dips for 100-300 ms every ~1.5 s; rule 1's pause part would cut there
    ep = EndpointConfig(pause_after_s=60.0)
    run_live(SegmentedSession(s, ep, on_segment=lambda seg: per_segment.append((0, 0))), blocks(), lambda w: None)
    cuts = len(per_segment) - 1  # the last entry is the 0.2 s of pause left after the last cut
    return {"seconds": time.perf_counter() - t, "per_segment": per_segment[:cuts], "words": len(s.words), "periods": n_periods}


def test_long_session_memory_is_bounded(make_model):
    model = never_ending(make_model(160))
    r = long_session(model, 200)
    slots = [p[0] for p in r["per_segment"]]
    nbytes = [p[1] for p in r["per_segment"]]
    print(f"\n200 s of audio in {r['seconds']:.1f} s; {len(slots)} segments; cache slots per segment {slots}")
    assert len(slots) == r["periods"] == 20  # one segment per pause
    # a segment is 10 s of audio (cuts come 300 ms into each pause): the cache must stay within what one
    # 10 s utterance holds after finish(), and must not grow with the number of segments
    one = one_shot(model, np.concatenate([quiet(0.2), noise_audio(9.2, seed=0), quiet(0.6)]))
    bound = one.state.cache.get_seq_length()
    assert max(slots) <= bound + 2
    # ... and must not grow with the number of segments (slots vary by a few chunks with where each noise burst's
    # speech starts and ends; the storage behind them doubles in steps, so bytes are the sharper check)
    assert max(nbytes[10:]) <= max(nbytes[:10]) * 1.05
    assert r["words"] > 100  # it kept transcribing all along


@pytest.mark.slow
def test_one_hour_session_memory_is_bounded(make_model):
    model = never_ending(make_model(160))
    r = long_session(model, 3600)
    slots = [p[0] for p in r["per_segment"]]
    print(f"\n3600 s of audio in {r['seconds']:.1f} s; {len(slots)} segments; max cache slots {max(slots)}")
    assert len(slots) == 360
    assert max(slots[-60:]) <= max(slots[:60]) + 2
    assert r["seconds"] < 3600  # faster than real time, even on 2 CPU cores


# -- a real PortAudio stream on an ALSA file device ------------------------------------------------
# alsa-lib's `file` plugin with a `null` slave: capture reads its samples from `infile`, as fast as the
# reader asks (unpaced). PortAudio opens it as FLOAT_LE, so the raw file holds float32 little-endian mono
# samples at the rate opened (the device's default, 44100 Hz). A `plug` in front (to read S16_LE) made
# the file plugin skip one period in two after the third, so it is not used.
ASOUNDRC = """\
pcm.fakein {{
  type file
  slave.pcm "null"
  file "/dev/null"
  infile "{infile}"
  format "raw"
}}
"""

ALSA_SCRIPT = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    import numpy as np
    import soundfile as sf
    from asr_stream.audio import load_audio
    from asr_stream.audio.sources import list_input_devices, microphone_blocks
    from asr_stream.live import run_live
    from asr_stream.model import SpeechLLM
    from asr_stream.streaming import StreamingSession
    from asr_stream.streaming.segment import SegmentedSession

    tmp, model_dir = Path(sys.argv[1]), sys.argv[2]
    dev = next(d for d in list_input_devices() if d["name"] == "fakein")  # PortAudio enumerates here
    rate = int(dev["default_samplerate"])
    rng = np.random.default_rng(0)
    n = 3 * rate
    env = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, n))
    x = (0.1 * rng.standard_normal(n) * env).astype("<f4")
    # 1 s of zeros after the signal: what the resampler looks ahead into (past EOF the device repeats stale data)
    np.concatenate([x, np.zeros(rate, "<f4")]).tofile(tmp / "in.raw")
    sf.write(tmp / "ref.wav", x, rate, subtype="FLOAT")
    ref16 = load_audio(tmp / "ref.wav")

    # the device is unpaced: record first (blocks as microphone_blocks yields them), then run the live loop
    got, total = [], 0
    mic = microphone_blocks(dev["index"], block_ms=100, queue_max=5000)
    for b in mic:
        got.append(b)
        total += b.size
        if total >= ref16.size:
            break
    mic.close()
    y = np.concatenate(got)[: ref16.size]
    blocks = np.split(y, np.cumsum([b.size for b in got])[:-1])

    m = SpeechLLM.load(model_dir)
    live = StreamingSession(m, mode="group", k=3, phi=0.0)
    run_live(SegmentedSession(live, None), blocks, lambda w: None)
    ref = StreamingSession(m, mode="group", k=3, phi=0.0)
    for i in range(0, ref16.size, 1600):
        ref.push(ref16[i : i + 1600])
    ref.finish()
    print(json.dumps({"rate": rate, "blocks": len(got), "first_blocks": [b.size for b in got[:3]],
                      "max_abs_diff": float(np.abs(y - ref16).max()),
                      "live": [[w.text, w.time_ms] for w in live.words], "ref": [[w.text, w.time_ms] for w in ref.words]}))
""")


def alsa_home(tmp: Path) -> Path:
    """A HOME whose ~/.asoundrc defines `fakein`; the infile must exist when PortAudio enumerates devices."""
    home = tmp / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=tmp / "in.raw"))
    (tmp / "in.raw").write_bytes(b"")
    return home


needs_portaudio = needs("portaudio")


@needs_portaudio
def test_real_input_stream_on_alsa_file_device_equals_one_shot(model_dir, tmp_path):
    home = alsa_home(tmp_path)
    (tmp_path / "run.py").write_text(ALSA_SCRIPT)
    p = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path), str(model_dir)], capture_output=True,
                       text=True, env=child_env(HOME=str(home)), timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["rate"] != 16000  # the device's native rate: the stream resampler is exercised
    assert r["max_abs_diff"] == 0.0  # streaming soxr over callback blocks == librosa's one-shot soxr_hq
    assert r["live"] == r["ref"] and r["ref"]


def wait_for(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"never saw {needle!r}: {path.read_text(errors='replace')[-2000:]}")


def interrupt_mic(tmp: Path, args: list[str], env: dict[str, str], sig: int = signal.SIGINT,
                  wait_for_words: bool = False, sigint=signal.SIG_DFL) -> tuple[int, str, str]:
    """Start `asr_stream mic` (with SIGINT at ``sigint``, as a terminal leaves it by default), wait until it listens
    (and, if asked, until it has printed words), then send ``sig`` (Ctrl-C by default) after 1.5 s; return (exit
    code, stdout, stderr)."""
    out, err = tmp / "stdout.txt", tmp / "stderr.txt"
    with out.open("w") as fo, err.open("w") as fe:  # files, not pipes: a full pipe would block the child
        # a job started in the background by a non-interactive shell inherits SIGINT ignored, which the mic
        # command rightly respects; a person at a terminal has it at its default, as the child gets here
        proc = subprocess.Popen([sys.executable, "-m", "asr_stream", "mic", *args], stdout=fo, stderr=fe, env=env, cwd=tmp,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
        try:
            wait_for(err, "listening", proc)
            time.sleep(1.5)
            if wait_for_words:
                end = time.monotonic() + 60
                while time.monotonic() < end and len(out.read_text().split()) < 2:
                    time.sleep(0.1)
            proc.send_signal(sig)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return rc, out.read_text(), err.read_text()


def check_interrupted(rc: int, out: str, err: str, output: Path) -> None:
    assert rc == 0, err[-2000:]
    final = [line for line in out.splitlines() if line.startswith("final: ")]
    assert len(final) == 1, out[-2000:]
    assert output.read_text() == final[0][len("final: "):] + "\n"
    assert "Traceback" not in err


def test_sigint_mid_stream_fake_mic(model_dir, tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, noise_audio(8.0, seed=7), 16000)
    output = tmp_path / "transcript.txt"
    t = time.monotonic()
    rc, out, err = interrupt_mic(tmp_path, ["--model", str(model_dir), "--output", str(output)],
                                 child_env(**{sources.FAKE_MIC_ENV: str(wav)}))
    check_interrupted(rc, out, err, output)
    assert time.monotonic() - t < 60


def test_sigterm_and_sigkill_keep_the_mic_transcript(model_dir, tmp_path):
    """--output is written as words are emitted: SIGTERM stops like Ctrl-C (finish, final line, file complete),
    and even SIGKILL, which nothing can catch, leaves every word printed so far on disk."""
    wav = tmp_path / "speech.wav"
    sf.write(wav, noise_audio(30.0, seed=7), 16000)
    env = child_env(**{sources.FAKE_MIC_ENV: str(wav)})
    output = tmp_path / "transcript.txt"
    rc, out, err = interrupt_mic(tmp_path, ["--model", str(model_dir), "--output", str(output)], env, signal.SIGTERM)
    check_interrupted(rc, out, err, output)
    killed = tmp_path / "killed.txt"
    rc, out, err = interrupt_mic(tmp_path, ["--model", str(model_dir), "--output", str(killed)], env, signal.SIGKILL,
                                 wait_for_words=True)
    assert rc == -signal.SIGKILL
    printed = out.split(": ", 1)[-1].split() if "final:" not in out else []
    on_disk = killed.read_text().split()
    assert len(on_disk) >= 2 and on_disk == out.split()[: len(on_disk)], (on_disk, out)
    assert printed is not None


def test_sigterm_stops_the_mic_started_as_a_background_job(model_dir, tmp_path):
    """A job started in the background has SIGINT ignored; SIGTERM must still stop the mic as Ctrl-C does (finish,
    final line, --output complete) rather than run on to the end of the two-minute recording."""
    wav = tmp_path / "speech.wav"
    sf.write(wav, noise_audio(120.0, seed=7), 16000)
    output = tmp_path / "transcript.txt"
    rc, out, err = interrupt_mic(tmp_path, ["--model", str(model_dir), "--output", str(output)],
                                 child_env(**{sources.FAKE_MIC_ENV: str(wav)}), signal.SIGTERM, wait_for_words=True,
                                 sigint=signal.SIG_IGN)
    check_interrupted(rc, out, err, output)


def test_mic_output_that_cannot_grow_names_the_file_and_the_words_go_on(model_dir, tmp_path):
    """A real write error (the child may not grow a file past 8 bytes: RLIMIT_FSIZE, EFBIG, as a full disk fails):
    the error names --output, once while listening and once at the end; the words go on to the final line; the
    file keeps what fitted; no temporary file is left; exit status 1."""
    import resource

    wav = tmp_path / "speech.wav"
    sf.write(wav, noise_audio(3.0, seed=7), 16000)
    output = tmp_path / "transcript.txt"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8, 8))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the child

    p = subprocess.run([sys.executable, "-m", "asr_stream", "mic", "--model", str(model_dir), "--output", str(output)],
                       capture_output=True, text=True, env=child_env(**{sources.FAKE_MIC_ENV: str(wav)}), cwd=tmp_path,
                       timeout=120, preexec_fn=small_files)
    errors = [line for line in p.stderr.splitlines() if line.startswith("asr-stream: error: ")]
    assert p.returncode == 1 and errors == [
        f"asr-stream: error: cannot write {output}: File too large (the words go on on the screen)",
        f"asr-stream: error: cannot write {output}: File too large"], p.stderr[-2000:]
    final = [line for line in p.stdout.splitlines() if line.startswith("final: ")][0][len("final: "):]
    assert len(final) > 8 and final.startswith(output.read_text()) and len(output.read_text()) == 8
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []


@needs_portaudio
def test_sigint_mid_stream_alsa_device(model_dir, tmp_path):
    home = alsa_home(tmp_path)
    noise_audio(10.0, seed=8).astype("<f4").tofile(tmp_path / "in.raw")  # float32 mono (rate: whatever is opened)
    env = child_env(HOME=str(home))
    p = subprocess.run([sys.executable, "-m", "asr_stream", "mic", "--list-devices"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    index = next(line.split()[0] for line in p.stdout.splitlines() if "fakein" in line)
    output = tmp_path / "transcript.txt"
    rc, out, err = interrupt_mic(tmp_path, ["--model", str(model_dir), "--device-index", index, "--output", str(output)], env)
    check_interrupted(rc, out, err, output)


# -- one-line errors ---------------------------------------------------------------------------------
class FakeSD:
    """Just enough of the sounddevice module for device selection."""

    class PortAudioError(Exception):
        pass

    def __init__(self, devices: list[dict], default_input: int = 0) -> None:
        self._devices = devices
        self._default = default_input

    def query_devices(self, device=None, kind=None):
        if kind == "input":
            if self._default < 0:
                raise self.PortAudioError("no default input device")
            return {**self._devices[self._default], "index": self._default}
        return self._devices


DEVICES = [{"name": "Built-in Mic", "max_input_channels": 2, "max_output_channels": 0, "default_samplerate": 48000.0},
           {"name": "Speakers", "max_input_channels": 0, "max_output_channels": 2, "default_samplerate": 48000.0}]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    from asr_stream.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    return e.value.code, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asr-stream: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_device_selection():
    devices = [DEVICES[1], DEVICES[0], {**DEVICES[0], "name": "USB Headset"}]
    assert sources._resolve_input(FakeSD(devices, default_input=2), None)["name"] == "USB Headset"
    assert sources._resolve_input(FakeSD(devices, default_input=-1), None)["index"] == 1  # first that records
    assert sources._resolve_input(FakeSD(devices), "usb")["index"] == 2  # by (part of) its name
    assert sources._resolve_input(FakeSD(devices), 1)["name"] == "Built-in Mic"
    with pytest.raises(AudioSourceError, match="no input device with index 0"):
        sources._resolve_input(FakeSD(devices), 0)  # an output-only device


def test_error_unknown_device_index(monkeypatch, capsys, model_dir):
    monkeypatch.delenv(sources.FAKE_MIC_ENV, raising=False)
    monkeypatch.setattr(sources, "_sounddevice", lambda: FakeSD(DEVICES))
    assert_one_line(*run_main(["mic", "--model", str(model_dir), "--device-index", "7"], capsys),
                    "no input device with index 7; see --list-devices")
    # an output-only device is not an input device either
    assert_one_line(*run_main(["mic", "--model", str(model_dir), "--device-index", "1"], capsys), "index 1")


def test_error_no_input_device(monkeypatch, capsys):
    monkeypatch.delenv(sources.FAKE_MIC_ENV, raising=False)
    monkeypatch.setattr(sources, "_sounddevice", lambda: FakeSD(DEVICES[1:]))
    assert_one_line(*run_main(["mic", "--list-devices"], capsys), "no audio input device")


def test_error_portaudio_missing(monkeypatch, capsys):
    import builtins

    monkeypatch.delenv(sources.FAKE_MIC_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # what sounddevice raises at import
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert_one_line(*run_main(["mic", "--list-devices"], capsys),
                    "PortAudio library not found", "apt-get install libportaudio2")
    with pytest.raises(AudioSourceError, match="libportaudio2"):
        microphone_blocks(None)


def test_error_missing_model_dir(monkeypatch, capsys, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, noise_audio(0.5), 16000)
    monkeypatch.setenv(sources.FAKE_MIC_ENV, str(wav))
    missing = tmp_path / "no-model"
    assert_one_line(*run_main(["mic", "--model", str(missing)], capsys), "not a model directory")
    assert_one_line(*run_main(["transcribe", str(wav), "--model", str(missing)], capsys), "not a model directory")
    # no --model and no bundled model
    import asr_stream

    monkeypatch.setattr(asr_stream, "DEFAULT_MODEL_DIR", tmp_path / "assets" / "default_model")
    assert_one_line(*run_main(["mic"], capsys), "no bundled model found at", "pass --model DIR")
    assert_one_line(*run_main(["transcribe", str(wav)], capsys), "no bundled model found at")


def test_error_bad_audio_and_output_folder(monkeypatch, capsys, tmp_path, model_dir):
    monkeypatch.setenv(sources.FAKE_MIC_ENV, str(tmp_path / "missing.wav"))
    assert_one_line(*run_main(["mic", "--model", str(model_dir)], capsys), "missing.wav: no such file")
    monkeypatch.delenv(sources.FAKE_MIC_ENV)
    assert_one_line(*run_main(["mic", "--model", str(model_dir), "--output", str(tmp_path / "nope" / "t.txt")], capsys),
                    "t.txt", "does not exist")


def test_watch_level_says_once_and_live_that_the_microphone_is_quiet():
    """A muted microphone or a low input gain is said while the user speaks, once, after quiet_after_s seconds; the
    blocks pass through unchanged, and closing the watch closes the source (the microphone stops)."""
    from asr_stream.audio.io import LevelCheck
    from asr_stream.live import watch_level

    closed = []

    def source(level: float, seconds: int = 14):
        rng = np.random.default_rng(0)
        try:
            for _ in range(seconds):
                yield (level * rng.standard_normal(16000)).astype(np.float32)
        finally:
            closed.append(level)

    said, when = [], []
    blocks = []
    for b in watch_level(source(1e-3), LevelCheck(), said.append):  # -60 dBFS: a muted microphone's hiss
        blocks.append(b)
        when.extend([len(blocks)] * (len(said) - len(when)))
    assert when == [10] and "nothing louder than -60 dBFS in 10 s" in said[0], (when, said)
    assert np.array_equal(np.concatenate(blocks), np.concatenate(list(source(1e-3))))
    said.clear()
    assert len(list(watch_level(source(0.1), LevelCheck(), said.append))) == 14 and said == []  # -20 dBFS: fine
    w = watch_level(source(0.2), LevelCheck(), said.append)
    next(w)
    w.close()
    assert closed[-1] == 0.2


def test_mic_warns_about_a_quiet_microphone(monkeypatch, capsys, tmp_path, model_dir):
    from asr_stream.cli import main

    wav = tmp_path / "quiet.wav"
    sf.write(wav, noise_audio(1.5) * 0.02, 16000)  # about -40 dBFS
    monkeypatch.setenv(sources.FAKE_MIC_ENV, str(wav))
    main(["mic", "--model", str(model_dir)])
    out, err = capsys.readouterr()
    assert "final: " in out
    lines = [line for line in err.splitlines() if line.startswith("asr-stream: warning: microphone: quiet")]
    assert len(lines) == 1 and "input gain" in lines[0] and "sox" not in lines[0], err
    sf.write(wav, noise_audio(1.5) * 3, 16000)  # about -14 dBFS
    main(["mic", "--model", str(model_dir)])
    assert "quiet" not in capsys.readouterr().err


# -- transcribe: --json and --realtime ---------------------------------------------------------------
def test_transcribe_json_and_realtime(make_model, model_dir, tmp_path, capsys):
    from asr_stream.cli import main

    wave = noise_audio(1.0, seed=9)
    wav = tmp_path / "a.wav"
    sf.write(wav, wave, 16000, subtype="FLOAT")
    out = tmp_path / "r.json"
    t = time.perf_counter()
    main(["transcribe", str(wav), "--model", str(model_dir), "--realtime", "--json", str(out)])
    wall = time.perf_counter() - t
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    (f,) = r["files"]
    ref = one_shot(make_model(160), wave)
    assert [(w["text"], w["time_ms"]) for w in f["words"]] == words_of(ref)
    assert f["text"] == ref.text and f"final: {ref.text}" in printed
    assert f["audio_s"] == pytest.approx(1.0)
    assert 0 < f["compute_s"] < wall and f["rtf"] == pytest.approx(f["compute_s"] / f["audio_s"])
    assert wall >= 0.9  # paced: block 9 is released 0.9 s after block 0
    assert r["settings"]["realtime"] is True and r["settings"]["k"] == 3
