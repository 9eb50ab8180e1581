"""Tiny models built in code (no downloads) and synthetic audio shared by the tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from asr_stream.config import EncoderConfig
from asr_stream.decoder import train_bpe
from asr_stream.model import SpeechLLM
from asr_stream.presets import test_sized

from .sysdeps import check_item

SENTENCES = [
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "STREAMING SPEECH RECOGNITION WITH LARGE LANGUAGE MODELS",
    "NOTHING IS EVER ENCODED TWICE",
    "A SMALL MODEL FOR FAST TESTS",
    "DON'T WAIT FOR THE WHOLE SENTENCE",
]

# Max |streamed - training| logit difference the equivalence tests allow. The test model (presets.test_sized)
# has logits of magnitude ~4; the float32 gap between the streaming and the training forward is at most
# 6e-6 on it, while a position error (φ 0 -> 0.5) moves logits by ~0.8 and a visibility error (k 1 -> 2)
# by ~3 (tests/equivalence/test_positions.py checks those effects against this tolerance).
TOL = 5e-5


@pytest.fixture(scope="session")
def codec():
    # a small vocabulary so that most words span several tokens (exercises word boundaries)
    return train_bpe(SENTENCES * 4, vocab_size=60)


# A tiny Whisper encoder (transformers WhisperEncoder, saved as a hub download is laid out): the real conv front end
# and 80 mel bands, hidden 32, 2 layers. Weights at 10x Whisper's init scale (0.2): attention is sharp, so a window
# or a position off by one frame moves the outputs far beyond the tolerances.
TINY_WHISPER = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                    decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, init_std=0.2)
WHISPER_CONTEXT_MS = 200  # left context of the tiny Whisper in test models: 10 frames, not a whole number of chunks


def save_tiny_whisper(path, seed: int = 0, **config) -> str:
    """A random tiny WhisperEncoder saved with save_pretrained (config.json + model.safetensors)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    WhisperEncoder(WhisperConfig(**{**TINY_WHISPER, **config})).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> str:
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def short_positions_whisper_dir(tmp_path_factory) -> str:
    """The tiny Whisper with 64 positions (1.28 s): test streams run past its last one, where the stream positions
    of the windows slide."""
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper-64"), max_source_positions=64)


@pytest.fixture(scope="session")
def make_model(codec, short_positions_whisper_dir):
    cache: dict = {}

    def make(chunk_ms: int = 160, prompt: str = "", mode: str = "group", seed: int = 0, ctc_embed: bool = False,
             encoder: str = "own") -> SpeechLLM:
        """The test-sized model; ``encoder="whisper"``: with the tiny Whisper encoder (200 ms left context, stream
        positions as the bundled model has them, 64 positions so that the windows slide after 1.28 s);
        ``encoder="whisper-lookahead"``: the same with one chunk of look-ahead and 80 ms of trailing silence."""
        key = (chunk_ms, prompt, mode, seed, ctc_embed, encoder)
        if key not in cache:
            cfg = test_sized(chunk_ms, prompt, mode, ctc_embed)
            if encoder in ("whisper", "whisper-lookahead"):
                ahead = encoder == "whisper-lookahead"
                cfg = replace(cfg, encoder=EncoderConfig(kind="whisper", hf_name_or_path=short_positions_whisper_dir,
                                                         chunk_ms=chunk_ms, hf_left_context_ms=WHISPER_CONTEXT_MS,
                                                         whisper_positions="stream", whisper_lookahead_chunks=int(ahead),
                                                         whisper_trailing_silence_ms=80 * ahead))
            elif encoder != "own":
                raise ValueError(encoder)
            torch.manual_seed(seed)
            cache[key] = SpeechLLM(cfg, codec).eval()
        return cache[key]

    return make


def import_script(folder: str, name: str):
    """A script of the repository's ``tools/`` or ``benchmarks/`` folder, imported as a module."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def noise_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Band-limited noise with a slow envelope: enough structure for the encoder to produce varied outputs."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    x = rng.standard_normal(n).astype(np.float32)
    env = 0.5 + 0.5 * np.sin(np.linspace(0, 12 * np.pi, n, dtype=np.float32))
    return (0.1 * x * env).astype(np.float32)


def pytest_runtest_setup(item):
    check_item(item)  # @needs(...) system requirements: skip with the make target that installs them (tests/sysdeps.py)


def run_forced(model, wave, tokens, block: int = 3000, **kw):
    """A StreamingSession fed ``wave`` in blocks of ``block`` samples with ``tokens`` forced as its output (the
    streaming side of the streaming == training tests); ``kw`` are the session's settings."""
    from asr_stream.streaming import StreamingSession

    s = StreamingSession(model, max_tokens_per_s=100.0, **kw)
    s.teacher_force(tokens)
    for i in range(0, len(wave), block):
        s.push(wave[i : i + block])
    s.finish()
    return s
