"""asr_stream: streaming speech recognition with a speech LLM (chunked encoder + projector + decoder)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"


def default_model_dir() -> Path:
    """The bundled model directory (``asr_stream/assets/default_model``) used when no ``--model`` is given.

    Raises FileNotFoundError (one line) when the package ships no model there.
    """
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(f"no bundled model found at {DEFAULT_MODEL_DIR}; pass --model DIR")
    return DEFAULT_MODEL_DIR


__all__ = ["DEFAULT_MODEL_DIR", "default_model_dir"]
