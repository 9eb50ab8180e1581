"""Training glue: loss goes down, resume is exact, 2-process DDP keeps ranks in sync."""

import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import soundfile as sf
import torch
import yaml

from asr_stream.data import Utterance, write_manifest
from asr_stream.presets import test_sized

from ..conftest import SENTENCES, noise_audio


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, codec):
    root = tmp_path_factory.mktemp("train")
    utts = []
    for i in range(8):
        p = root / f"u{i}.flac"
        sf.write(p, noise_audio(0.5 + 0.1 * (i % 4), seed=i), 16000)
        utts.append(Utterance(f"u{i}", p, SENTENCES[i % len(SENTENCES)], 0.5 + 0.1 * (i % 4)))
    manifest = write_manifest(utts, root / "train.jsonl")
    codec.save(root / "tok")
    return root, manifest


def make_module(root, **kw):
    from asr_stream.training.module import SpeechLLMModule

    cfg = test_sized(160)
    from dataclasses import replace

    cfg = replace(cfg, train_k=(1, 2, 3), ctc_weight=0.3)
    return SpeechLLMModule(model=cfg, tokenizer=str(root / "tok"), lr=3e-3, warmup_steps=2, **kw)


def make_data(manifest):
    from asr_stream.training.datamodule import SpeechDataModule

    return SpeechDataModule(train=[str(manifest)], max_batch_seconds=2.0, num_workers=0, seed=0)


def trainer(tmp, steps, **kw):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=False, default_root_dir=str(tmp), **kw)


def test_loss_decreases_on_a_tiny_batch(tiny_setup):
    from asr_stream.model import Batch

    root, _ = tiny_setup
    torch.manual_seed(0)
    m = make_module(root)
    net = m.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    wave = torch.from_numpy(noise_audio(0.8))[None].repeat(2, 1)
    batch = Batch(wave, torch.tensor([wave.shape[1]] * 2), [net.codec.encode(SENTENCES[0]), net.codec.encode(SENTENCES[2])])
    losses = []
    for _ in range(30):
        out = net(batch, k=2)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("ema", [False, True], ids=["plain", "ema"])
def test_resume_reproduces_uninterrupted_run(tiny_setup, tmp_path, ema):
    """6 steps straight == 3 steps, checkpoint, new process state, resume to 6 (mid-epoch, weights_only).

    With an EMA callback the checkpoint holds both the average and the live weights; both must come back."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from asr_stream.training.callbacks import EMA as EMAWeightAveraging  # the configs' EMA

    from asr_stream.training.module import weights_digest

    def cbs(*extra):
        return [*extra, EMAWeightAveraging(decay=0.5)] if ema else list(extra)

    root, manifest = tiny_setup
    L.seed_everything(0)
    a = make_module(root)
    trainer(tmp_path / "a", 6, callbacks=cbs()).fit(a, make_data(manifest))
    assert len(make_data_len(manifest)) > 6 // 2  # the interruption falls inside an epoch

    class KillAfter(L.Callback):  # the same run (same schedule length), stopped after 3 steps as by a kill
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= 3:
                trainer.should_stop = True

    L.seed_everything(0)
    b = make_module(root)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_last=True)
    trainer(tmp_path / "b", 6, callbacks=cbs(ck, KillAfter())).fit(b, make_data(manifest))
    assert b.global_step == 3
    L.seed_everything(123)  # a fresh process would not share RNG state: resume must restore it
    c = make_module(root)
    trainer(tmp_path / "c", 6, callbacks=cbs()).fit(c, make_data(manifest), ckpt_path=str(tmp_path / "ck" / "last.ckpt"),
                                                   weights_only=True)
    assert weights_digest(c.net) == weights_digest(a.net)
    assert weights_digest(b.net) != weights_digest(a.net)


def test_ema_run_exports_the_average(tiny_setup, tmp_path):
    """With EMA, exports (mid-run and final) and the checkpoint's state_dict hold the average, not the live weights."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from asr_stream.training.callbacks import EMA as EMAWeightAveraging  # the configs' EMA

    from asr_stream.model import SpeechLLM
    from asr_stream.training.module import weights_digest

    root, manifest = tiny_setup
    L.seed_everything(0)
    m = make_module(root, export_dir=str(tmp_path / "exported"))
    ema = EMAWeightAveraging(decay=0.5)

    class MidRun(L.Callback):  # after step 2 (the EMA has averaged it in): export as a checkpoint would
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 2:
                self.live = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
                self.average = {k: v.clone() for k, v in ema._average_model.module.net.state_dict().items()}
                pl_module.export_dir, old = str(tmp_path / "mid"), pl_module.export_dir
                pl_module.export()
                pl_module.export_dir = old

    mid = MidRun()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_last=True)
    trainer(tmp_path, 4, callbacks=[ema, mid, ck]).fit(m, make_data(manifest))

    def floats_differ(x, y):
        return [n for n, v in x.items() if v.is_floating_point() and not torch.equal(v, y[n])]

    exported_mid = SpeechLLM.load(tmp_path / "mid").state_dict()
    assert not floats_differ(exported_mid, {k: v.to(exported_mid[k].dtype) for k, v in mid.average.items()})
    assert floats_differ(exported_mid, mid.live), "the average equals the live weights: the EMA did nothing"

    exported = SpeechLLM.load(tmp_path / "exported")
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True, map_location="cpu")
    average = {k[len("net."):]: v for k, v in ckpt["state_dict"].items()}
    raw = {k[len("net."):]: v for k, v in ckpt["current_model_state"].items()}
    assert not floats_differ(exported.state_dict(), average)
    assert floats_differ(exported.state_dict(), raw)
    assert weights_digest(m.net) == weights_digest(exported)  # after fit the average is copied into the live model

    # asr-stream export: either set of weights back out of the checkpoint, as a loadable model directory
    from asr_stream.cli import main

    for which, want in (("average", average), ("live", raw)):
        main(["export", str(tmp_path / "ck" / "last.ckpt"), "--like", str(tmp_path / "exported"),
              "--output", str(tmp_path / which), "--weights", which])
        assert not floats_differ(SpeechLLM.load(tmp_path / which).state_dict(), want), which


