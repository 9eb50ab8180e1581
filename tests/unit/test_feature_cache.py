"""data.features: a frozen encoder's outputs cached once (asr_stream.training.features) train exactly as the audio does."""

import json
from dataclasses import replace

import pytest
import soundfile as sf
import torch

from asr_stream.config import EncoderConfig
from asr_stream.data import Utterance, write_manifest
from asr_stream.presets import test_sized

from ..conftest import SENTENCES, noise_audio

AUGMENT = dict(silence_prob=0.5, gain_prob=0.5, noise_prob=0.5, snr_db=[5.0, 30.0], nonspeech_prob=0.2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, codec, short_positions_whisper_dir):
    root = tmp_path_factory.mktemp("cache")
    utts = []
    for i in range(10):
        d = 0.4 + 0.15 * (i % 5)
        sf.write(root / f"u{i}.flac", noise_audio(d, seed=i), 16000)
        utts.append(Utterance(f"u{i}", root / f"u{i}.flac", SENTENCES[i % len(SENTENCES)], d))
    manifest = write_manifest(utts, root / "train.jsonl")
    codec.save(root / "tok")
    cfg = test_sized(160, ctc_embed=True)
    cfg = replace(cfg, train_k=(1, 2), encoder=EncoderConfig(
        kind="whisper", hf_name_or_path=short_positions_whisper_dir, chunk_ms=160, hf_left_context_ms=200,
        whisper_positions="stream", whisper_lookahead_chunks=1, whisper_trailing_silence_ms=80, freeze=True))
    return root, manifest, cfg


def parts(root, manifest, cfg, seed=0, **data):
    from asr_stream.training.datamodule import SpeechDataModule
    from asr_stream.training.module import SpeechLLMModule

    torch.manual_seed(0)
    mod = SpeechLLMModule(model=cfg, tokenizer=str(root / "tok"))
    dm = SpeechDataModule(train=[str(manifest)], max_batch_seconds=3.0, num_workers=0, seed=seed,
                          speed_perturb=[0.9, 1.0, 1.1], augment=AUGMENT, **data)
    return mod, dm


def test_cached_batches_give_the_losses_of_the_audio(setup, tmp_path):
    """Epoch 0 and 1 of the training read from the cache and from the audio: the same items (augmentation and
    speed drawn per (epoch, index)) and the same loss and CTC loss to float32 rounding. The cache's rows are the
    encoder's outputs; zeroed rows would change every loss by far more than the tolerance."""
    from asr_stream.training.data import UtteranceDataset, collate
    from asr_stream.training.features import FeatureDataset, collate_features, nonspeech_settings, write_cache

    root, manifest, cfg = setup
    mod, dm = parts(root, manifest, cfg, sample_utterances=7)
    dm.setup("fit")
    audio = UtteranceDataset(dm.train_utts, dm.speeds, dm.seed, dm.augment)
    replaced = sum(audio.draw((i, e))[2] for i in range(7) for e in range(2))
    assert 0 < replaced < 14
    assert write_cache(mod.net, dm, tmp_path / "c", epochs=2, batch_seconds=2.0, progress=False) == 14 + replaced
    net = mod.net.eval()
    cached = FeatureDataset(tmp_path / "c", len(dm.train_utts), nonspeech_settings(dm.augment))
    texts = set()
    for epoch in (0, 1, 2):  # epoch 2 reads the cache's epoch 0 (2 mod 2): the audio's epoch 0 items
        keys = [(i, epoch) for i in range(len(dm.train_utts))]
        a = collate([audio[(i, e % 2)] for i, e in keys])
        c = collate_features([cached[k] for k in keys])
        assert torch.equal(a.wave_lens, c.wave_lens) and a.texts == c.texts
        texts.update(a.texts)
        ba, bc = mod._batch(a), mod._batch(c)
        with torch.no_grad():
            oa, oc = net(ba, k=2), net(bc, k=2)
        assert abs(float(oa.loss) - float(oc.loss)) < 1e-5 and abs(float(oa.ctc) - float(oc.ctc)) < 1e-5
        if epoch == 2:
            with torch.no_grad():
                zeroed = net(replace(bc, enc=torch.zeros_like(bc.enc)), k=2)
            assert abs(float(zeroed.loss) - float(oa.loss)) > 1e-2
    assert "" in texts  # the augmentation's non-speech items are cached with their empty transcript


