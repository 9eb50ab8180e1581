"""Tiny models built in code (no downloads) and synthetic audio shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
# by ~3 (tests/test_positions.py checks those effects against this tolerance).
TOL = 5e-5


@pytest.fixture(scope="session")
def codec():
    # a small vocabulary so that most words span several tokens (exercises word boundaries)
    return train_bpe(SENTENCES * 4, vocab_size=60)


@pytest.fixture(scope="session")
def make_model(codec):
    cache: dict = {}

    def make(chunk_ms: int = 160, prompt: str = "", mode: str = "group", seed: int = 0, ctc_embed: bool = False) -> SpeechLLM:
        key = (chunk_ms, prompt, mode, seed, ctc_embed)
        if key not in cache:
            torch.manual_seed(seed)
            cache[key] = SpeechLLM(test_sized(chunk_ms, prompt, mode, ctc_embed), codec).eval()
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
