"""Training augmentation: each effect does what it says, the chain is seeded and reproducible, and the
data pipeline and YAML reach it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_stream.training import augment as A

SR = 16_000


def _sine(f: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)])


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))


def test_speed_changes_duration_and_pitch() -> None:
    x = _sine(500.0)
    y = A.speed(x, 0.9)
    assert len(y) == pytest.approx(len(x) / 0.9, abs=2)
    assert _peak_hz(y) == pytest.approx(450.0, abs=3)
    assert A.speed(x, 1.0) is x


def test_pitch_shift_keeps_duration() -> None:
    x = _sine(440.0)
    y = A.pitch_shift(x, 12.0)
    assert len(y) == len(x) and _peak_hz(y) == pytest.approx(880.0, abs=5)
    assert _peak_hz(A.pitch_shift(x, -3.0)) == pytest.approx(440 * 2 ** (-3 / 12), abs=5)


def test_gain_clip_silence() -> None:
    x = _sine(300.0)
    assert _db(A.gain(x, -35.0)) - _db(x) == pytest.approx(-35.0, abs=0.01)
    c = A.clip(x, 0.2)
    assert np.max(np.abs(c)) == pytest.approx(0.1, rel=1e-5) and np.mean(np.abs(c) >= 0.0999) > 0.5
    p = A.pad_silence(x, 0.25, 0.5)
    assert len(p) == len(x) + 4000 + 8000
    assert not p[:4000].any() and not p[-8000:].any() and np.array_equal(p[4000:-8000], x)


def test_telephone_band() -> None:
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    y = A.telephone(x)
    assert len(y) == len(x)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    X, Y = np.abs(np.fft.rfft(x)) ** 2, np.abs(np.fft.rfft(y)) ** 2
    hi, lo = f > 4200, (f > 300) & (f < 3500)
    assert 10 * np.log10(Y[hi].sum() / X[hi].sum()) < -40  # nothing above 4 kHz
    assert 10 * np.log10(Y[lo].sum() / X[lo].sum()) == pytest.approx(0.0, abs=0.5)


def test_noise_at_snr() -> None:
    x = _sine(300.0)
    y = A.add_noise(x, 10.0, np.random.default_rng(1))
    assert _db(x) - _db(y - x) == pytest.approx(10.0, abs=0.2)
    padded = A.pad_silence(x, 1.0, 0.0)  # SNR is that of the speech, not diluted by the silence
    z = A.add_noise(padded, 10.0, np.random.default_rng(1), reference=x)
    assert _db(x) - _db(z - padded) == pytest.approx(10.0, abs=0.2)


def test_reverb_decays_at_rt60() -> None:
    ir = A.room_response(np.random.default_rng(0), 0.5, 0.8)
    click = np.zeros(SR, np.float32)
    click[0] = 1.0
    y = A.reverberate(click, ir)
    assert len(y) == len(click)
    w = int(0.05 * SR)
    early, late = _db(y[int(0.05 * SR): int(0.05 * SR) + w]), _db(y[int(0.35 * SR): int(0.35 * SR) + w])
    assert early - late == pytest.approx(60 * 0.3 / 0.5, abs=3)  # -60 dB per rt60 -> 36 dB over 0.3 s
    speech = _sine(300.0)
    assert _db(A.reverberate(speech, ir)) == pytest.approx(_db(speech), abs=0.01)  # loudness kept


ALL_ON = A.AugmentConfig(pitch_prob=1, reverb_prob=1, silence_prob=1, telephone_prob=1, noise_prob=1, gain_prob=1,
                         clip_prob=1)


def test_chain_is_seeded_and_each_effect_can_be_switched() -> None:
    x = _sine(300.0, 0.5) + _sine(5000.0, 0.5, 0.2)
    a = A.augment(x, ALL_ON, A.utterance_rng(3, 0, 7))
    b = A.augment(x, ALL_ON, A.utterance_rng(3, 0, 7))
    c = A.augment(x, ALL_ON, A.utterance_rng(3, 1, 7))  # next epoch: new draws
    assert np.array_equal(a, b) and not np.array_equal(a[: len(c)], c[: len(a)])
    assert np.array_equal(A.augment(x, A.AugmentConfig(), A.utterance_rng(3, 0, 7)), x)  # all off: unchanged
    assert not A.AugmentConfig().active and ALL_ON.active
    # Switching one effect off leaves the draws of the others as they were: silence alone, with and without gain.
    only_silence = A.augment(x, A.AugmentConfig(silence_prob=1), A.utterance_rng(3, 0, 7))
    with_gain = A.augment(x, A.AugmentConfig(silence_prob=1, gain_prob=1), A.utterance_rng(3, 0, 7))
    assert len(only_silence) == len(with_gain) > len(x)
    lead = int(np.flatnonzero(only_silence)[0])
    assert lead > 0 and np.flatnonzero(with_gain)[0] == lead
    ratio = np.max(np.abs(with_gain)) / np.max(np.abs(only_silence))
    assert 10 ** (-35 / 20) - 1e-6 <= ratio <= 10 ** (6 / 20) + 1e-6


def test_config_from_yaml_dict() -> None:
    cfg = A.AugmentConfig.from_dict({"gain_prob": 0.5, "gain_db": [-20, 0]})
    assert cfg.gain_db == (-20, 0) and cfg.gain_prob == 0.5
    with pytest.raises(ValueError, match="unknown key.*gain_pro"):
        A.AugmentConfig.from_dict({"gain_pro": 0.5})
    with pytest.raises(ValueError, match="gain_prob must be a probability"):
        A.AugmentConfig.from_dict({"gain_prob": 2})
    with pytest.raises(ValueError, match="snr_db must be a"):
        A.AugmentConfig.from_dict({"snr_db": [30, 0]})


def _manifest(tmp_path: Path, n: int = 3) -> Path:
    import json

    lines = []
    for i in range(n):
        p = tmp_path / f"u{i}.flac"
        sf.write(str(p), _sine(200.0 + 100 * i, 0.5), SR)
        lines.append(json.dumps({"audio_filepath": str(p), "duration": 0.5, "text": f"WORD {i}"}))
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(lines) + "\n")
    return m


def test_dataset_reproducible_whatever_the_order(tmp_path: Path) -> None:
    from asr_stream.data import read_manifest
    from asr_stream.training.data import DurationBatchSampler, UtteranceDataset

    utts = read_manifest(_manifest(tmp_path))
    cfg = A.AugmentConfig(silence_prob=1, gain_prob=1, noise_prob=1)
    ds1 = UtteranceDataset(utts, [0.9, 1.0, 1.1], seed=5, augment=cfg)
    ds2 = UtteranceDataset(utts, [0.9, 1.0, 1.1], seed=5, augment=cfg)
    forward = [ds1[(i, 2)][0] for i in range(3)]
    backward = [ds2[(i, 2)][0] for i in reversed(range(3))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))
    assert not np.array_equal(ds1[(0, 3)][0][:100], forward[0][:100]) or len(ds1[(0, 3)][0]) != len(forward[0])
    assert all(len(w) > 0.5 * SR for w in forward)  # silence was added
    plain = UtteranceDataset(utts)[0][0]
    assert np.array_equal(plain, sf.read(str(utts[0].audio_path), dtype="float32")[0])  # nothing by default
    sampler = DurationBatchSampler(utts, 10.0, True, 0, tag_epoch=True)
    sampler.set_epoch(4)
    assert all(isinstance(k, tuple) and k[1] == 4 for b in sampler for k in b)
    with pytest.raises(ValueError, match="speed_perturb factors"):
        UtteranceDataset(utts, [0.0])


def test_speed_perturbation_is_real_in_the_dataset(tmp_path: Path) -> None:
    """The LibriSpeech config's speed_perturb [0.9, 1.0, 1.1] changes what training reads."""
    from asr_stream.data import read_manifest
    from asr_stream.training.data import UtteranceDataset

    utts = read_manifest(_manifest(tmp_path, 1))
    ds = UtteranceDataset(utts, [0.9, 1.1], seed=0)
    lengths = sorted({len(ds[(0, e)][0]) for e in range(12)})
    assert len(lengths) == 2  # both factors drawn over 12 epochs
    assert lengths[0] == pytest.approx(8000 / 1.1, abs=1) and lengths[1] == pytest.approx(8000 / 0.9, abs=1)