def test_an_interrupted_cache_resumes_and_the_training_refuses_other_settings(setup, tmp_path, monkeypatch):
    from asr_stream.training import features as fc

    root, manifest, cfg = setup
    mod, dm = parts(root, manifest, cfg)
    monkeypatch.setattr(fc, "SHARD_BYTES", 1)  # one shard per encoder call
    fc.write_cache(mod.net, dm, tmp_path / "c", epochs=1, batch_seconds=2.0, progress=False)
    shards = sorted((tmp_path / "c").glob("shard-*.safetensors"))
    assert len(shards) >= 3
    # a run stopped after its first shards: drop the last shard and its index lines, as if never written
    lines = (tmp_path / "c" / "index.jsonl").read_text().splitlines()
    kept = [l for l in lines if json.loads(l)["shard"] != shards[-1].name]
    (tmp_path / "c" / "index.jsonl").write_text("".join(l + "\n" for l in kept))
    shards[-1].unlink()
    before = {p.name: p.read_bytes() for p in shards[:-1]}
    with pytest.raises(ValueError, match="not written yet"):
        fc.FeatureDataset(tmp_path / "c", len(dm.train_utts))
    assert fc.write_cache(mod.net, dm, tmp_path / "c", epochs=1, batch_seconds=2.0, progress=False) == len(lines) - len(kept)
    assert {p.name: p.read_bytes() for p in shards[:-1]} == before  # finished shards are not rewritten
    assert len(fc.FeatureDataset(tmp_path / "c", len(dm.train_utts)).items) == len(lines)

    want = fc.cache_meta(mod.net.encoder, cfg.encoder, dm.train_specs, None, dm.speeds, dm.augment, dm.seed, None, "")
    fc.check_cache(tmp_path / "c", want)
    with pytest.raises(ValueError, match="'seed' differs"):
        fc.check_cache(tmp_path / "c", {**want, "seed": 1})
    with pytest.raises(ValueError, match="'augment' differs"):
        fc.check_cache(tmp_path / "c", {**want, "augment": {**want["augment"], "gain_prob": 0.1}})
    with torch.no_grad():
        next(mod.net.encoder.parameters()).add_(1.0)  # other weights
    with pytest.raises(ValueError, match="encoder's weights"):
        fc.check_cache(tmp_path / "c", fc.cache_meta(mod.net.encoder, cfg.encoder, dm.train_specs, None, dm.speeds,
                                                     dm.augment, dm.seed, None, ""))
    with pytest.raises(ValueError, match="not a feature cache"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "keep.txt").write_text("mine")
        fc.write_cache(mod.net, dm, tmp_path / "other", epochs=1, batch_seconds=2.0, progress=False)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    unfrozen = replace(cfg, encoder=replace(cfg.encoder, freeze=False))
    mod2, dm2 = parts(root, manifest, unfrozen)
    with pytest.raises(ValueError, match="cannot be cached"):
        fc.write_cache(mod2.net, dm2, tmp_path / "c3", epochs=1, batch_seconds=2.0, progress=False)


def test_training_cli_fits_from_the_cache_and_refuses_a_foreign_one(setup, tmp_path, capsys):
    """`asr-stream train fit --data.features DIR` trains (the encoder never runs on training batches) and refuses,
    in one line, a cache written for another seed."""
    import yaml

    from asr_stream.training.cache_features import main as cache_main
    from asr_stream.training.cli import main

    root, manifest, cfg = setup
    from dataclasses import asdict

    conf = {"seed_everything": 0,
            "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 3, "logger": False, "enable_progress_bar": False,
                        "enable_checkpointing": False, "default_root_dir": str(tmp_path / "run")},
            "model": {"model": json.loads(json.dumps(asdict(cfg))), "tokenizer": str(root / "tok"), "warmup_steps": 1},
            "data": {"train": [str(manifest)], "max_batch_seconds": 3.0, "num_workers": 0, "speed_perturb": [0.9, 1.0, 1.1],
                     "augment": AUGMENT, "features": str(tmp_path / "c")}}
    (tmp_path / "c").mkdir()
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    cache_main(["--config", str(tmp_path / "conf.yaml")])
    calls = []
    from asr_stream.encoder.whisper import WhisperChunkEncoder

    orig = WhisperChunkEncoder.forward
    WhisperChunkEncoder.forward = lambda self, w: calls.append(w.shape) or orig(self, w)
    try:
        main(["fit", "--config", str(tmp_path / "conf.yaml")])
    finally:
        WhisperChunkEncoder.forward = orig
    assert calls == []  # 3 steps, no encoder call
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(tmp_path / "conf.yaml"), "--data.seed", "5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asr-stream train: error: data.features") and "'seed' differs" in err[-1]


