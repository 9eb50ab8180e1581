"""OpenAI Whisper's audio encoder (transformers ``WhisperEncoder``) run chunk-wise, with outputs final once computed.

Whisper encodes 30 s windows: log-mel frames every 10 ms, normalised by the window's loudest value, two
convolutions (the second with stride 2: 50 frames/s) with sinusoidal positions, then a transformer that attends
both ways. Here each chunk is encoded on its own short window instead, and three things are changed so that a
chunk's frames depend only on its audio and the audio before it (docs/design.md, "Encoders"):

- **Log-mel, causally framed.** Frame t covers samples [160 t - 240, 160 t + 160) (Whisper centres frame t on
  sample 160 t; ours ends at the end of its 10 ms hop, 2.5 ms later), with Whisper's Hann window, FFT size and
  mel filters (``WhisperFeatureExtractor``'s). Whisper floors log10 mel power at the window's maximum - 8 and
  maps it by (x + 4) / 4; the maximum of a 30 s window is not known while it streams, so the floor is fixed at
  ``LOG10_FLOOR`` = -8 (as if every window peaked at 0). Measured with Whisper tiny.en on 30 s padded passes of
  four synthetic sentences at full level and at -20 dB: cosine of the encoder outputs to Whisper's own rule
  0.991-0.9999 (mean 0.995); a floor of -7 gave 0.970-0.9999, -6 gave 0.93.
- **The convolutions are computed once per frame, on the continuous stream.** Output frame j (20 ms) depends on
  mel frames 2j - 2 .. 2j + 2, so the last frame of a chunk needs the first mel frame of the next chunk. Each
  window takes its last frame *provisionally*, with the convolution's zero padding in place of that mel frame
  (what Whisper's window end sees), and every other frame exactly; the exact value of the provisional frame is
  computed with the next chunk and serves as its left context from then on. The stream carries the last 4 mel
  frames and the exact frames of the left context, so no convolution output is computed twice.
- **Window and positions.** Chunk c (F = chunk_ms / 20 frames) is encoded on the window of the C = context_ms / 20
  frames before it and its own F frames, but never reaching before the stream: the first chunks' windows are
  shorter, and start with the stream as Whisper's window starts with the audio. The window's frames take the
  sinusoidal positions of their place in it, 0, 1, ... (``whisper_positions: window``), or of their place in the
  stream, as in Whisper's own window (``stream``; past the table's 1,500 the window slides to end on the last
  position); the transformer runs on the window
  and the chunk's F outputs are kept. Training (:meth:`forward`) computes exactly this for every chunk (the same
  code, as one batch of windows of C + F slots, the slots before a stream masked), so streaming equals the
  training forward.
- **Look-ahead and trailing silence** (both off by default). ``whisper_lookahead_chunks`` L: the step that receives
  chunk c runs on the window [C context frames | chunks c - L .. c] and emits chunk c - L's F frames (the window's
  slots C .. C + F - 1), so they are computed with L chunks of audio to their right and the output lags the audio
  by L chunks: output chunks 0 .. L - 1 are zeros (there is no audio before the stream), and an utterance is read
  with L chunks of zeros after it (``lookahead_chunks``; ``SpeechLLM.num_chunks``). ``whisper_trailing_silence_ms``
  (S = ms / 20 frames): every window ends in S frames of digital silence after its last real frame, convolved from
  floor-value mel frames, so the last real (provisional) frame sees a silence mel frame to its right instead of
  the zero padding; their positions continue past the last real frame's (the window of C + (L + 1) F + S frames
  must fit Whisper's positions; with 'stream' positions the window slides so that its last silence frame takes
  the last one). A linear probe of tiny.en's frames: 960 ms context 5.00 nats/token, + 320 ms look-ahead + 640 ms
  silence 3.75, Whisper's own pass 3.33 (benchmarks/encoder/whisper_probe.py, docs/design.md).

Cost per chunk: the transformer over C + F frames ((C + F) / F times its work per frame of one pass; 4.0 at 960 /
320 ms; C + (L + 1) F + S frames with look-ahead and silence: 6.0 at 960 / 320 ms, L = 1, 640 ms), the convolutions over the chunk's frames plus one (the provisional frame), the log-mel over its samples.
The transformer's work on the context cannot be reused: attention inside the window is bidirectional and each
frame's position changes with every window. Whisper tiny.en on one CPU thread: 10 ms per 320 ms chunk without
context, 19 ms with 960 ms, 47 ms with 3.84 s (``benchmarks/encoder/whisper_encoder.py``, benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.io import SAMPLE_RATE
from ..config import EncoderConfig
from .base import ChunkEncoder, chunk_samples_for

LOG10_FLOOR = -8.0
"""log10 mel power is floored here (Whisper: at the 30 s window's maximum - 8, which a stream cannot know yet)."""
CONV_PAST = 4
"""Mel frames before a chunk that its first (exact) conv output frame needs: conv1 (3 wide), then conv2 (3 wide,
stride 2) centred one output frame before the chunk."""
_ENCODER_KEYS = {r"^(model\.)?encoder\.": ""}  # WhisperForConditionalGeneration / WhisperModel -> WhisperEncoder names
ARCHITECTURE_FILES = ("config.json", "preprocessor_config.json")
"""What a saved model's ``encoder/`` folder needs to build the encoder (its weights are in model.safetensors)."""
NOTICE_PATTERNS = ("NOTICE*", "LICENSE*", "LICENCE*", "COPYING*")
"""Licence and provenance files of a local Whisper folder: they travel with its weights into saved models."""


class WhisperLogMel(nn.Module):
    """(B, 240 + T) samples at 16 kHz -> (B, T / 160, n_mels) Whisper log-mel, normalised, causally framed.

    Frame t of the output covers input samples [160 t, 160 t + 400): the first 240 samples are the previous
    chunk's (zeros at the start of a stream). Values: (max(log10(max(mel power, 1e-10)), LOG10_FLOOR) + 4) / 4.
    """

    def __init__(self, n_fft: int, hop: int, mel_filters) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", torch.as_tensor(mel_filters, dtype=torch.float32), persistent=False)
        self.n_mels = self.filters.shape[1]

    @property
    def context(self) -> int:
        """Samples of past audio a frame needs beyond its own hop (n_fft - hop = 240)."""
        return self.n_fft - self.hop

    @property
    def silence(self) -> float:
        """The normalised value of digital silence (every band at the floor)."""
        return (LOG10_FLOOR + 4.0) / 4.0

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wave.device.type, enabled=False):  # features stay float32 under a bf16 encoder
            frames = wave.float().unfold(-1, self.n_fft, self.hop)  # (B, T', n_fft)
            spec = torch.fft.rfft(frames * self.window, n=self.n_fft)
            power = spec.real.square() + spec.imag.square()
            logmel = torch.clamp(power @ self.filters, min=1e-10).log10()
            return (torch.clamp(logmel, min=LOG10_FLOOR) + 4.0) / 4.0