def test_export_rejects_bad_checkpoints(tiny_setup, tmp_path, capsys):
    """One-line errors: a pickle carrying code, a non-Lightning file, an average asked of a run without one,
    weights of another model shape. Nothing is written."""
    from asr_stream.cli import main
    from asr_stream.model import CheckpointError
    from asr_stream.training.export import export_checkpoint

    root, _ = tiny_setup
    m = make_module(root)
    m.net.save(tmp_path / "like")
    state = {"net." + k: v for k, v in m.net.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "plain.ckpt")
    torch.save({"state_dict": state, "code": os.system}, tmp_path / "pickled.ckpt")  # a callable: refused
    torch.save({"weights": state}, tmp_path / "other.ckpt")
    small = {k: v[..., :1] if v.dim() else v for k, v in state.items()}
    torch.save({"state_dict": small}, tmp_path / "shape.ckpt")
    cases = [("pickled.ckpt", "live", "weights-only"), ("other.ckpt", "live", "no state_dict"),
             ("plain.ckpt", "average", "no weight average"), ("shape.ckpt", "live", "do not match"),
             ("missing.ckpt", "live", "no such checkpoint")]
    for name, which, msg in cases:
        with pytest.raises(CheckpointError, match=msg):
            export_checkpoint(tmp_path / name, tmp_path / "like", tmp_path / "out", which)
        with pytest.raises(SystemExit):
            main(["export", str(tmp_path / name), "--like", str(tmp_path / "like"), "--output", str(tmp_path / "out"),
                  "--weights", which])
        err = capsys.readouterr().err
        assert err.startswith("asr-stream: error:") and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    export_checkpoint(tmp_path / "plain.ckpt", tmp_path / "like", tmp_path / "out", "live")  # the good one works


def make_data_len(manifest):
    from asr_stream.training.data import DurationBatchSampler
    from asr_stream.data import read_manifest

    return list(DurationBatchSampler(read_manifest(manifest), 2.0, True, 0))


