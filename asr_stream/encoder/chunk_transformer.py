"""Our own streaming encoder: log-mel -> per-chunk conv subsampling (x4) -> chunk-causal transformer.

Chunk-causality: a frame of chunk c attends to every frame of chunks max(0, c - left_chunks) .. c
(full attention inside its chunk, nothing after it). Subsampling is done inside each chunk, and the
log-mel frames are framed causally (frame t ends at sample (t + 1) * hop), so a chunk's output depends
only on its own audio and the past. The streaming path carries each layer's keys/values (after RoPE)
and the last ``win - hop`` samples; the test suite checks it equals the full masked forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.features import LogMel, spec_augment
from ..audio.io import SAMPLES_PER_MS
from ..config import EncoderConfig
from ..kv import append_kv
from .base import ChunkEncoder, chunk_samples_for

SUBSAMPLE = 4  # two stride-2 convolutions


def rope_angles(pos: torch.Tensor, dim: int, dtype: torch.dtype, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (L, dim/2) for float positions pos: (L,); computed once per call, shared by all layers."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim))
    ang = pos.to(torch.float32)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on (B, H, L, D) with angles from :func:`rope_angles`."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Layer(nn.Module):
    """Pre-LN transformer layer with rotary self-attention."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,  # (B, L, d)
        angles: tuple[torch.Tensor, torch.Tensor],  # rope_angles of x's absolute frame positions
        mask: torch.Tensor,  # (L, Lpast + L) additive float mask
        past: tuple[torch.Tensor, torch.Tensor] | None,
        bufs: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rope(q, *angles), rope(k, *angles)
        kb, vb = k, v
        if past is not None:
            (k, kb), (v, vb) = append_kv(past[0], k, bufs[0]), append_kv(past[1], v, bufs[1])
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, d)))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x, (k, v), (kb, vb)


def chunk_causal_mask(n_q: int, q_chunk0: int, n_past: int, frames: int, left_chunks: int, device=None) -> torch.Tensor:
    """Additive mask (n_q, n_past + n_q) for queries starting at chunk q_chunk0, keys starting n_past frames earlier.

    Example, 2 frames per chunk, 3 chunks, all left context (0 = attend, - = masked)::

        0 0 - - - -
        0 0 - - - -
        0 0 0 0 - -
        0 0 0 0 - -
        0 0 0 0 0 0
        0 0 0 0 0 0
    """
    q_chunk = q_chunk0 + torch.arange(n_q, device=device) // frames
    k_first = q_chunk0 * frames - n_past
    k_chunk = torch.div(k_first + torch.arange(n_past + n_q, device=device), frames, rounding_mode="floor")
    ok = k_chunk[None, :] <= q_chunk[:, None]
    if left_chunks >= 0:
        ok &= k_chunk[None, :] >= q_chunk[:, None] - left_chunks
    return torch.zeros(ok.shape, device=device).masked_fill(~ok, torch.finfo(torch.float32).min)


@dataclass
class EncoderStreamState:
    """Per-stream cache of the chunk transformer."""

    tail: torch.Tensor  # (B, win - hop) last samples read, for the first frame of the next chunk
    chunks: int = 0  # chunks encoded so far
    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per layer (B, H, Lkept, Dh)
    bufs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, metadata={"scratch": True})
    """Storage behind ``kv`` with spare room (see :func:`append_kv`); code that stacks or slices states drops it."""