def test_datamodule_takes_augment_from_yaml(tmp_path: Path) -> None:
    from asr_stream.training.datamodule import SpeechDataModule

    m = str(_manifest(tmp_path))
    dm = SpeechDataModule(train=[m], augment={"silence_prob": 1.0, "lead_silence_s": [0.5, 0.5], "trail_silence_s": [0, 0]})
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert int(batch.wave_lens.min()) == 8000 + 8000  # every utterance got 0.5 s of silence in front
    with pytest.raises(ValueError, match="augment: unknown key"):
        SpeechDataModule(train=[m], augment={"echo": 1})


def test_spec_augment_in_training_only_and_seeded() -> None:
    from asr_stream.audio.features import spec_augment

    feats = torch.randn(2, 200, 80)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = spec_augment(feats, generator=g1), spec_augment(feats, generator=g2)
    assert torch.equal(a, b) and not torch.equal(a, feats)
    zero_cols = (a == 0).all(dim=1).sum().item() + (a == 0).all(dim=2).sum().item()
    assert zero_cols > 0  # whole frequency bands or time spans masked


def test_spec_augment_is_the_encoders_switch() -> None:
    """model.encoder.spec_augment masks the features in training only, reproducibly under torch's seed."""
    from asr_stream.config import EncoderConfig
    from asr_stream.encoder import build_encoder

    wave = torch.randn(1, 2 * 5120) * 0.1
    outs = {}
    for on in (False, True):
        enc = build_encoder(EncoderConfig(chunk_ms=320, d_model=32, n_layers=1, n_heads=2, dropout=0.0, spec_augment=on))
        enc.train()
        torch.manual_seed(0)
        a = enc._front(wave, torch.zeros(1, enc.logmel.context))
        torch.manual_seed(0)
        b = enc._front(wave, torch.zeros(1, enc.logmel.context))
        enc.eval()
        c = enc._front(wave, torch.zeros(1, enc.logmel.context))
        assert torch.equal(a, b)
        outs[on] = (a, c)
    assert torch.equal(outs[False][0], outs[False][1])  # off: training sees the plain features
    assert not torch.equal(outs[True][0], outs[True][1])  # on: training differs from evaluation