def test_bf16_mixed_forward_keeps_masks_finite_and_matches_fp32(tiny_setup, monkeypatch):
    """bf16-mixed training (the synthetic recipe's precision): the decoder mask is built in the autocast dtype,
    so masked entries stay finite (a float32 minimum would round to -inf in bf16), and the loss matches fp32."""
    from asr_stream import decoder as dec
    from asr_stream.model import Batch

    root, _ = tiny_setup
    torch.manual_seed(0)
    net = make_module(root).net.eval()  # no dropout: the two forwards must see the same network
    a, b = noise_audio(0.9, seed=1), noise_audio(0.5, seed=2)  # different lengths: padded rows in the batch
    wave = torch.zeros(2, len(a))
    wave[0], wave[1, : len(b)] = torch.from_numpy(a), torch.from_numpy(b)
    batch = Batch(wave, torch.tensor([len(a), len(b)]), [net.codec.encode(SENTENCES[0]), net.codec.encode(SENTENCES[1])])
    masks, run = [], dec.run
    monkeypatch.setattr(dec, "run", lambda llm, x, mask, pos, *r, **kw: (masks.append(mask), run(llm, x, mask, pos, *r, **kw))[1])
    ref = net(batch, k=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(batch, k=2)
    assert masks[0].dtype == torch.float32 and masks[1].dtype == torch.bfloat16
    assert torch.isfinite(masks[1]).all() and (masks[1] < 0).any()
    assert torch.isfinite(out.loss) and abs(float(out.loss.detach()) - float(ref.loss.detach())) < 0.05 * float(ref.loss.detach())


def test_multi_k_draw_is_deterministic_and_covers_the_set(tiny_setup):
    root, _ = tiny_setup
    m = make_module(root, seed=5)
    draws = [m.draw_k(s) for s in range(200)]
    assert set(draws) == {1, 2, 3}
    assert draws == [make_module(root, seed=5).draw_k(s) for s in range(200)]


def test_init_from_a_model_directory_trains_in_train_mode(tiny_setup, tmp_path):
    """Fine-tuning from a saved model (the ablation recipe) starts from its weights, with dropout on."""
    root, _ = tiny_setup
    src = make_module(root).net
    src.save(tmp_path / "src")
    from dataclasses import replace

    mod = make_module(root, init_from=str(tmp_path / "src"))
    assert mod.net.training and all(m.training for m in mod.net.modules())
    for (n, a), (_, b) in zip(src.state_dict().items(), mod.net.state_dict().items()):
        assert torch.equal(a, b), n
    other = replace(mod.cfg, encoder=replace(mod.cfg.encoder, n_layers=mod.cfg.encoder.n_layers + 1))
    from asr_stream.training.module import SpeechLLMModule

    with pytest.raises(ValueError, match="differs"):
        SpeechLLMModule(model=other, init_from=str(tmp_path / "src"))
    # training-only switches may differ (the multi-engine fine-tune turns SpecAugment on): the new ones apply
    sa = not mod.cfg.encoder.spec_augment
    aug = replace(mod.cfg, encoder=replace(mod.cfg.encoder, spec_augment=sa))
    tuned = SpeechLLMModule(model=aug, init_from=str(tmp_path / "src"))
    assert tuned.net.encoder.cfg.spec_augment is sa and tuned.net.cfg.encoder.spec_augment is sa


def test_init_decoder_from_takes_the_decoder_and_tokenizer_and_nothing_else(tiny_setup, tmp_path, short_positions_whisper_dir):
    """A new encoder behind a trained decoder (the Whisper model's recipe): the decoder's weights and tokenizer come
    from the directory, the encoder, projector and CTC head are built anew; a different decoder is refused."""
    from dataclasses import replace

    from asr_stream.config import EncoderConfig
    from asr_stream.training.module import SpeechLLMModule

    root, _ = tiny_setup
    src = make_module(root, seed=3).net
    with torch.no_grad():
        for p in src.llm.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not what a fresh build would hold
    src.save(tmp_path / "src")
    cfg = replace(src.cfg, encoder=EncoderConfig(kind="whisper", hf_name_or_path=short_positions_whisper_dir,
                                                 chunk_ms=src.cfg.encoder.chunk_ms, hf_left_context_ms=200, freeze=True))
    mod = SpeechLLMModule(model=cfg, init_decoder_from=str(tmp_path / "src"))
    for (n, a), (_, b) in zip(src.llm.state_dict().items(), mod.net.llm.state_dict().items()):
        assert torch.equal(a, b), n
    assert mod.net.codec.encode("hello world") == src.codec.encode("hello world")
    assert mod.net.encoder.dim == 32 and mod.net.projector.state_dict().keys() == src.projector.state_dict().keys()
    assert not any(p.requires_grad for p in mod.net.encoder.parameters())
    wider = replace(cfg, decoder=replace(cfg.decoder, tiny={**cfg.decoder.tiny, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match="decoder config differs"):
        SpeechLLMModule(model=wider, init_decoder_from=str(tmp_path / "src"))
    with pytest.raises(ValueError, match="leave out model.init_from"):
        SpeechLLMModule(model=cfg, init_decoder_from=str(tmp_path / "src"), init_from=str(tmp_path / "src"))


def test_export_is_loadable_by_the_session(tiny_setup, tmp_path):
    from asr_stream.model import SpeechLLM
    from asr_stream.streaming import StreamingSession

    root, manifest = tiny_setup
    m = make_module(root, export_dir=str(tmp_path / "exported"))
    trainer(tmp_path, 2).fit(m, make_data(manifest))
    loaded = SpeechLLM.load(tmp_path / "exported")
    s = StreamingSession(loaded, k=2)
    s.push(noise_audio(0.5))
    s.finish()
    assert loaded.cfg.ctc_weight == 0.3


@pytest.mark.timeout(300)
def test_ddp_two_processes_agree_on_weights(tiny_setup, tmp_path):
    root, manifest = tiny_setup
    cfg = test_sized(160)
    conf = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_steps": 3, "logger": False,
                    "enable_progress_bar": False, "enable_checkpointing": False, "use_distributed_sampler": False,
                    "default_root_dir": str(tmp_path),
                    "callbacks": [{"class_path": "asr_stream.training.module.WeightsDigest", "init_args": {"dir": str(tmp_path / "digests")}}]},
        "model": {"model": asdict(cfg), "tokenizer": str(root / "tok"), "lr": 3e-3, "warmup_steps": 1},
        "data": {"train": [str(manifest)], "max_batch_seconds": 1.5, "num_workers": 0},
    }
    conf["model"]["model"]["train_k"] = list(cfg.train_k)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "asr_stream.training", "fit", "--config", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, env=env, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    d0, d1 = (tmp_path / "digests" / "rank0.sha256").read_text(), (tmp_path / "digests" / "rank1.sha256").read_text()
    assert d0 == d1
    from asr_stream.model import SpeechLLM  # noqa: F401 - imported to make sure the package imports cleanly after DDP


def test_lr_schedule_warmup_cosine_and_decay_steps(tiny_setup):
    """Warm-up, then cosine to min_lr_ratio at decay_steps; training stopped before decay_steps ends above it."""
    import math

    root, _ = tiny_setup
    m = make_module(root, decay_steps=10, min_lr_ratio=0.1)
    m.opt["lr"] = 1.0
    opt_sched = m.configure_optimizers()
    opt, sched = opt_sched["optimizer"], opt_sched["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)       # 2 warm-up steps
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))  # half-way: 0.55
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)     # the floor from decay_steps on
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    with pytest.raises(ValueError, match="decay_steps"):
        make_module(root, decay_steps=2)


