"""``asr-stream`` command line. Subcommands import their heavy dependencies lazily.

Errors a person can cause (bad files, devices, models, options) print one line and exit 2.
"""

from __future__ import annotations

import sys
from typing import Literal, Optional


def masks(mode: Literal["group", "interleaved", "batch"] = "group", k: int = 1, phi: float = 0.0,
          chunks: int = 3, embeds_per_chunk: int = 1, prompt_tokens: int = 0,
          words: str = "1 2 1") -> None:
    """Print a mode's attention mask for a small example, to see what the model attends to.

    Args:
        mode: group (group positions + wait-k), interleaved (arrival order, causal) or batch (offline).
        k: wait-k (ignored by batch, which trains offline).
        phi: target-group start position (group mode).
        chunks: audio chunks N.
        embeds_per_chunk: source embeddings per chunk E.
        prompt_tokens: prompt tokens P before the audio.
        words: tokens per target word, e.g. "1 2 1" = a one-token word, a two-token word, a one-token word.
    """
    from .groups import render, training_layout, units_done

    lengths = [int(w) for w in words.split()]
    flags = [i == n - 1 for n in lengths for i in range(n)]
    units = units_done(flags)
    els = training_layout(mode, prompt_tokens, chunks, embeds_per_chunk, units, None if mode == "batch" else k, phi)
    print(f"mode={mode} k={k} phi={phi} N={chunks} E={embeds_per_chunk} P={prompt_tokens} words={lengths}")
    print("rows: p = prompt, a = audio embedding, t = target row (t0 = BOS; row i predicts token i); x = attends; (position)")
    print(render(mode, els))


def transcribe(files: list[str], model: str, k: int = 3, phi: float = 0.0,
               mode: Literal["group", "interleaved", "batch"] = "group",
               reencode: Literal["none", "position", "kv"] = "none", chunk_ms: Optional[int] = None,
               device: str = "cpu", block_ms: int = 100) -> None:
    """Stream audio files through a model and print words as they are emitted, then the final text.

    Args:
        files: audio files (wav/flac/ogg; any rate; mono or multi-channel).
        model: model directory (config.json + model.safetensors + tokenizer).
        k: wait-k in chunks.
        phi: target-group start position.
        mode: group, interleaved or batch.
        reencode: batch mode only: none, position or kv.
        chunk_ms: override the model's chunk length in ms.
        device: cpu or cuda.
        block_ms: size of the audio blocks pushed into the session.
    """
    import torch

    from .audio import load_audio
    from .model import SpeechLLM
    from .streaming import StreamingSession

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    m = SpeechLLM.load(model, map_location=device)
    if chunk_ms:
        m.set_chunk_ms(chunk_ms)
    for f in files:
        wave = load_audio(f)
        s = StreamingSession(m, mode=mode, k=k, phi=phi, reencode=reencode)
        step = block_ms * 16
        print(f"{f}: ", end="", flush=True)
        for i in range(0, len(wave), step):
            for w in s.push(wave[i : i + step]):
                print(w.text, end=" ", flush=True)
        for w in s.finish():
            print(w.text, end=" ", flush=True)
        print()
        print(f"final: {s.text}")


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import CLI

    from .audio import AudioError

    try:
        CLI([masks, transcribe], args=argv, as_positional=True)
    except (AudioError, ValueError, OSError) as e:
        print(f"asr-stream: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
