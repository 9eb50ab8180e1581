"""The Silero VAD network (asr_stream/audio/vad.py): the package's own model, streamed, and its frame decisions."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from asr_stream.audio import vad

from ..conftest import noise_audio
from ..sysdeps import needs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None,
                                reason="silero-vad is not installed (make install installs requirements/silero-vad.txt)")


@pytest.fixture(scope="module")
def model() -> vad.SileroVAD:
    return vad.SileroVAD.load()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two seconds or so of espeak-ng speech, no silence around it."""
    from asr_stream.corpus import engines

    x, _ = engines.speak("the quick brown fox jumps over the lazy dog", "en-us")
    nz = np.flatnonzero(np.abs(x) > 1e-3)
    return x[nz[0] : nz[-1] + 1]


@needs("espeak-ng")
def test_the_network_is_the_packages_own(model, speech) -> None:
    """With the package's TorchScript weights, our module gives its TorchScript model's scores exactly (a check of
    the layer order, padding, context and state; the TorchScript file is read here only, as a reference)."""
    jit_path = vad.weights_path().with_name("silero_vad.jit")
    ref_model = torch.jit.load(str(jit_path)).eval()
    sd = ref_model._model.state_dict()
    names = {"stft.forward_basis_buffer": "stft_conv.weight",
             **{f"encoder.{i}.reparam_conv.{w}": f"conv{i + 1}.{w}" for i in range(4) for w in ("weight", "bias")},
             **{f"decoder.rnn.{w}": f"lstm_cell.{w}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
             "decoder.decoder.2.weight": "final_conv.weight", "decoder.decoder.2.bias": "final_conv.bias"}
    ours = vad.SileroVAD()
    ours.load_state_dict({b: sd[a] for a, b in names.items()}, strict=True)
    x = np.concatenate([np.zeros(4000, np.float32), speech, noise_audio(1.0)])
    got = ours.eval().probabilities(x)
    ref_model.reset_states()
    with torch.no_grad():
        want = np.array([float(ref_model(torch.from_numpy(x[i : i + 512]), 16000)) for i in range(0, x.size - 511, 512)])
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    assert want.max() > 0.9 and want[:6].max() < 0.2  # the comparison is over speech and silence both


@needs("espeak-ng")
def test_streaming_in_any_block_size_equals_one_push(model, speech) -> None:
    x = np.concatenate([np.zeros(3000, np.float32), speech, np.zeros(2000, np.float32)])
    whole = model.probabilities(x)
    stream, got = vad.VADStream(model), []
    rng = np.random.default_rng(0)
    i = 0
    while i < x.size:
        n = int(rng.integers(1, 1500))
        got.extend(stream.push(x[i : i + n]).tolist())
        i += n
    assert len(got) == x.size // vad.WINDOW and np.allclose(got, whole, atol=1e-6)


@needs("espeak-ng")
def test_detector_marks_speech_and_silence_frames(model, speech) -> None:
    """Silence, speech, silence: every frame is decided once, in order, at most 32 ms late; the quiet
    parts are silent and the voiced part is speech (allowing the VAD's own onset and hangover)."""
    sil = np.zeros(8000, np.float32)
    x = np.concatenate([sil, speech, sil])
    n_speech = speech.size // 160
    det = vad.SileroDetector(model)
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    decided, lag = [], 0
    for i in range(0, len(frames), 7):  # 70 ms blocks
        out = det.push(frames[i : i + 7])
        decided.extend(out.tolist())
        lag = max(lag, min(i + 7, len(frames)) - len(decided))
    decided.extend(det.flush().tolist())
    silent = np.array(decided)
    assert silent.size == len(frames) and lag <= 4  # 4 frames: a 512-sample window is 3.2 frames
    assert silent[:45].all() and silent[-20:].all()  # 0-450 ms of digital silence; the tail after the hangover
    assert (~silent[50 : 50 + n_speech]).mean() > 0.8  # the speech (gaps between words may be silent)


def test_detector_calls_steady_hiss_silence(model) -> None:
    det = vad.SileroDetector(model)
    x = noise_audio(3.0, seed=3)
    silent = np.concatenate([det.push(x[: x.size // 160 * 160].reshape(-1, 160)), det.flush()])
    assert silent.mean() > 0.9


def test_missing_package_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(vad.VADError, match=r"^the silero VAD needs the package silero-vad==6.2.3: pip install") as e:
        vad.weights_path()
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="threshold"):
        vad.SileroDetector(vad.SileroVAD(), threshold=1.5)


@needs("espeak-ng")
@pytest.mark.parametrize("block", [160, 5120, 1733])
def test_endpointer_with_silero_keeps_every_word_and_loses_no_sample(block) -> None:
    """Three sentences with pauses of 0.4 and 1.2 s, in white noise at 20 dB SNR, the stream ending in speech: with the
    silero detector each sentence is one segment that holds all its words (espeak-ng's word times), and the audio
    the sink is fed is the stream's, in order, with no sample twice, up to the stream's last sample (the frames the
    detector had not decided yet at the end are not lost), whatever the block size."""
    from asr_stream.corpus import engines
    from asr_stream.streaming.segment import EndpointConfig, Endpointer

    from .test_endpointing import Recorder

    rng = np.random.default_rng(0)
    parts, spans, t = [np.zeros(6400, np.float32)], [], 6400
    for text, pause in (("the cat sat on the mat", 0.4), ("it was a sunny day in the park", 1.2),
                        ("nobody heard the bell ring twice", 0.0)):
        x, sp = engines.speak(text, "en-us")
        spans.append([(t + int(a * 16000), t + int(b * 16000)) for a, b in sp])
        parts += [x, np.zeros(int(pause * 16000), np.float32)]
        t += x.size + int(pause * 16000)
    wave = np.concatenate(parts)
    power = np.mean(np.concatenate(parts[1::2]) ** 2)
    wave = (wave + np.sqrt(power / 100) * rng.standard_normal(wave.size)).astype(np.float32)
    sink = Recorder()
    # pause_after_s: no 100 ms-pause cuts inside a sentence (that rule is tested in test_endpointing.py)
    ep = Endpointer(EndpointConfig(detector="silero", pause_after_s=60.0), sink, feed_samples=2560)
    for i in range(0, wave.size, block):
        ep.push(wave[i : i + block])
    ep.close()
    starts = [st for st, _ in sink.fed]
    assert all(b >= a + len(x) for (a, x), b in zip(sink.fed, starts[1:]))
    for st, x in sink.fed:
        assert np.array_equal(x, wave[st : st + len(x)])
    assert [c[2] for c in sink.cuts] == ["silence", "silence", "end"]
    assert sink.cuts[-1][0] == wave.size and starts[-1] + len(sink.fed[-1][1]) == wave.size
    bounds = [(sink.fed[0][0], sink.cuts[0][0])] + [
        (next(st for st, _ in sink.fed if st >= sink.cuts[i - 1][0]), sink.cuts[i][0]) for i in (1, 2)]
    for (seg_start, seg_end), words in zip(bounds, spans):
        assert seg_start <= words[0][0] and words[-1][1] <= seg_end


@needs("espeak-ng")
@pytest.mark.parametrize("block", [160, 1733, 16000])
def test_endpointer_with_silero_cuts_a_long_segment_its_pre_roll_before_the_speech_after_a_short_pause(model, block):
    """Rule 1's pause with silero: a 3.1 s sentence, 250 ms of silence (silero, with its hangover, calls 100-300 ms of
    it silent), a second sentence. The first segment ends 80 ms (silero's pre-roll, EndpointConfig.pre_roll) before
    the frame silero calls speech again, the second starts there with all 80 ms, and every sample is fed once, in
    order, whatever the block size. (Ending 100 ms into silero's pause would clip the second one's pre-roll.)"""
    from asr_stream.corpus import engines
    from asr_stream.streaming.segment import EndpointConfig, Endpointer

    from .test_endpointing import Recorder, segments_fed

    def trimmed(text: str) -> np.ndarray:
        x, _ = engines.speak(text, "en-us")
        nz = np.flatnonzero(np.abs(x) > 1e-3)
        return x[nz[0] : nz[-1] + 1]

    a = trimmed("the quick brown fox jumps over the lazy dog near the river")
    b = trimmed("it was a sunny day in the park")
    wave = np.concatenate([np.zeros(3200, np.float32), a, np.zeros(4000, np.float32), b, np.zeros(8000, np.float32)])
    a_end, b_start = 3200 + a.size, 3200 + a.size + 4000
    det = vad.SileroDetector(model, 0.7, 160)  # the endpointer's decisions, made here on their own
    silent = np.concatenate([det.push(wave[: wave.size // 160 * 160].reshape(-1, 160)), det.flush()])
    quiet_from = a_end // 160 + int(np.argmax(silent[a_end // 160 :]))
    back = quiet_from + int(np.argmin(silent[quiet_from:]))  # the first frame silero calls speech after the pause
    assert 10 <= back - quiet_from < 30 and a_end < back * 160 <= b_start + 960  # the pause is one for rule 1's pause
    sink = Recorder()
    ep = Endpointer(EndpointConfig(detector="silero"), sink, feed_samples=2560)
    for i in range(0, wave.size, block):
        ep.push(wave[i : i + block])
    ep.close()
    cut = back * 160 - 1280
    assert sink.cuts[0] == (cut, quiet_from * 160, "pause") and [c[2] for c in sink.cuts[1:]] == ["silence"]
    assert next(st for st, _ in sink.fed if st >= cut) == cut  # the next segment starts with the whole pre-roll
    pieces = segments_fed(sink)
    first = sink.fed[0][0]
    assert first <= 3200 and len(pieces) == 2 and len(pieces[0]) == cut - first
    assert np.array_equal(np.concatenate(pieces), wave[first : sink.cuts[1][0]])  # every sample once, in order


def test_cli_vad_silero_transcribes_the_sample_and_records_it(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "o.json"
    r = subprocess.run([sys.executable, "-m", "asr_stream", "transcribe", str(repo / "asr_stream/assets/sample.wav"),
                        "--vad", "silero", "--json", str(out)], capture_output=True, text=True, cwd=repo,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["segmentation"]["vad"] == "silero"
    assert result["files"][0]["text"] == (repo / "asr_stream/assets/sample.txt").read_text().strip()


def test_cli_vad_silero_without_the_package_fails_before_any_work(monkeypatch) -> None:
    from asr_stream.cli.options import EndpointOptions

    vad.shared_model.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(ValueError, match=r"^--vad silero: the silero VAD needs the package silero-vad==6.2.3"):
            EndpointOptions(vad="silero").config()
    finally:
        vad.shared_model.cache_clear()
    assert EndpointOptions(vad="energy").config().detector == "energy"
