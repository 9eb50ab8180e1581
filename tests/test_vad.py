"""The Silero VAD network (asr_stream/audio/vad.py): the package's own model, streamed, and its frame decisions."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from asr_stream.audio import vad

from .conftest import noise_audio
from .sysdeps import needs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None,
                                reason="silero-vad is not installed (make install installs requirements/silero-vad.txt)")


@pytest.fixture(scope="module")
def model() -> vad.SileroVAD:
    return vad.SileroVAD.load()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two seconds or so of espeak-ng speech, no silence around it."""
    from asr_stream.data import engines

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