def test_non_speech_items_are_added_to_a_cache_without_encoding_its_speech_again(setup, tmp_path):
    """A cache written without non-speech replacement gains it: a second run with ``nonspeech_prob`` > 0 encodes
    only the items whose coin replaces them (the speech shards stay as they were), and the training then reads
    exactly the audio path's items, non-speech and empty transcripts included. A training that asks for non-speech
    from a cache without it, or a cache that mixed the two (written before they were kept apart), is refused."""
    from asr_stream.training import features as fc
    from asr_stream.training.data import UtteranceDataset, collate

    root, manifest, cfg = setup
    plain = {k: v for k, v in AUGMENT.items() if k != "nonspeech_prob"}
    mod, dm0 = parts(root, manifest, cfg)
    dm0.augment = fc.AugmentConfig.from_dict(plain)
    n0 = fc.write_cache(mod.net, dm0, tmp_path / "c", epochs=2, batch_seconds=2.0, progress=False)
    assert n0 == 2 * len(dm0.train_utts)
    speech = {p.name: p.read_bytes() for p in (tmp_path / "c").glob("shard-*")}
    _, dm = parts(root, manifest, cfg)
    dm.setup("fit")
    ns = fc.nonspeech_settings(dm.augment)
    with pytest.raises(ValueError, match="no non-speech items"):
        fc.FeatureDataset(tmp_path / "c", len(dm.train_utts), ns)
    with pytest.raises(ValueError, match="no non-speech items"):
        fc.check_cache(tmp_path / "c", fc.cache_meta(mod.net.encoder, cfg.encoder, dm.train_specs, None, dm.speeds,
                                                     dm.augment, dm.seed, None, ""))
    audio = UtteranceDataset(dm.train_utts, dm.speeds, dm.seed, dm.augment)
    keys = [(i, e) for e in range(2) for i in range(len(dm.train_utts))]
    replaced = [j for j, k in enumerate(keys) if audio.draw(k)[2]]
    assert 0 < len(replaced) < len(keys)
    assert fc.write_cache(mod.net, dm, tmp_path / "c", epochs=2, batch_seconds=2.0, progress=False) == len(replaced)
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").glob("shard-*") if p.name in speech} == speech
    assert fc.write_cache(mod.net, dm, tmp_path / "c", epochs=2, batch_seconds=2.0, progress=False) == 0  # all there
    cached = fc.FeatureDataset(tmp_path / "c", len(dm.train_utts), ns)
    a, c = collate([audio[i] for i in keys]), fc.collate_features([cached[i] for i in keys])
    assert torch.equal(a.wave_lens, c.wave_lens) and a.texts == c.texts
    assert [a.texts[i] for i in replaced] == [""] * len(replaced)
    net = mod.net.eval()
    with torch.no_grad():
        oa, oc = net(mod._batch(a), k=2), net(mod._batch(c), k=2)
    assert abs(float(oa.loss) - float(oc.loss)) < 1e-5
    # without non-speech asked for, the same cache serves the speech items
    plain_items = fc.FeatureDataset(tmp_path / "c", len(dm.train_utts))
    assert [plain_items[k][2] for k in keys] == [u.text for u in dm.train_utts] * 2
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    old = {k: v for k, v in meta.items() if k != "nonspeech"}
    (tmp_path / "c" / "meta.json").write_text(json.dumps({**old, "augment": {**old["augment"], "nonspeech_prob": 0.2}}))
    with pytest.raises(ValueError, match="written before non-speech items were kept apart"):
        fc.check_cache(tmp_path / "c", fc.cache_meta(mod.net.encoder, cfg.encoder, dm.train_specs, None, dm.speeds,
                                                     dm.augment, dm.seed, None, ""))


