import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from asr_stream.config import DecoderConfig, EncoderConfig, ModelConfig
from asr_stream.decoder import TextCodec, build_decoder
from asr_stream.model import Batch, CheckpointError, SpeechLLM
from asr_stream.presets import test_sized
from asr_stream.streaming import StreamingSession

from ..conftest import SENTENCES, WHISPER_CONTEXT_MS, import_script, noise_audio, save_tiny_whisper


def transcribe(model, wave):
    s = StreamingSession(model, k=2)
    s.push(wave)
    s.finish()
    return s.words



def assert_same_model(model, loaded, codec, seconds: float) -> None:
    """Same weights, the same training-forward logits and the same streamed words on ``seconds`` of audio."""
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    wave = noise_audio(seconds, seed=4)
    batch = Batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), [codec.encode(SENTENCES[4])])
    with torch.no_grad():
        a, b = model(batch, mode="group", k=2), loaded(batch, mode="group", k=2)
    assert torch.equal(a.target_logits[0], b.target_logits[0])
    assert transcribe(model, wave) == transcribe(loaded, wave)

def test_save_load_identical_outputs(tmp_path, make_model, codec):
    model = make_model(160, prompt="TRANSCRIBE")
    path = model.save(tmp_path / "m")
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    loaded = SpeechLLM.load(path)
    assert_same_model(model, loaded, codec, seconds=1.2)


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_load_rejects_bad_directories(tmp_path, make_model):
    model = make_model(160)
    good = model.save(tmp_path / "good")

    with pytest.raises(CheckpointError, match="not a model directory"):
        SpeechLLM.load(tmp_path / "missing")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((good / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only safetensors"):
        SpeechLLM.load(pickled)

    corrupt = copy_dir(good, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        SpeechLLM.load(corrupt)

    mismatched = copy_dir(good, tmp_path / "mismatched")
    cfg = json.loads((good / "config.json").read_text())
    cfg["encoder"]["d_model"] = 48  # weights were saved for d_model=32
    (mismatched / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        SpeechLLM.load(mismatched)

    cfg["encoder"]["d_model"] = 32
    cfg["encoder"]["colour"] = "blue"
    (mismatched / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown config field"):
        SpeechLLM.load(mismatched)

    missing_key = copy_dir(good, tmp_path / "missing_key")
    state = load_file(str(good / "model.safetensors"))
    state.pop(next(k for k in state if k.startswith("projector.")))
    save_file(state, str(missing_key / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing"):
        SpeechLLM.load(missing_key)


def test_lora_decoder_saves_and_loads(tmp_path, codec):
    from dataclasses import replace

    cfg = test_sized(160)
    cfg = replace(cfg, decoder=replace(cfg.decoder, lora_r=4))
    torch.manual_seed(1)
    model = SpeechLLM(cfg, codec).eval()
    lora = [n for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    with torch.no_grad():  # make LoRA non-zero so the round trip is meaningful
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    loaded = SpeechLLM.load(model.save(tmp_path / "lora"))
    wave = noise_audio(0.8)
    assert transcribe(model, wave) == transcribe(loaded, wave)


def test_pretrained_phi3_directory_and_frozen_base(tmp_path, codec):
    """A 'pretrained' Phi-3 saved to a local directory (as from_pretrained would find it on the hub):
    loading by path works, and a frozen base with LoRA is saved without the base weights."""
    llm, _ = build_decoder(DecoderConfig(tiny=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, num_key_value_heads=2)), codec)
    base_dir = tmp_path / "phi3-tiny"
    llm.save_pretrained(base_dir)
    codec.save(base_dir)
    from dataclasses import replace

    cfg = test_sized(160)
    cfg = replace(cfg, decoder=DecoderConfig(name_or_path=str(base_dir), lora_r=2, freeze=True))
    model = SpeechLLM(cfg).eval()
    assert model.codec.style == "suffix" and len(model.codec) == len(codec)
    path = model.save(tmp_path / "speech")
    saved = load_file(str(path / "model.safetensors"))
    assert not any(k.startswith("llm.") and "lora_" not in k for k in saved)  # base reloaded from base_dir
    loaded = SpeechLLM.load(path)
    wave = noise_audio(0.8)
    assert transcribe(model, wave) == transcribe(loaded, wave)
    with pytest.raises(ValueError, match="cannot load a Phi-3"):
        build_decoder(DecoderConfig(name_or_path=str(tmp_path / "nope")))


def test_prefix_style_tokenizer_word_boundaries():
    """A word-start tokenizer (like Phi-3's SentencePiece '▁'): words end when the next one starts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "▁he": 4, "llo": 5, "▁world": 6, "▁a": 7}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    codec = TextCodec(fast)
    assert codec.style == "prefix"
    assert codec.boundaries([4, 5, 6, 7]) == [True, False, True, True]
    assert not codec.is_boundary(2)


def test_model_config_json_roundtrip():
    from asr_stream.config import model_config_from_dict, model_config_to_json

    cfg = test_sized(320, prompt="X")
    assert model_config_from_dict(json.loads(model_config_to_json(cfg))) == cfg
    assert isinstance(cfg, ModelConfig)


# -- a model with a Whisper encoder is self-contained (issue #28) -------------------------------------------------
NOTICE = b"MIT License\n\nCopyright (c) 2022 OpenAI\n(test notice: where these weights came from)\n"


def whisper_model(folder, codec, notice: bool = True) -> SpeechLLM:
    """The test-sized model behind a tiny random Whisper saved in ``folder`` (with a NOTICE, as the converter writes)."""
    from dataclasses import replace

    src = save_tiny_whisper(folder, max_source_positions=64)
    if notice:
        (folder / "NOTICE").write_bytes(NOTICE)
    cfg = replace(test_sized(160), encoder=EncoderConfig(kind="whisper", hf_name_or_path=src, chunk_ms=160,
                                                         hf_left_context_ms=WHISPER_CONTEXT_MS, whisper_positions="stream"))
    torch.manual_seed(0)
    return SpeechLLM(cfg, codec).eval()


def test_whisper_model_loads_without_the_folder_it_was_trained_from(tmp_path, codec):
    model = whisper_model(tmp_path / "whisper", codec)
    path = model.save(tmp_path / "m")
    shutil.rmtree(tmp_path / "whisper")  # a fresh clone / another machine: no models/whisper-tiny.en
    enc = path / "encoder"
    assert sorted(p.name for p in enc.iterdir()) == ["NOTICE", "config.json", "preprocessor_config.json"]
    assert (enc / "NOTICE").read_bytes() == NOTICE
    assert any(k.startswith("encoder.model.") for k in load_file(str(path / "model.safetensors")))  # weights: here only
    loaded = SpeechLLM.load(path)
    assert loaded.cfg == model.cfg  # hf_name_or_path stays as trained (provenance); encoder/ takes its place
    assert_same_model(model, loaded, codec, seconds=2.0)  # past the tiny Whisper's 64 positions: the windows slide
    # saved again from the loaded model (the source is gone): the same encoder folder, the NOTICE with it
    again = loaded.save(tmp_path / "again")
    assert {p.name: p.read_bytes() for p in (again / "encoder").iterdir()} == {p.name: p.read_bytes() for p in enc.iterdir()}


def test_whisper_model_directory_errors(tmp_path, codec):
    model = whisper_model(tmp_path / "whisper", codec, notice=False)
    good = model.save(tmp_path / "good")
    assert sorted(p.name for p in (good / "encoder").iterdir()) == ["config.json", "preprocessor_config.json"]
    # written before encoder/ existed (or copied without it): loaded from hf_name_or_path as in training ...
    old = copy_dir(good, tmp_path / "old")
    shutil.rmtree(old / "encoder")
    assert torch.equal(SpeechLLM.load(old).encoder.model.conv1.weight, model.encoder.model.conv1.weight)
    shutil.rmtree(tmp_path / "whisper")
    # ... and without that folder either, the error names the file that is missing
    with pytest.raises(CheckpointError, match=r"old/encoder/config\.json: missing, and the Whisper encoder") as e:
        SpeechLLM.load(old)
    assert "\n" not in str(e.value)
    for name in ("config.json", "preprocessor_config.json"):
        broken = copy_dir(good, tmp_path / f"no-{name}")
        (broken / "encoder" / name).unlink()
        with pytest.raises(CheckpointError, match=rf"encoder/{name}: missing \(the Whisper encoder's architecture") as e:
            SpeechLLM.load(broken)
        assert "\n" not in str(e.value)
    # a folder named encoder that is not one this code wrote is never written over
    foreign = tmp_path / "foreign"
    (foreign / "encoder").mkdir(parents=True)
    (foreign / "encoder" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match="holds model.safetensors, not only a saved encoder architecture"):
        model.save(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["encoder"]
    # an own-encoder model has no encoder folder
    torch.manual_seed(0)
    assert not (SpeechLLM(test_sized(160), codec).save(tmp_path / "own") / "encoder").exists()


def test_bundle_model_carries_the_whisper_encoder_and_its_notice(tmp_path, codec, monkeypatch, capsys):
    bundle_model = import_script("tools/model", "bundle_model")
    model = whisper_model(tmp_path / "whisper", codec)
    src = model.save(tmp_path / "trained")
    shutil.rmtree(tmp_path / "whisper")
    licence = b"A licence text of 1 MiB\n" * 43691  # counts against the size limit like any other file
    (src / "encoder" / "LICENSE").write_bytes(licence)
    dst = tmp_path / "bundled"
    monkeypatch.setattr("sys.argv", ["bundle_model.py", str(src), str(dst)])
    bundle_model.main()
    assert (dst / "encoder" / "NOTICE").read_bytes() == NOTICE and (dst / "encoder" / "LICENSE").read_bytes() == licence
    files = [p for p in dst.rglob("*") if p.is_file()]
    assert f": {sum(p.stat().st_size for p in files) / 2**20:.1f} MB" in capsys.readouterr().out
    saved = load_file(str(dst / "model.safetensors"))
    assert saved["encoder.model.conv1.weight"].dtype == torch.float16
    bundled = SpeechLLM.load(dst)
    for name, p in model.state_dict().items():
        assert torch.equal(bundled.state_dict()[name], p.half().float() if p.is_floating_point() else p), name


def test_evaluation_key_covers_the_encoder_folder(tmp_path, codec):
    """Evaluations are keyed on the model directory's content: encoder/ holds part of what the model computes."""
    from asr_stream.evaluation.runner import model_digest

    path = whisper_model(tmp_path / "whisper", codec).save(tmp_path / "m")
    before = model_digest(SpeechLLM.load(path))
    cfg = json.loads((path / "encoder" / "config.json").read_text())
    cfg["activation_function"] = "relu"  # loads, computes differently
    (path / "encoder" / "config.json").write_text(json.dumps(cfg))
    assert model_digest(SpeechLLM.load(path)) != before