def test_multi_engine_recipe_config() -> None:
    """The recipe's multi-engine corpus trains on no evaluation-only speaker, and its YAML's augmentation and
    SpecAugment are valid and on."""
    import re

    import yaml

    from asr_stream.corpus import engines

    repo = Path(__file__).resolve().parents[2]
    run = (repo / "recipes" / "synthetic" / "run.sh").read_text()
    espeak = re.search(r'espeak_voices="([^"]+)"', run).group(1)
    voices = re.search(r'\n\s+voices="([^"]+)"', run).group(1).replace("$espeak_voices", espeak).split(",")
    assert len(voices) == 24 and "en-us" in voices
    engines.check_training_voices(voices)
    assert {"flite:awb", "flite:rms", "festival:ked_diphone"} <= set(voices)
    cfg = yaml.safe_load((repo / "conf" / "tiny_synthetic_multi.yaml").read_text())
    aug = A.AugmentConfig.from_dict(cfg["data"]["augment"])
    assert aug.silence_prob > 0 and aug.gain_db == (-35.0, 6.0) and aug.active
    assert cfg["model"]["model"]["encoder"]["spec_augment"] is True
    assert cfg["data"]["speed_perturb"] == [0.9, 1.0, 1.1]


def test_nonspeech_examples_replace_audio_and_transcript(tmp_path: Path) -> None:
    """nonspeech_prob: silence or noise of the utterance's length at nonspeech_dbfs, with an empty transcript;
    seeded, and switching it on changes no other augmentation's draws."""
    cfg = A.AugmentConfig(nonspeech_prob=1.0, nonspeech_dbfs=(-40.0, -20.0))
    kinds = set()
    for i in range(30):
        x = A.nonspeech(8000, cfg, A.utterance_rng(0, 0, i))
        assert x is not None and len(x) == 8000 and x.dtype == np.float32
        if not x.any():
            kinds.add("silence")
            continue
        assert -40.5 <= _db(x) <= -19.5
        low = np.abs(np.fft.rfft(x))[1:400].mean() / np.abs(np.fft.rfft(x))[2000:].mean()  # < 500 Hz over > 2 kHz
        kinds.add("pink" if low > 3 else "white")
    assert kinds == set(A.NONSPEECH_KINDS)
    assert A.nonspeech(8000, A.AugmentConfig(nonspeech_prob=0.0), A.utterance_rng(0, 0, 1)) is None
    assert np.array_equal(A.nonspeech(8000, cfg, A.utterance_rng(0, 0, 5)), A.nonspeech(8000, cfg, A.utterance_rng(0, 0, 5)))
    with pytest.raises(ValueError, match="nonspeech_dbfs must be <= 0"):
        A.AugmentConfig(nonspeech_dbfs=(-10.0, 3.0))

    from asr_stream.data import read_manifest
    from asr_stream.training.data import UtteranceDataset

    utts = read_manifest(_manifest(tmp_path))
    chain = dict(silence_prob=1, gain_prob=1)
    plain = UtteranceDataset(utts, seed=2, augment=A.AugmentConfig(**chain))
    half = UtteranceDataset(utts, seed=2, augment=A.AugmentConfig(**chain, nonspeech_prob=0.5))
    texts = []
    for e in range(8):
        for i in range(3):
            (a, ta), (b, tb) = plain[(i, e)], half[(i, e)]
            assert ta == f"WORD {i}" and len(a) == len(b)  # same chain draws: the same (padded) length
            assert tb in ("", ta) and (tb == "") == (not np.array_equal(a, b))
            texts.append(tb)
    assert 0 < texts.count("") < len(texts)


