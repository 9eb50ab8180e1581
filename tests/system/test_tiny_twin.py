"""The real-scale path at tiny scale: the structure of conf/phi3_librispeech.yaml (frozen HF HuBERT run chunk-wise,
Phi3ForCausalLM loaded in bfloat16 from a directory, LoRA, SentencePiece-style word-start tokenizer, prompt)
through StreamingSession, BatchedStreams, eval and transcribe, with the twin that tools/model/make_tiny_twin.py writes;
and conf/phi3_librispeech_whisper.yaml's model (Whisper's encoder in place of HuBERT, read from a whole
WhisperForConditionalGeneration checkpoint as openai/whisper-small is stored) through the same, plus a few steps of
bf16-mixed training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_stream.config import DecoderConfig, EncoderConfig, ModelConfig, ProjectorConfig, StreamConfig
from asr_stream.model import SpeechLLM
from asr_stream.streaming import StreamingSession
from asr_stream.streaming.batched import BatchedStreams

from ..conftest import SENTENCES, import_script, noise_audio


def _twin_module():
    return import_script("tools/model", "make_tiny_twin")


@pytest.fixture(scope="module")
def twin_dirs(tmp_path_factory) -> dict[str, Path]:
    return _twin_module().make_twin(tmp_path_factory.mktemp("twin"), SENTENCES * 4, vocab_size=120, pretrain_steps=60)


def _with_lora_weights(model: SpeechLLM) -> SpeechLLM:
    with torch.no_grad():  # LoRA B starts at zero: give the adapters weights, so saving / loading them matters
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    return model


def whisper_twin_config(dirs: dict[str, Path]) -> ModelConfig:
    """conf/phi3_librispeech_whisper.yaml's model with the twin's directories and the tiny twin's projector width."""
    import yaml

    from asr_stream.config import model_config_from_dict

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "phi3_librispeech_whisper.yaml").read_text())
    m = data["model"]["model"]
    m["encoder"]["hf_name_or_path"], m["decoder"]["name_or_path"] = str(dirs["whisper"]), str(dirs["phi3"])
    m["projector"]["hidden"] = 128
    return model_config_from_dict(m)