def test_unfrozen_top_layers_train_the_top_of_whisper_only_and_refuse_the_cache(setup, tmp_path):
    """encoder.unfrozen_top_layers: 1 on a frozen Whisper encoder: after a training step from the audio, the top
    layer and the final layer norm have gradients; the convolutions, positions and lower layers have none and do
    not require them (the optimiser takes the parameters that do). Such an encoder's outputs change every step: no cache. Starting
    from a frozen model's folder (init_from) applies it too."""
    from asr_stream.training.data import UtteranceDataset, collate
    from asr_stream.training.features import cache_meta, check_cache, write_cache
    from asr_stream.training.module import SpeechLLMModule

    root, manifest, cfg = setup
    top = replace(cfg, encoder=replace(cfg.encoder, unfrozen_top_layers=1))
    mod, dm = parts(root, manifest, top)
    dm.setup("fit")
    batch = mod._batch(collate([UtteranceDataset(dm.train_utts, dm.speeds, dm.seed, dm.augment)[(i, 0)] for i in range(3)]))
    mod.net.train()
    mod.net(batch, k=2).loss.backward()
    w = mod.net.encoder.model
    n = len(w.layers)
    trained = {id(p) for m in (w.layers[n - 1], w.layer_norm) for p in m.parameters()}
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for m in (w.layers[n - 1], w.layer_norm)
                           for p in m.parameters())
    assert all(p.grad is None and not p.requires_grad for name, p in w.named_parameters() if id(p) not in trained)
    with pytest.raises(ValueError, match="cannot be cached"):
        write_cache(mod.net, dm, tmp_path / "c", epochs=1, batch_seconds=2.0, progress=False)
    # the field is not part of a cache's identity: a cache written before it existed (its meta has no such key)
    # still serves a frozen training
    frozen, fdm = parts(root, manifest, cfg, sample_utterances=3)
    fdm.setup("fit")
    write_cache(frozen.net, fdm, tmp_path / "old", epochs=1, batch_seconds=2.0, progress=False)
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    assert "unfrozen_top_layers" not in meta["encoder"]
    check_cache(tmp_path / "old", cache_meta(frozen.net.encoder, cfg.encoder, fdm.train_specs, 3, fdm.speeds,
                                             fdm.augment, fdm.seed, None, ""))
    frozen.net.save(tmp_path / "frozen")
    again = SpeechLLMModule(model=top, init_from=str(tmp_path / "frozen"))
    assert {n_ for n_, p in again.net.encoder.named_parameters() if p.requires_grad} == \
        {n_ for n_, p in mod.net.encoder.named_parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="unfrozen_top_layers"):
        SpeechLLMModule(model=replace(cfg, encoder=replace(cfg.encoder, freeze=False, unfrozen_top_layers=1)),
                        tokenizer=str(root / "tok"))


def test_the_weight_average_leaves_frozen_weights_bit_exact():
    """The configs' EMA (asr_stream.training.callbacks.EMA) averages as Lightning's does, but a weight that never
    changes stays exactly itself; Lightning's own formula moves it (what broke the feature cache's weight check)."""
    from torch.optim.swa_utils import get_ema_avg_fn

    from asr_stream.training.callbacks import EMA

    ours, lightning = EMA(decay=0.995)._kwargs["avg_fn"], get_ema_avg_fn(decay=0.995)
    frozen = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    a, b = frozen.clone(), frozen.clone()
    for n in range(300):
        a, b = ours(a, frozen, n), lightning(b, frozen, n)
    assert torch.equal(a, frozen) and not torch.equal(b, frozen)
    a, b = frozen.clone(), frozen.clone()
    for n in range(300):  # a trained weight: the same average to float32 rounding
        w = frozen + 0.01 * n
        a, b = ours(a, w, n), lightning(b, w, n)
    assert (a - b).abs().max() < 1e-5 and (a - frozen).abs().min() > 0.1
