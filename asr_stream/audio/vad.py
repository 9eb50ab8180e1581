"""Silero VAD (v6, MIT) as a plain torch module over its safetensors weights, run as a stream.

The weights come from the PyPI package ``silero-vad`` (6.2.3, pinned by hash in ``requirements/silero-vad.txt``;
``make install`` installs it), which ships them inside the wheel as ``silero_vad/data/silero_vad_16k.safetensors``.
We read only that file: the package's own loader runs a TorchScript archive and sets torch's thread count to 1
when imported, and neither is something a library should do behind its caller's back. The network below is the
package's own description of it (``silero_vad/tinygrad_model.py``): an STFT as a strided convolution, four
convolutions, one LSTM cell and a sigmoid; ``tests/unit/test_vad.py`` checks it against the package's TorchScript model
(loaded with that model's weights, it gives that model's scores exactly). The safetensors weights are not the
TorchScript model's (same network, different values: probably an earlier training run; scores on the same speech
differ by up to ~0.4 on single windows), so what the endpointer measures is measured with these weights.

One step reads a 512-sample window (32 ms at 16 kHz) plus the 64 samples before it and returns the probability that
the window is speech; the LSTM state and the 64-sample context carry over from step to step.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .io import SAMPLE_RATE

WINDOW = 512  # samples per step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window each step also reads
PACKAGE = "silero-vad==6.2.3"
INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements/silero-vad.txt (make install does it)"


class VADError(RuntimeError):
    """The VAD's weights are missing or do not fit. One-line message."""


def weights_path() -> Path:
    """The safetensors file inside the installed ``silero_vad`` package (not imported: see the module doc)."""
    spec = importlib.util.find_spec("silero_vad")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise VADError(f"the silero VAD needs the package {PACKAGE}: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad_16k.safetensors"
    if not path.is_file():
        raise VADError(f"{path} is missing: reinstall {PACKAGE} ({INSTALL_HINT})")
    return path


class SileroVAD(nn.Module):
    """The 16 kHz Silero VAD network; :meth:`step` scores one window, :meth:`probabilities` a whole signal."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "SileroVAD":
        from safetensors.torch import load_file

        model = cls()
        path = path or weights_path()
        try:
            state = load_file(str(path))
            model.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError) as e:
            raise VADError(f"cannot load the silero VAD weights: {str(e).splitlines()[0]}") from None
        return model.eval()

    def step(self, x: torch.Tensor, state: Optional[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (B, CONTEXT + WINDOW) samples -> (B,) speech probabilities and the new LSTM state."""
        x = F.pad(x, (0, 64), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :129] ** 2 + x[:, 129:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.relu(conv(x))
        h, c = self.lstm_cell(x.squeeze(-1), state)
        p = torch.sigmoid(self.final_conv(F.relu(h).unsqueeze(-1))).squeeze(-1).mean(-1)
        return p, (h, c)

    @torch.inference_mode()
    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of every whole 512-sample window of a 16 kHz signal, as :class:`VADStream` gives."""
        stream = VADStream(self)
        return stream.push(samples)


@functools.lru_cache(maxsize=1)
def shared_model() -> SileroVAD:
    """One loaded network per process (streams keep their own state in :class:`VADStream`)."""
    return SileroVAD.load()


class VADStream:
    """One stream's VAD state: feed any block size, get the probabilities of the windows it completes."""

    def __init__(self, model: SileroVAD) -> None:
        self.model = model
        self.state: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.context = torch.zeros(1, CONTEXT)
        self._rest = np.zeros(0, np.float32)

    @torch.inference_mode()
    def push(self, samples: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._rest, np.asarray(samples, np.float32).reshape(-1)])
        n = buf.shape[0] // WINDOW
        self._rest = buf[n * WINDOW:].copy()
        out = np.empty(n, np.float32)
        x = torch.from_numpy(buf[: n * WINDOW].copy()).view(n, WINDOW) if n else None
        for i in range(n):
            window = torch.cat([self.context, x[i : i + 1]], dim=1)
            p, self.state = self.model.step(window, self.state)
            self.context = window[:, -CONTEXT:]
            out[i] = float(p[0])
        return out


class SileroDetector:
    """Per-10-ms-frame speech decisions from the VAD, for the endpointer (same calls as its energy detector).

    :meth:`push` takes whole frames of ``frame`` samples and returns the silence decisions of the oldest frames
    not yet decided, in order; a frame is decided once the 512-sample window holding its centre has been scored
    (at most 32 ms after it arrived). :meth:`flush` decides the rest with the last score. Hysteresis as in
    Silero's own iterator: speech starts at ``p >= threshold`` and lasts while ``p >= threshold - 0.15``.
    """

    def __init__(self, model: SileroVAD, threshold: float = 0.5, frame: int = 160) -> None:
        if not 0.15 < threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0.15, 1), got {threshold}")
        self.stream = VADStream(model)
        self.threshold = threshold
        self.frame = frame
        self.probs: list[float] = []  # score of each window so far
        self.frames_in = 0  # frames received
        self.frames_out = 0  # frames decided
        self.speech = False

    def _decide(self, p: float) -> bool:
        self.speech = p >= (self.threshold - 0.15 if self.speech else self.threshold)
        return not self.speech

    def push(self, frames: np.ndarray) -> np.ndarray:
        """(n, frame) samples -> silence decisions (bool) of the next frames that can be decided."""
        self.frames_in += frames.shape[0]
        self.probs.extend(self.stream.push(frames.reshape(-1)).tolist())
        out = []
        while self.frames_out < self.frames_in:
            w = (self.frames_out * self.frame + self.frame // 2) // WINDOW  # the window holding the frame's centre
            if w >= len(self.probs):
                break
            out.append(self._decide(self.probs[w]))
            self.frames_out += 1
        return np.asarray(out, dtype=bool)

    def flush(self) -> np.ndarray:
        """Decisions for the frames still waiting (the end of the stream: the last window's score, or silence)."""
        last = self.probs[-1] if self.probs else 0.0
        out = [self._decide(last) for _ in range(self.frames_in - self.frames_out)]
        self.frames_out = self.frames_in
        return np.asarray(out, dtype=bool)


assert SAMPLE_RATE == 16_000  # the weights are the 16 kHz model's