@dataclass
class WhisperStreamState:
    """Per-stream carry of the Whisper encoder: everything of the past that a chunk's window needs, computed once."""

    tail: torch.Tensor  # (B, 240) last samples: the first mel frame of the next chunk starts in them
    mel: torch.Tensor  # (B, CONV_PAST, n_mels) last mel frames: the next chunk's first conv outputs need them
    ctx: torch.Tensor  # (B, max(C + L F - 1, 0), d) exact conv outputs of the window before the last chunk's end
    chunks: torch.Tensor  # (B,) chunks encoded (a tensor, so states of streams at different points stack)


def load_whisper_encoder(name_or_path: str):
    """(WhisperEncoder in float32, WhisperFeatureExtractor) from a hub id or a local directory.

    Takes a ``WhisperEncoder`` directory (what ``tools/model/convert_whisper_ct2.py`` writes) or a whole Whisper
    checkpoint (``WhisperForConditionalGeneration`` / ``WhisperModel``, e.g. ``openai/whisper-small``), whose
    encoder weights are renamed on loading. Every encoder weight must be in the checkpoint: a missing one, or a
    weight that is neither the encoder's nor the decoder's, is a one-line ValueError. The feature extractor's
    settings (FFT size, hop, mel bands) come from ``preprocessor_config.json`` when there is one.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    try:
        config = WhisperConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{name_or_path}: cannot load a Whisper encoder ({str(e).splitlines()[0]})") from None
    if config.model_type != "whisper":
        raise ValueError(f"{name_or_path}: a {config.model_type} model, not Whisper")
    try:
        model, info = WhisperEncoder.from_pretrained(name_or_path, config=config, key_mapping=_ENCODER_KEYS,
                                                     output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ValueError(f"{name_or_path}: cannot load a Whisper encoder ({str(e).splitlines()[0]})") from None
    missing = sorted(info["missing_keys"])
    foreign = sorted(k for k in info["unexpected_keys"] if not k.startswith(("decoder.", "model.decoder.", "proj_out.")))
    bad = sorted(info["mismatched_keys"] or [], key=str)
    if missing or foreign or bad:
        what = (f"{len(missing)} encoder weight(s) missing (e.g. {missing[0]})" if missing else
                f"unexpected weight(s) (e.g. {foreign[0]})" if foreign else f"weights of the wrong shape (e.g. {bad[0]})")
        raise ValueError(f"{name_or_path}: not a complete Whisper encoder checkpoint: {what}")
    try:
        fe = WhisperFeatureExtractor.from_pretrained(name_or_path)
    except OSError:  # no preprocessor_config.json: Whisper's defaults at the model's mel count
        fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    _check_features(name_or_path, fe, config)
    return model, fe


def _check_features(where, fe, config) -> None:
    """The feature extractor must make the encoder's mel bands from 16 kHz audio in 10 ms hops (one-line ValueError)."""
    if fe.feature_size != config.num_mel_bins:
        raise ValueError(f"{where}: the feature extractor makes {fe.feature_size} mel bands, the encoder takes {config.num_mel_bins}")
    if fe.sampling_rate != SAMPLE_RATE or fe.hop_length != 160 or fe.n_fft <= fe.hop_length:
        raise ValueError(f"{where}: feature extractor at {fe.sampling_rate} Hz, hop {fe.hop_length}, FFT "
                         f"{fe.n_fft}; this encoder kind streams 16 kHz audio with 10 ms hops")


