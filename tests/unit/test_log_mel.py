import librosa
import numpy as np
import torch

from asr_stream.audio.features import LogMel, mel_filterbank
from asr_stream.config import FeatureConfig


def test_filterbank_matches_librosa_htk():
    ours = mel_filterbank(80, 512, 16000, 20.0, 7600.0).T.numpy()
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=20.0, fmax=7600.0, htk=True, norm=None)
    assert np.abs(ours - ref).max() < 1e-5


def test_logmel_matches_librosa_within_1e3():
    """Independent path: librosa's STFT (window centred in n_fft, centre=False) + its own HTK filters.

    librosa centres the 400-sample window inside the 512-point frame, so its frame t starts 56 samples
    earlier; padding the signal by 56 on both sides lines the frames up exactly.
    """
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    cfg = FeatureConfig()
    ours = LogMel(cfg)(torch.from_numpy(x)[None])[0].double().numpy()
    pad = (512 - 400) // 2
    ref = librosa.feature.melspectrogram(
        y=np.pad(x, pad).astype(np.float64), sr=16000, n_fft=512, win_length=400, hop_length=160, window="hann",
        center=False, power=2.0, n_mels=80, fmin=20.0, fmax=7600.0, htk=True, norm=None,
    )
    ref = np.log(np.maximum(ref, 1e-10)).T
    assert ours.shape == ref.shape == (1 + (16000 - 400) // 160, 80)
    assert np.abs(ours - ref).max() < 1e-3


def test_batched_and_device_agnostic():
    lm = LogMel()
    x = torch.randn(3, 8000)
    both = lm(x)
    assert both.shape == (3, 48, 80)
    assert torch.allclose(both[1], lm(x[1:2])[0], atol=1e-5)
