"""The interface every chunked encoder implements (:func:`asr_stream.encoder.build_encoder` makes one from its config).

An encoder consumes audio in chunks of ``chunk_samples`` samples and emits ``frames_per_chunk`` output
frames per chunk. Outputs of a chunk depend only on that chunk and earlier audio, so they are final
once computed: streaming never re-encodes.

- ``forward(wave)``: whole utterances, (B, N * chunk_samples) -> (B, N * frames_per_chunk, dim).
- ``init_state(batch)`` / ``stream(wave, state)``: the same computation chunk by chunk, carrying a cache;
  ``stream`` takes (B, n * chunk_samples) for any n >= 1 and returns (B, n * frames_per_chunk, dim).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..audio.io import SAMPLE_RATE


@contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: as set), then restore the count.

    The count is the calling thread's own (OpenMP keeps it per thread), so it is set in the thread that computes.
    """
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class ChunkEncoder(nn.Module):
    chunk_samples: int
    frames_per_chunk: int
    dim: int
    lookahead_chunks: int = 0
    """Chunks by which the output lags the input: ``stream`` of audio chunk c returns output chunk c, which holds
    audio chunk c - lookahead_chunks (zeros for c < lookahead_chunks). An utterance needs this many chunks of
    silence after its audio for all of it to come out (``SpeechLLM.num_chunks`` counts them)."""
    threads: Optional[int] = None
    """CPU threads for one streaming call (None: torch's current setting). ``asr-stream serve --threads`` sets it:
    the encoder's batched call is the one large computation of a tick, the decoder's steps are small."""

    compute_dtype: Optional[torch.dtype] = None
    """The dtype a streaming call computes in (None: the weights' own). ``torch.bfloat16`` runs the call under
    autocast: matrix products and convolutions in bfloat16, the result handed on in the weights' dtype, so the
    projector and decoder are untouched. On a CPU with bfloat16 instructions (AVX512-BF16, AMX) the encoder's
    call takes about half the time; elsewhere it is slower. Whole-utterance ``forward`` (training) is not
    affected: its precision is the trainer's. ``--encoder-dtype`` of transcribe, mic, eval, sweep and serve sets it."""

    @contextmanager
    def _streaming(self, wave: torch.Tensor) -> Iterator[None]:
        """The context a streaming call runs in: ``threads`` on the CPU, autocast to ``compute_dtype`` if set."""
        with ExitStack() as stack:
            stack.enter_context(cpu_threads(self.threads if wave.device.type == "cpu" else None))
            if self.compute_dtype is not None:
                stack.enter_context(torch.autocast(wave.device.type, dtype=self.compute_dtype))
            yield

    def _handed_on(self, out: torch.Tensor) -> torch.Tensor:
        """A streaming call's output in the weights' dtype (what the projector expects), whatever it computed in."""
        return out if self.compute_dtype is None else out.to(next(self.parameters()).dtype)

    def init_state(self, batch: int = 1) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def stream(self, wave: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    def _check_chunks(self, wave: torch.Tensor) -> int:
        if wave.dim() != 2 or wave.shape[1] == 0 or wave.shape[1] % self.chunk_samples:
            raise ValueError(
                f"encoder input must be (batch, n * {self.chunk_samples}) samples, got {tuple(wave.shape)}"
            )
        return wave.shape[1] // self.chunk_samples


def chunk_samples_for(chunk_ms: int) -> int:
    samples = chunk_ms * SAMPLE_RATE // 1000
    if samples * 1000 != chunk_ms * SAMPLE_RATE:
        raise ValueError(f"chunk_ms={chunk_ms} is not a whole number of samples at {SAMPLE_RATE} Hz")
    return samples