def test_step_checkpoint_saves_the_final_step(tiny_setup, tmp_path):
    """max_steps 5 with a checkpoint every 3 steps: last.ckpt is step 5 (Lightning's own stops at 3), and
    resuming it to step 6 gives the weights of 6 steps straight, so it holds the live weights, not the average."""
    import lightning as L
    from asr_stream.training.callbacks import EMA as EMAWeightAveraging  # the configs' EMA

    from asr_stream.training.callbacks import StepCheckpoint
    from asr_stream.training.module import weights_digest

    root, manifest = tiny_setup
    L.seed_everything(0)
    a = make_module(root, decay_steps=10)  # a schedule that does not depend on max_steps
    trainer(tmp_path / "a", 6, callbacks=[EMAWeightAveraging(decay=0.5)]).fit(a, make_data(manifest))

    L.seed_everything(0)
    b = make_module(root, decay_steps=10)
    ck = StepCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_last=True)
    trainer(tmp_path / "b", 5, callbacks=[EMAWeightAveraging(decay=0.5), ck]).fit(b, make_data(manifest))
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 5
    assert any("step=5" in p.name for p in (tmp_path / "ck").glob("epoch=*.ckpt"))

    L.seed_everything(123)
    c = make_module(root, decay_steps=10)
    trainer(tmp_path / "c", 6, callbacks=[EMAWeightAveraging(decay=0.5)]).fit(
        c, make_data(manifest), ckpt_path=str(tmp_path / "ck" / "last.ckpt"), weights_only=True)
    assert weights_digest(c.net) == weights_digest(a.net)