class ChunkTransformerEncoder(ChunkEncoder):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.logmel = LogMel(cfg.features)
        # Global mean/variance normalisation of log-mel; set from data by the training recipe.
        self.register_buffer("feat_mean", torch.zeros(cfg.features.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.features.n_mels))
        d, c = cfg.d_model, cfg.conv_channels or cfg.d_model
        self.conv = nn.Sequential(nn.Conv2d(1, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        freq_out = -(-(-(-cfg.features.n_mels // 2)) // 2)  # ceil(ceil(n_mels/2)/2)
        self.conv_out = nn.Linear(c * freq_out, d)
        self.layers = nn.ModuleList(Layer(d, cfg.n_heads, cfg.ff_mult * d, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        self.dim = d
        self.set_chunk_ms(cfg.chunk_ms)

    def set_chunk_ms(self, chunk_ms: int) -> None:
        """Change the chunk length (the mask follows; weights are unchanged)."""
        self.chunk_samples = chunk_samples_for(chunk_ms)
        mel_frames = self.chunk_samples // self.logmel.hop
        if mel_frames * self.logmel.hop != self.chunk_samples or mel_frames % SUBSAMPLE:
            raise ValueError(f"chunk_ms={chunk_ms} must be a multiple of {SUBSAMPLE} hops "
                             f"({SUBSAMPLE * self.logmel.hop / SAMPLES_PER_MS} ms)")
        self.mel_frames = mel_frames
        self.frames_per_chunk = mel_frames // SUBSAMPLE

    # -- shared pieces -------------------------------------------------------------------------
    def _front(self, wave: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """(B, n*chunk_samples) + (B, ctx) past samples -> (B, n*frames_per_chunk, d) subsampled chunks."""
        feats = self.logmel(torch.cat([ctx, wave], dim=1))  # (B, n*mel_frames, n_mels)
        feats = (feats - self.feat_mean) / self.feat_std
        if self.training and self.cfg.spec_augment:
            feats = spec_augment(feats)
        B, T, M = feats.shape
        n = T // self.mel_frames
        x = self.conv(feats.reshape(B * n, 1, self.mel_frames, M))  # (B*n, C, mel/4, M/4)
        x = self.conv_out(x.permute(0, 2, 1, 3).flatten(2))  # (B*n, frames_per_chunk, d)
        return x.reshape(B, n * self.frames_per_chunk, self.dim)

    def _layers(self, x: torch.Tensor, chunk0: int, past: list | None, bufs: list | None = None) -> tuple[torch.Tensor, list, list]:
        fpc = self.frames_per_chunk
        n_past = past[0][0].shape[2] if past else 0
        pos = torch.arange(chunk0 * fpc, chunk0 * fpc + x.shape[1], device=x.device)
        angles = rope_angles(pos, self.dim // self.cfg.n_heads, x.dtype)
        mask = chunk_causal_mask(x.shape[1], chunk0, n_past, fpc, self.cfg.left_chunks, x.device).to(x.dtype)
        kv, new_bufs = [], []
        for i, layer in enumerate(self.layers):
            x, kv_i, buf_i = layer(x, angles, mask, past[i] if past else None, bufs[i] if bufs else (None, None))
            kv.append(kv_i)
            new_bufs.append(buf_i)
        return self.norm(x), kv, new_bufs

    # -- whole utterances (training) -----------------------------------------------------------
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        self._check_chunks(wave)
        ctx = wave.new_zeros(wave.shape[0], self.logmel.context)
        out, _, _ = self._layers(self._front(wave, ctx), 0, None)
        return out

    # -- streaming -----------------------------------------------------------------------------
    def init_state(self, batch: int = 1) -> EncoderStreamState:
        p = self.norm.weight
        return EncoderStreamState(tail=torch.zeros(batch, self.logmel.context, device=p.device, dtype=p.dtype))

    def stream(self, wave: torch.Tensor, state: EncoderStreamState) -> tuple[torch.Tensor, EncoderStreamState]:
        with self._streaming(wave):
            out, state = self._stream(wave, state)
        return self._handed_on(out), state

    def _stream(self, wave: torch.Tensor, state: EncoderStreamState) -> tuple[torch.Tensor, EncoderStreamState]:
        n = self._check_chunks(wave)
        x = self._front(wave, state.tail)
        out, kv, bufs = self._layers(x, state.chunks, state.kv or None, state.bufs or None)
        if self.cfg.left_chunks >= 0:  # keep only what the next chunk may attend to
            keep = self.cfg.left_chunks * self.frames_per_chunk
            kv = [(k[:, :, -keep:] if keep else k[:, :, :0], v[:, :, -keep:] if keep else v[:, :, :0]) for k, v in kv]
        tail = torch.cat([state.tail, wave], dim=1)[:, -self.logmel.context :]
        return out, EncoderStreamState(tail=tail, chunks=state.chunks + n, kv=kv, bufs=bufs)

    def stream_many(self, wave: torch.Tensor, states: list[EncoderStreamState]) -> tuple[torch.Tensor, list[EncoderStreamState]]:
        """:meth:`stream` for B independent streams at once, whatever their chunk counts and cached lengths.

        ``wave`` (B, n * chunk_samples), ``states``: one batch-1 state per row. Each row's cached keys are
        left-padded to the longest and the padding is masked; positions (RoPE) and the chunk-causal mask are per
        row. Equal to B separate :meth:`stream` calls up to the float rounding of batched matmuls (tested). This
        is what lets a server encode every client's next chunk in one call, not one call per group of clients
        that happen to be at the same point of their segments.
        """
        with self._streaming(wave):
            out, states = self._stream_many(wave, states)
        return self._handed_on(out), states

    def _stream_many(self, wave: torch.Tensor, states: list[EncoderStreamState]) -> tuple[torch.Tensor, list[EncoderStreamState]]:
        n = self._check_chunks(wave)
        B, fpc = wave.shape[0], self.frames_per_chunk
        if len(states) != B:
            raise ValueError(f"stream_many: {B} rows of audio but {len(states)} states")
        tails = torch.cat([st.tail for st in states])
        x = self._front(wave, tails)
        L = x.shape[1]
        lens = [st.kv[0][0].shape[2] if st.kv else 0 for st in states]
        P = max(lens)
        pos = torch.stack([torch.arange(st.chunks * fpc, st.chunks * fpc + L, device=x.device) for st in states])
        cos, sin = rope_angles(pos.flatten(), self.dim // self.cfg.n_heads, x.dtype)
        angles = (cos.view(B, 1, L, -1), sin.view(B, 1, L, -1))  # broadcast over heads
        neg = torch.finfo(torch.float32).min
        mask = torch.full((B, 1, L, P + L), neg, device=x.device)
        for b, st in enumerate(states):
            mask[b, 0, :, P - lens[b] :] = chunk_causal_mask(L, st.chunks, lens[b], fpc, self.cfg.left_chunks, x.device)
        mask = mask.to(x.dtype)
        past = None
        if P:
            past = []
            for i in range(len(self.layers)):
                k0 = next(st.kv[i][0] for st in states if st.kv)
                # storage with room for this call's L frames, so the layer's append copies nothing
                kb, vb = k0.new_empty(B, k0.shape[1], P + L, k0.shape[3]), k0.new_empty(B, k0.shape[1], P + L, k0.shape[3])
                for b, st in enumerate(states):
                    if lens[b] < P:  # masked, but zeroed: garbage could hold NaN, and 0 * NaN is NaN
                        kb[b, :, : P - lens[b]], vb[b, :, : P - lens[b]] = 0.0, 0.0
                    if lens[b]:
                        kb[b, :, P - lens[b] : P], vb[b, :, P - lens[b] : P] = st.kv[i][0][0], st.kv[i][1][0]
                past.append(((kb[:, :, :P], vb[:, :, :P]), (kb, vb)))
        kv = []
        for i, layer in enumerate(self.layers):
            x, kv_i, _ = layer(x, angles, mask, past[i][0] if past else None, past[i][1] if past else (None, None))
            kv.append(kv_i)
        out = self.norm(x)
        keep = self.cfg.left_chunks * fpc if self.cfg.left_chunks >= 0 else None
        tails = torch.cat([tails, wave], dim=1)[:, -self.logmel.context :]
        new = []
        for b, st in enumerate(states):
            rows = []
            for k, v in kv:  # row b without its padding, then only what the next chunk may attend to
                k, v = k[b : b + 1, :, P - lens[b] :], v[b : b + 1, :, P - lens[b] :]
                if keep is not None:
                    k, v = (k[:, :, -keep:], v[:, :, -keep:]) if keep else (k[:, :, :0], v[:, :, :0])
                rows.append((k.contiguous(), v.contiguous()))
            new.append(EncoderStreamState(tail=tails[b : b + 1], chunks=st.chunks + n, kv=rows))
        return out, new
