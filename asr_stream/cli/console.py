"""What the commands print besides their results: one-line errors and warnings on stderr, words as they come."""

from __future__ import annotations

import sys
from typing import Optional


def say_error(message: str) -> None:
    """``asr-stream: error: MESSAGE`` on stderr (the command goes on or ends, as its caller decides)."""
    print(f"asr-stream: error: {message}", file=sys.stderr, flush=True)


def warn(where: str, warnings: list[str]) -> None:
    """Print each warning about ``where`` (a file, the microphone) as one line on stderr."""
    for w in warnings:
        print(f"asr-stream: warning: {where}: {w}", file=sys.stderr, flush=True)


def print_words(words) -> None:
    """Newly emitted words on stdout, at once, on the current line."""
    print(" ".join(w.text for w in words), end=" ", flush=True)


def check_writable(path: Optional[str], option: str) -> None:
    """Fail before any work when an output file cannot be created (its folder is missing)."""
    from pathlib import Path

    if path is not None:
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"{option} {path}: folder {parent} does not exist")


def check_block_ms(block_ms: int) -> None:
    """ValueError unless ``--block-ms`` is positive."""
    if block_ms <= 0:
        raise ValueError(f"--block-ms must be > 0, got {block_ms}")


__all__ = ["check_block_ms", "check_writable", "print_words", "say_error", "warn"]
