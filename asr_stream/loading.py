"""The one way a command gets its model: :func:`load_model`.

Every command that runs a model (``transcribe``, ``mic``, ``serve``, ``eval``, ``sweep``) loads it here, so each
gets the same checks, in the same order, with the same one-line errors: the device exists on this machine, a
chunk override is a positive length at most 4x the trained one (a longer chunk reads most utterances in one go)
and is announced with a :class:`~asr_stream.config.TrainingMismatchWarning`, and bfloat16 is said to be slow where
the hardware has no bfloat16 instructions. Torch is imported only when a function runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

MAX_CHUNK_FACTOR = 4  # a chunk override may be at most this many times the trained chunk length
ENCODER_DTYPES = ("float32", "bfloat16")


def check_device(device: str) -> None:
    """One-line errors for a device string torch does not know, or a device this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r} (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r} is not supported (expected cpu, cuda or cuda:N)")


def check_chunk_ms(chunk_ms: Optional[int]) -> None:
    """ValueError unless ``chunk_ms`` is None (the model's own) or a positive length."""
    if chunk_ms is not None and chunk_ms <= 0:
        raise ValueError(f"--chunk-ms must be > 0, got {chunk_ms}")


def override_chunk_ms(m, chunk_ms: Optional[int]) -> None:
    """Stream ``m`` (a SpeechLLM) in chunks of ``chunk_ms`` ms (None or the trained length: unchanged).

    A length over :data:`MAX_CHUNK_FACTOR` times the trained one is refused; any other length than the trained one
    is announced with a TrainingMismatchWarning (expect a higher error rate)."""
    check_chunk_ms(chunk_ms)
    trained = m.cfg.encoder.chunk_ms
    if chunk_ms is None or chunk_ms == trained:
        return
    if chunk_ms > MAX_CHUNK_FACTOR * trained:
        raise ValueError(f"--chunk-ms {chunk_ms}: more than {MAX_CHUNK_FACTOR}x the {trained} ms the model was trained "
                         "with (it would read most utterances in one chunk)")
    m.set_chunk_ms(chunk_ms)
    from .config import TrainingMismatchWarning

    warnings.warn(f"streaming differently from how the model was trained: chunk_ms={chunk_ms} (trained: "
                  f"{trained}) (expect a higher error rate)", TrainingMismatchWarning, stacklevel=3)


def set_encoder_dtype(m, name: str) -> None:
    """Stream ``m``'s encoder in ``name`` (float32 or bfloat16); warn where bfloat16 has no hardware support."""
    import torch

    if name not in ENCODER_DTYPES:
        raise ValueError(f"--encoder-dtype must be float32 or bfloat16, got {name!r}")
    if name == "float32":
        m.encoder.compute_dtype = None
        return
    dev = m.device
    native = torch.cuda.is_bf16_supported() if dev.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if not native:
        warnings.warn(f"--encoder-dtype bfloat16: this {dev.type.upper()} has no bfloat16 instructions, so the encoder "
                      "will be slower, not faster", stacklevel=2)
    m.encoder.compute_dtype = torch.bfloat16


def load_model(model: Optional[str | Path] = None, device: str = "cpu", chunk_ms: Optional[int] = None,
               encoder_dtype: str = "float32"):
    """The model a command runs: ``model`` (a model directory) or the bundled default, on ``device``, streaming in
    chunks of ``chunk_ms`` ms (None: as trained; see :func:`override_chunk_ms`), its encoder computing in
    ``encoder_dtype``. The device and the chunk length are checked before the weights are read."""
    from . import default_model_dir
    from .model import SpeechLLM

    check_device(device)
    check_chunk_ms(chunk_ms)
    m = SpeechLLM.load(model if model is not None else default_model_dir(), map_location=device)
    override_chunk_ms(m, chunk_ms)
    set_encoder_dtype(m, encoder_dtype)
    return m


__all__ = ["ENCODER_DTYPES", "MAX_CHUNK_FACTOR", "check_chunk_ms", "check_device", "load_model", "override_chunk_ms",
           "set_encoder_dtype"]