def test_training_cli_refuses_a_bad_config_in_one_line(tiny_setup, tmp_path, capsys):
    """A setting the module refuses (decay_steps not after warm-up) stops the CLI with one line, status 2."""
    from asr_stream.training.cli import main

    root, manifest = tiny_setup
    conf = {"trainer": {"accelerator": "cpu", "max_steps": 2, "logger": False, "default_root_dir": str(tmp_path)},
            "model": {"model": asdict(test_sized(160)), "tokenizer": str(root / "tok"), "warmup_steps": 5,
                      "decay_steps": 5},
            "data": {"train": [str(manifest)], "num_workers": 0}}
    conf["model"]["model"]["train_k"] = list(conf["model"]["model"]["train_k"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(tmp_path / "c.yaml")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "asr-stream train: error: decay_steps (5) must be larger than warmup_steps (5)", err
    assert not list(tmp_path.rglob("*.ckpt"))


def test_training_cli_fails_when_max_time_stops_before_max_steps(tiny_setup, tmp_path, capsys):
    """max_time is a safety stop: a run it ends before max_steps exits with status 3 and says how to resume, so a
    recipe does not go on to evaluate a model of fewer steps than it configured."""
    from asr_stream.training.cli import main

    root, manifest = tiny_setup

    def conf(max_time: str | None, name: str):
        c = {"trainer": {"accelerator": "cpu", "max_steps": 4, "logger": False, "default_root_dir": str(tmp_path / name),
                         "enable_progress_bar": False, "enable_model_summary": False,
                         "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                        "init_args": {"dirpath": str(tmp_path / name / "ckpt"), "save_last": True}}]},
             "model": {"model": asdict(test_sized(160)), "tokenizer": str(root / "tok"), "warmup_steps": 1,
                       "decay_steps": 5, "export_dir": str(tmp_path / name / "model")},
             "data": {"train": [str(manifest)], "num_workers": 0, "max_batch_seconds": 2.0}}
        c["model"]["model"]["train_k"] = list(c["model"]["model"]["train_k"])
        if max_time is not None:
            c["trainer"]["max_time"] = max_time
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(c))
        return str(tmp_path / f"{name}.yaml")

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", conf("00:00:00:00", "cut")])  # zero seconds: stops before the first step
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("asr-stream train: error: max_time") and "at step 0 of max_steps 4" in err, err
    main(["fit", "--config", conf("00:01:00:00", "whole")])  # reaches max_steps within its time: no error
    main(["fit", "--config", conf(None, "untimed")])


def test_training_cli_never_writes_its_config_over_the_config_it_was_started_from(tiny_setup, tmp_path):
    """Lightning writes a run's resolved config into the logger's folder, or, with no logger, into the root folder,
    replacing what is there: there it can be the input itself (it once rewrote the repository's config.yaml). A run
    with no logger writes none; the input keeps its bytes."""
    from asr_stream.training.cli import main

    root, manifest = tiny_setup
    run = tmp_path / "run"
    run.mkdir()
    c = {"trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False, "default_root_dir": str(run),
                     "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False},
         "model": {"model": asdict(test_sized(160)), "tokenizer": str(root / "tok"), "warmup_steps": 1,
                   "decay_steps": 5, "export_dir": str(run / "model")},
         "data": {"train": [str(manifest)], "num_workers": 0, "max_batch_seconds": 2.0}}
    c["model"]["model"]["train_k"] = list(c["model"]["model"]["train_k"])
    text = "# my settings, with my comments\n" + yaml.safe_dump(c)
    (run / "config.yaml").write_text(text)
    main(["fit", "--config", str(run / "config.yaml")])
    assert (run / "model" / "model.safetensors").is_file()
    assert (run / "config.yaml").read_text() == text
