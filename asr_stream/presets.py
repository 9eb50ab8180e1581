"""Named model configurations: the tiny offline model and test-sized models built in code."""

from __future__ import annotations

from .config import DecoderConfig, EncoderConfig, ModelConfig, ProjectorConfig


def tiny_offline(chunk_ms: int = 320) -> ModelConfig:
    """~10 M parameters: 6-layer chunk-causal encoder (d=256) -> x2 stacking -> 4-layer Phi-3 (d=256).

    The same model as ``conf/tiny_synthetic.yaml`` (the bundled default); used by benchmarks.
    """
    return ModelConfig(
        encoder=EncoderConfig(chunk_ms=chunk_ms, d_model=256, n_layers=6, n_heads=4, conv_channels=128, dropout=0.05),
        projector=ProjectorConfig(stack=2, hidden=512, ctc_embed=True),
        decoder=DecoderConfig(tiny=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=4)),
        ctc_weight=0.5,
        train_k=(1, 2, 3, 5),
    )


def test_sized(chunk_ms: int = 160, prompt: str = "", mode: str = "group", ctc_embed: bool = False) -> ModelConfig:
    """A few thousand parameters per part: fast enough for equivalence tests on 2 CPU cores.

    The decoder is initialised with a large weight range (``initializer_range`` 0.2, Phi-3's default is
    0.02) so that its attention is sharp and positions matter: with 0.02 attention was nearly uniform and
    moving φ from 0 to 0.5 changed the logits by 3e-4, so a decoder that floors positions passed the
    streaming == training tests. With 0.2, φ 0 -> 0.5 changes them by ~0.8 (tests/equivalence/test_positions.py).
    """
    return ModelConfig(
        encoder=EncoderConfig(chunk_ms=chunk_ms, d_model=32, n_layers=2, n_heads=2, dropout=0.0),
        projector=ProjectorConfig(stack=2, hidden=48, ctc_embed=ctc_embed),
        decoder=DecoderConfig(tiny=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)),
        prompt=prompt,
        ctc_weight=0.3 if ctc_embed else 0.0,
        train_mode=mode,  # type: ignore[arg-type]
    )


test_sized.__test__ = False  # a preset, not a test: keeps pytest from collecting it where it is imported
