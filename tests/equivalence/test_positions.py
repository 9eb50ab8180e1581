"""Positions and masks matter to the test model, and positions reach RoPE as given.

The equivalence tests (test_streaming, test_batched) can only catch a position or mask bug if such a bug
moves the logits by much more than their tolerance ``TOL``. These tests check that margin directly, and
that fractional positions arrive at Phi-3's rotary embedding unrounded (training forward and streaming).
"""

import pytest
import torch

from asr_stream import decoder as dec

from ..conftest import SENTENCES, TOL, noise_audio
from .test_streaming import forward_logits, stream_logits

MARGIN = 1000 * TOL  # an error must move some logit by at least this much for the tests to see it safely


def test_phi_changes_the_logits_far_beyond_the_tolerance(make_model, codec):
    model = make_model(160)
    wave = noise_audio(1.9, seed=1)
    tokens = codec.encode(SENTENCES[1])
    phis = (0.0, 0.5, 256.0)
    full = {phi: forward_logits(model, wave, tokens, mode="group", k=1, phi=phi) for phi in phis}
    streamed = {phi: stream_logits(model, wave, tokens, 3000, mode="group", k=1, phi=phi)[0] for phi in phis}
    for a, b in ((0.0, 0.5), (0.0, 256.0), (0.5, 256.0)):
        assert (full[a] - full[b]).abs().max().item() > MARGIN, (a, b)
        assert (streamed[a] - streamed[b]).abs().max().item() > MARGIN, (a, b)


def test_mask_errors_change_the_logits_far_beyond_the_tolerance(make_model, codec):
    """One chunk more or less for every target row (visibility off by one): a large change."""
    model = make_model(160)
    wave = noise_audio(1.9, seed=1)
    tokens = codec.encode(SENTENCES[1])
    k1, k2 = (forward_logits(model, wave, tokens, mode="group", k=k, phi=0.0) for k in (1, 2))
    assert (k1 - k2).abs().max().item() > MARGIN


def rope_positions(model, fn) -> list[torch.Tensor]:
    """The position_ids of every call of the decoder's rotary embedding while ``fn`` runs."""
    rotary = dec.base_model(model.llm).model.rotary_emb
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs, out):
        pos = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
        seen.append(pos.detach().flatten().clone())

    h = rotary.register_forward_hook(hook, with_kwargs=True)
    try:
        fn()
    finally:
        h.remove()
    return seen


@pytest.mark.parametrize("phi", [0.5, 3.25])
def test_rope_receives_fractional_positions(make_model, codec, phi):
    """Target positions φ + i reach RoPE unfloored, as floats, in the training forward and in streaming;
    and streaming feeds RoPE exactly the training forward's positions (each slot once, group mode)."""
    model = make_model(160, prompt="TRANSCRIBE")
    wave = noise_audio(1.3, seed=2)
    tokens = codec.encode(SENTENCES[3])
    rows = len(tokens) + 1
    S = len(model.prompt_ids) + model.num_chunks(len(wave)) * model.embeds_per_chunk
    (train,) = rope_positions(model, lambda: forward_logits(model, wave, tokens, mode="group", k=2, phi=phi))
    stream = torch.cat(rope_positions(model, lambda: stream_logits(model, wave, tokens, 3000, mode="group", k=2, phi=phi)))
    assert train.is_floating_point() and stream.is_floating_point()
    assert sorted(train.double().tolist()) == sorted([float(s) for s in range(S)] + [phi + i for i in range(rows)])
    # streaming: every target row once at φ + i, unrounded; source slots 0, 1, ... (a stream that has
    # written its EOS skips the rest of the audio, so it may stop before S)
    frac = stream != stream.floor()
    assert sorted(stream[frac].double().tolist()) == [phi + i for i in range(rows)]
    assert sorted(stream[~frac].tolist()) == [float(s) for s in range(int((~frac).sum()))]
