"""Encoder kind 'whisper' (asr_stream/encoder/whisper.py) on a tiny random WhisperEncoder saved as a hub download is
laid out: each chunk's window and positions follow the rule, streaming equals the training forward. Streaming ==
training forward through the session and BatchedStreams: test_streaming.py, test_batched.py, test_policy.py
(parametrised over encoders). The CTranslate2 converter and the real tiny.en weights: unit/test_whisper_ct2.py."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_stream.config import EncoderConfig
from asr_stream.encoder import build_encoder
from asr_stream.encoder.whisper import LOG10_FLOOR

from ..conftest import TINY_WHISPER, noise_audio, save_tiny_whisper
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