@pytest.fixture(scope="module")
def whisper_twin_model_dir(twin_dirs, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return _with_lora_weights(SpeechLLM(whisper_twin_config(twin_dirs))).save(tmp_path_factory.mktemp("wtwin") / "model")


@pytest.fixture(params=["hubert", "whisper"])
def any_twin_dir(request) -> Path:
    return request.getfixturevalue("twin_model_dir" if request.param == "hubert" else "whisper_twin_model_dir")


@pytest.fixture(scope="module")
def twin_model_dir(twin_dirs, tmp_path_factory) -> Path:
    """A model directory of the tiny twin: the YAML's structure, LoRA and projector weights made non-trivial."""
    root = tmp_path_factory.mktemp("hubert-twin")
    dirs = twin_dirs
    cfg = ModelConfig(
        encoder=EncoderConfig(kind="hf", hf_name_or_path=str(dirs["hubert"]), chunk_ms=320, hf_left_context_ms=960,
                              freeze=True),
        projector=ProjectorConfig(stack=4, hidden=128),
        decoder=DecoderConfig(name_or_path=str(dirs["phi3"]), lora_r=16, lora_alpha=32, freeze=True, dtype="bfloat16"),
        prompt="Transcribe the speech:", train_mode="group", train_k=(1, 3, 5, 7))
    torch.manual_seed(0)
    return _with_lora_weights(SpeechLLM(cfg)).save(root / "model")


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    return [noise_audio(s, seed=i) for i, s in enumerate((1.9, 2.6, 1.3))]


def _session_words(model, wave: np.ndarray, cfg: StreamConfig, times: bool = False) -> list:
    """Words (with the audio ms read when each was emitted, if ``times``) of one session, 100 ms blocks."""
    s = StreamingSession(model, cfg)
    for i in range(0, len(wave), 1600):  # 100 ms blocks: not aligned with the 320 ms chunks
        s.push(wave[i : i + 1600])
    s.finish()
    return [(w.text, w.time_ms) if times else w.text for w in s.words]


def test_twin_model_has_the_real_structure(twin_model_dir):
    from safetensors import safe_open

    from asr_stream.encoder.hf import HFChunkEncoder

    m = SpeechLLM.load(twin_model_dir)
    assert m.llm_dtype == torch.bfloat16  # decoder.dtype: bfloat16, as the LibriSpeech config loads Phi-3
    assert hasattr(m.llm, "peft_config") and any("lora_A" in n for n, _ in m.llm.named_parameters())  # LoRA
    assert m.codec.style == "prefix"  # word-start ("▁") tokenizer, as Phi-3's
    assert isinstance(m.encoder, HFChunkEncoder) and m.encoder.frames_per_chunk == 16  # 20 ms frames, 320 ms chunks
    assert not any(p.requires_grad for p in m.encoder.parameters())  # frozen
    with safe_open(str(twin_model_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    # the frozen base Phi-3 is reloaded from its directory; only the adapters (and encoder, projector) are stored
    assert any("lora_B" in k for k in keys)
    assert not any(k.startswith("llm.") and "lora" not in k for k in keys)


def test_whisper_twin_has_the_real_structure(whisper_twin_model_dir):
    from safetensors import safe_open

    from asr_stream.encoder.whisper import WhisperChunkEncoder

    m = SpeechLLM.load(whisper_twin_model_dir)
    assert isinstance(m.encoder, WhisperChunkEncoder) and m.encoder.frames_per_chunk == 16  # 20 ms frames, 320 ms chunks
    assert m.encoder.window_frames == 48 + 16 and m.embeds_per_chunk == 4  # 960 ms of context; stack 4, as HuBERT's
    assert not any(p.requires_grad for p in m.encoder.parameters()) and not m.encoder.training  # frozen, eval mode
    assert m.llm_dtype == torch.bfloat16 and hasattr(m.llm, "peft_config") and m.codec.style == "prefix"
    with safe_open(str(whisper_twin_model_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "encoder.model.conv1.weight" in keys and not any("decoder" in k for k in keys if k.startswith("encoder."))


def test_batched_streams_compute_what_sessions_compute(any_twin_dir, waves):
    model = SpeechLLM.load(any_twin_dir)
    cfg = StreamConfig(mode="group", k=3)
    alone = [_session_words(model, w, cfg) for w in waves]
    assert all(alone), "the twin should write words for every wave (its decoder is a pretrained language model)"
    batched = BatchedStreams.run(model, waves, cfg)
    assert [[w.text for w in ws] for ws in batched] == alone
    # The twin's words come mostly from its language model, so equal words alone prove little: compare the
    # teacher-forced logits of every target row. Tolerance: one bf16 step (ulp) at the logits' magnitude
    # (|logit| < 16 -> ulp <= 2^-4): the batched forward multiplies other matrix shapes in bfloat16, which may
    # round differently (measured: 2^-5); a PAD key left visible moves logits by ~0.8, positions x2 by >= 0.09.
    forced = [model.codec.encode(t) for t in SENTENCES[: len(waves)]]
    solo = []
    for w, f in zip(waves, forced):
        s = StreamingSession(model, cfg)
        s.teacher_force(f)
        s.push(w)
        s.finish()
        solo.append(torch.stack(s.logits).float())
    eng = BatchedStreams(model, len(waves), cfg)
    for i, (w, f) in enumerate(zip(waves, forced)):
        eng.sessions[i].teacher_force(f)
        eng.feed(i, w)
        eng.end(i)
    eng.drain()
    for i, ref in enumerate(solo):
        eng.finish(i)
        got = torch.stack(eng.sessions[i].logits).float()
        assert got.shape == ref.shape == (len(forced[i]) + 1, model.llm.config.vocab_size)
        assert ref.abs().max() < 16
        assert (got - ref).abs().max().item() <= 2.0**-4


def test_eval_and_transcribe_on_the_twin(any_twin_dir, waves, tmp_path, capsys):
    from asr_stream.cli import main
    from asr_stream.data import read_manifest
    from asr_stream.evaluation.runner import Setting, evaluate

    model = SpeechLLM.load(any_twin_dir)
    rows = []
    for i, w in enumerate(waves):
        sf.write(tmp_path / f"u{i}.wav", w, 16000)
        rows.append({"audio_filepath": f"u{i}.wav", "duration": len(w) / 16000, "text": SENTENCES[i], "id": f"u{i}"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    utts = read_manifest(tmp_path / "m.jsonl")
    # words and their emission times (audio ms read): the times differ between waves of different lengths
    timed = [_session_words(model, w, StreamConfig(mode="group", k=3), times=True) for w in waves]
    expected = [" ".join(t for t, _ in ws) for ws in timed]

    summary = evaluate(model, utts, Setting("group", 3, 0.0), tmp_path / "eval", progress=False)
    records = [json.loads(x) for x in (tmp_path / "eval" / "records.jsonl").read_text().splitlines()]
    assert [r["hypothesis"] for r in records] == expected
    assert [[(w["text"], w["time_ms"]) for w in r["words"]] for r in records] == timed
    assert [r["audio_ms"] for r in records] == [len(w) / 16.0 for w in waves]
    assert summary["utterances"] == 3 and 0.0 < summary["wer"] < float("inf")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["ref_words"] == summary["ref_words"]

    capsys.readouterr()
    main(["transcribe", str(tmp_path / "u1.wav"), "--model", str(any_twin_dir), "--k", "3",
          "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert f"final: {expected[1]}\n" in out
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["files"][0]["text"] == expected[1]
    assert [(w["text"], w["time_ms"]) for w in t["files"][0]["words"]] == timed[1]


def test_whisper_twin_trains_a_few_steps_in_bf16_mixed(twin_dirs, tmp_path):
    """A smoke fit of conf/phi3_librispeech_whisper.yaml's model (frozen Whisper encoder, LoRA, bf16-mixed, group
    training over k in {1, 3, 5, 7}): the loss is finite, the adapters and the projector move, the encoder does not,
    and the exported model streams."""
    import lightning as L

    from asr_stream.data import Utterance, write_manifest
    from asr_stream.training.datamodule import SpeechDataModule
    from asr_stream.training.module import SpeechLLMModule

    utts = []
    for i in range(4):
        sec = 0.7 + 0.2 * i
        sf.write(tmp_path / f"u{i}.flac", noise_audio(sec, seed=30 + i), 16000)
        utts.append(Utterance(f"u{i}", tmp_path / f"u{i}.flac", SENTENCES[i], sec))
    manifest = write_manifest(utts, tmp_path / "train.jsonl")
    torch.manual_seed(0)
    m = SpeechLLMModule(model=whisper_twin_config(twin_dirs), lr=1e-3, warmup_steps=1, export_dir=str(tmp_path / "export"))
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, precision="bf16-mixed", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        use_distributed_sampler=False, default_root_dir=str(tmp_path))
    trainer.fit(m, SpeechDataModule(train=[str(manifest)], max_batch_seconds=2.0, num_workers=0, seed=0))
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = {k for k, v in m.net.state_dict().items() if not torch.equal(before[k], v)}
    assert any("lora_B" in k for k in moved) and any(k.startswith("projector.") for k in moved)
    assert not any(k.startswith("encoder.") for k in moved)
    s = StreamingSession(SpeechLLM.load(tmp_path / "export"), StreamConfig(mode="group", k=3))
    s.push(noise_audio(1.3, seed=9))
    s.finish()
    assert s.state.chunks_read == 5 and s.state.ended