def test_an_empty_transcript_trains_eos_and_streams_like_training(make_model, codec) -> None:
    """An empty target is one row (BOS -> EOS) that sees k chunks; its loss is finite, it has gradients, and a
    teacher-forced session gives the same logits."""
    from asr_stream.model import Batch
    from asr_stream.streaming import StreamingSession

    from ..conftest import SENTENCES, TOL, noise_audio

    model = make_model(320)
    wave = noise_audio(2.3, seed=4)
    full = [codec.encode(SENTENCES[0]), []]
    batch = Batch(torch.from_numpy(np.stack([wave, wave])), torch.tensor([len(wave)] * 2), full)
    model.train()
    try:
        out = model(batch, mode="group", k=2, phi=0.0)
        out.loss.backward()
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
    assert torch.isfinite(out.loss) and out.n_tokens == len(full[0]) + 1 + 1
    assert out.target_logits[1].shape == (1, len(codec))
    with torch.no_grad():
        ref = model(Batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), [[]]), mode="group", k=2, phi=0.0)
    s = StreamingSession(model, mode="group", k=2, phi=0.0)
    s.teacher_force([])
    s.push(wave)
    s.finish()
    assert len(s.logits) == 1 and (s.logits[0] - ref.target_logits[0][0]).abs().max().item() <= TOL