def build_whisper_encoder(folder: str | Path):
    """(WhisperEncoder in float32 with *untrained* weights, WhisperFeatureExtractor) from a saved model's ``encoder/``
    folder: the architecture from its ``config.json``, the log-mel settings from its ``preprocessor_config.json``
    (both required; no weights are read: the caller loads them). A missing or unfit file is a one-line ValueError."""
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    folder = Path(folder)
    for name in ARCHITECTURE_FILES:
        if not (folder / name).is_file():
            raise ValueError(f"{folder / name}: missing (a model's Whisper encoder architecture)")
    read = {}
    for name, cls in zip(ARCHITECTURE_FILES, (WhisperConfig, WhisperFeatureExtractor)):
        try:
            read[name] = cls.from_json_file(str(folder / name))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{folder / name}: unreadable ({str(e).splitlines()[0]})") from None
    config, fe = read.values()
    if config.model_type != "whisper":
        raise ValueError(f"{folder / 'config.json'}: a {config.model_type} model, not Whisper")
    _check_features(folder, fe, config)
    return WhisperEncoder(config).to(torch.float32), fe


def read_notices(name_or_path: str | Path) -> dict[str, bytes]:
    """The licence / provenance files (``NOTICE_PATTERNS``) of a local Whisper folder, by name; none for a hub id."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return {}
    return {f.name: f.read_bytes() for pattern in NOTICE_PATTERNS for f in sorted(folder.glob(pattern)) if f.is_file()}


class WhisperChunkEncoder(ChunkEncoder):
    """``kind: whisper``: a pretrained Whisper encoder (``hf_name_or_path``) with ``hf_left_context_ms`` of context.

    ``architecture``: a saved model's ``encoder/`` folder (:meth:`save_architecture` wrote it) to build the encoder
    from instead, with untrained weights that the caller replaces (``SpeechLLM.load``); ``hf_name_or_path`` is then
    not read. Either way the encoder keeps its Whisper config, log-mel settings and the folder's licence files, so
    that a saved model can be built again without the folder it was first loaded from."""

    def __init__(self, cfg: EncoderConfig, architecture: str | Path | None = None) -> None:
        super().__init__()
        if not cfg.hf_name_or_path and architecture is None:
            raise ValueError("encoder kind 'whisper' needs hf_name_or_path (a hub id or a local directory)")
        if not cfg.hf_normalize:
            raise ValueError("hf_normalize applies to encoder kind 'hf' only (Whisper normalises its log-mel itself)")
        self.cfg = cfg
        if architecture is None:
            source, (self.model, fe) = cfg.hf_name_or_path, load_whisper_encoder(cfg.hf_name_or_path)
        else:
            source, (self.model, fe) = architecture, build_whisper_encoder(architecture)
        self.feature_extractor = fe
        self.notices = read_notices(source)
        self.logmel = WhisperLogMel(fe.n_fft, fe.hop_length, fe.mel_filters)
        self.dim = self.model.config.d_model
        self.set_chunk_ms(cfg.chunk_ms)

    def set_chunk_ms(self, chunk_ms: int) -> None:
        """Change the chunk length (the window follows: context + chunk frames); weights are unchanged."""
        samples = chunk_samples_for(chunk_ms)
        if samples % (2 * self.logmel.hop):
            raise ValueError(f"chunk_ms={chunk_ms} must be a multiple of 20 ms (one Whisper encoder frame)")
        context = self.cfg.hf_left_context_ms // 20
        L, S = self.cfg.whisper_lookahead_chunks, self.cfg.whisper_trailing_silence_ms
        if L < 0 or S < 0 or S % 20:
            raise ValueError(f"whisper_lookahead_chunks ({L}) must be >= 0 and whisper_trailing_silence_ms ({S}) a "
                             f"multiple of 20 ms >= 0")
        limit = self.model.config.max_source_positions
        if context + (L + 1) * samples // (2 * self.logmel.hop) + S // 20 > limit:
            raise ValueError(f"a window of {self.cfg.hf_left_context_ms} ms context + {L + 1} x {chunk_ms} ms chunks "
                             f"+ {S} ms silence exceeds Whisper's {limit} positions ({limit * 20} ms)")
        self.chunk_samples = samples
        self.mel_frames = samples // self.logmel.hop
        self.frames_per_chunk = self.mel_frames // 2
        self.context_frames = context
        self.lookahead_chunks = L
        self.silence_frames = S // 20

    def unfreeze_top(self, n: int) -> None:
        """Let the top ``n`` transformer layers and the final layer norm train (the rest keeps requires_grad as set).
        Whisper's dropout is 0, so the eval mode a frozen encoder is kept in changes nothing for them."""
        layers = self.model.layers
        if not 0 < n <= len(layers):
            raise ValueError(f"encoder.unfrozen_top_layers={n}: this Whisper encoder has {len(layers)} layers")
        for m in (*layers[len(layers) - n :], self.model.layer_norm):
            m.requires_grad_(True)

    def save_architecture(self, folder: str | Path) -> None:
        """Write what :func:`build_whisper_encoder` reads (``config.json``, ``preprocessor_config.json``) and the
        licence files the encoder came with into ``folder`` (created); no weights."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.to_json_file(str(folder / "config.json"))
        self.feature_extractor.to_json_file(str(folder / "preprocessor_config.json"))
        for name, text in self.notices.items():
            (folder / name).write_bytes(text)

    @property
    def window_frames(self) -> int:
        """Frames the transformer runs on per chunk: context + the look-ahead chunks' and the chunk's own + silence."""
        return self.context_frames + (self.lookahead_chunks + 1) * self.frames_per_chunk + self.silence_frames

    # -- the convolutions, once per frame ---------------------------------------------------------
    def _conv_front(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, CONV_PAST + n*M, n_mels) -> (exact frames (B, n*F, d), window ends (B, n, 1 + S, d)).

        The exact frames are output frames -1 .. n*F - 2 (0 = the first of these chunks). Chunk c's window end is
        its provisional last frame, c*F + F - 1, then S silence frames: the stock convolutions on the chunk's last
        4 mel frames followed by 2 S + 2 floor-value mel frames (S > 0), or by the convolution's zero padding
        (S = 0: what Whisper's window end sees). For the last chunk the provisional frame is the only value yet.
        """
        conv1, conv2 = self.model.conv1, self.model.conv2
        M, S = self.mel_frames, self.silence_frames
        x = mel.transpose(1, 2)  # (B, n_mels, P + n*M)
        c1 = F.gelu(F.conv1d(F.pad(x, (0, 1)), conv1.weight, conv1.bias))  # centred on mel -3 .. n*M - 1
        out = F.gelu(F.conv1d(c1, conv2.weight, conv2.bias, stride=2))  # frames -1 .. n*F - 1
        last = x[:, :, CONV_PAST + M - 4 :].unfold(2, 4, M)  # (B, n_mels, n, 4): each chunk's last 4 mel frames
        B, n = last.shape[0], last.shape[2]
        last = last.permute(0, 2, 1, 3).flatten(0, 1)  # (B*n, n_mels, 4)
        if S:
            last = torch.cat([last, last.new_full((B * n, last.shape[1], 2 * S + 2), self.logmel.silence)], dim=2)
        e1 = F.gelu(F.conv1d(last, conv1.weight, conv1.bias, padding=1))
        ends = F.gelu(F.conv1d(e1, conv2.weight, conv2.bias, stride=2, padding=1))[:, :, 1 : S + 2]  # (B*n, d, 1 + S)
        return out[:, :, :-1].transpose(1, 2), ends.transpose(1, 2).reshape(B, n, S + 1, -1)

    def _encode(self, wave: torch.Tensor, state: WhisperStreamState) -> tuple[torch.Tensor, WhisperStreamState]:
        """n chunks of every row after ``state`` -> ((B, n*F, d), the state after them). Training and streaming."""
        n = self._check_chunks(wave)
        B, Fc, C, L = wave.shape[0], self.frames_per_chunk, self.context_frames, self.lookahead_chunks
        P, W = C + L * Fc, self.window_frames  # P: window frames before the arriving chunk's; W: P + F + S
        samples = torch.cat([state.tail, wave], dim=1)
        mel = torch.cat([state.mel.to(torch.float32), self.logmel(samples)], dim=1)  # (B, P + n*M, n_mels)
        exact, ends = self._conv_front(mel)
        frames = torch.cat([state.ctx.to(exact.dtype), exact], dim=1)  # frames -P .. n*F - 2 (P >= 1); -1 .. (P = 0)
        if P == 0:
            frames = frames[:, 1:]
        windows = frames.unfold(1, P + Fc - 1, Fc).transpose(2, 3)  # (B, n, P + F - 1, d): up to each chunk's end
        windows = torch.cat([windows, ends.to(windows.dtype)], dim=2).flatten(0, 1)  # (B*n, W, d)
        # a window starts with the stream at the latest: its slots before the stream's first frame are left out
        chunk = state.chunks[:, None] + torch.arange(n, device=wave.device)  # (B, n) index of each chunk in its stream
        before = (P - chunk * Fc).clamp(min=0).flatten()  # (B*n,) slots before the stream
        hidden = windows + self.model.embed_positions.weight[self._positions(chunk.flatten(), before)].to(windows.dtype)
        mask = None
        if int(before.max()) > 0:
            slot = torch.arange(W, device=wave.device)
            mask = torch.zeros(B * n, 1, 1, W, device=wave.device).masked_fill(
                (slot < before[:, None])[:, None, None], torch.finfo(torch.float32).min)
        hidden = F.dropout(hidden, p=self.model.dropout, training=self.training)
        for layer in self.model.layers:
            hidden = layer(hidden, mask)
        out = self.model.layer_norm(hidden)[:, C : C + Fc]  # chunk c - L's frames
        if L:  # output chunks before the stream's first: zeros
            out = torch.where((chunk.flatten() >= L)[:, None, None], out, torch.zeros_like(out))
        out = out.reshape(B, n * Fc, self.dim)
        keep = max(P - 1, 0)
        new = WhisperStreamState(tail=samples[:, -self.logmel.context :], mel=mel[:, -CONV_PAST:],
                                 ctx=frames[:, frames.shape[1] - keep :] if keep else frames[:, :0], chunks=state.chunks + n)
        return out, new

    def _positions(self, chunk: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """Position ids (M, W) of the window slots of chunks ``chunk`` (M,) with ``before`` (M,) slots before the
        stream. ``whisper_positions`` 'window': each frame's place in its window, 0, 1, ... from the window's first
        frame; 'stream': its place in the stream (frame index), less however far the window's end reaches past
        Whisper's last position. Slots before the stream: 0 (masked)."""
        slot = torch.arange(self.window_frames, device=chunk.device)
        if self.cfg.whisper_positions == "window":
            return (slot - before[:, None]).clamp(min=0)
        end = (chunk + 1) * self.frames_per_chunk + self.silence_frames  # the stream frame after each window's last
        first = end - self.window_frames - (end - self.model.config.max_source_positions).clamp(min=0)
        return (first[:, None] + slot).clamp(min=0)

    # -- whole utterances (training) and streaming --------------------------------------------------
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self._encode(wave, self.init_state(wave.shape[0]))[0]

    def init_state(self, batch: int = 1) -> WhisperStreamState:
        """The state before a stream: digital silence (mel frames at the floor) before its first sample; no frames
        of context (a window never reaches before the stream)."""
        p = self.model.layer_norm.weight
        silence = torch.full((batch, CONV_PAST, self.logmel.n_mels), self.logmel.silence, device=p.device)
        return WhisperStreamState(tail=torch.zeros(batch, self.logmel.context, device=p.device, dtype=p.dtype), mel=silence,
                                  ctx=p.new_zeros(batch, max(self.window_frames - self.frames_per_chunk
                                                              - self.silence_frames - 1, 0), self.dim),
                                  chunks=torch.zeros(batch, dtype=torch.long, device=p.device))

    def stream(self, wave: torch.Tensor, state: WhisperStreamState) -> tuple[torch.Tensor, WhisperStreamState]:
        with self._streaming(wave):
            out, state = self._encode(wave, state)
        return self._handed_on(out), state
