"""Group position encoding, the wait-k schedule and the attention masks of every mode: pure functions.

Vocabulary
----------
- **source group**: optional prompt tokens, then audio embeddings (E per chunk). Source index s = 0, 1, …
- **target rows**: decoder inputs [BOS, y_0, …, y_{T-1}]; row i predicts y_i (row T predicts EOS).
- **units done** c_i: target words the prefix y_<i has already *finished*; it depends on the prefix only,
  so training and streaming agree. With an end-of-word tokenizer (BPE ``</w>``) it counts word-final
  tokens, and every token of word j is predicted from a row with c_i = j (exact wait-k). With a
  word-start tokenizer (SentencePiece "▁", byte-level "Ġ") the end of a word is only known when the
  next word starts; we count word-start tokens, so the first token of word j sees exactly k + j chunks
  and its other tokens one chunk more (never less). The transcript's first token always counts as a
  word start (``TextCodec.boundaries``): a byte-level BPE gives the first word no "Ġ".
- **visibility** v_i = min(k + c_i, N): the audio chunks target row i may attend to (wait-k). This one
  function, :func:`visible_chunks`, is used by training layouts and the streaming policy alike.

Modes (the paper's names)
-------------------------
- ``group``: positions source 0..S-1, target φ, φ+1, …; source sees source causally and never the
  target; target row i sees the prompt, chunks < v_i, and target rows ≤ i.
- ``interleaved``: elements in arrival order (chunks as read, row i right after chunk v_i - 1),
  positions 0, 1, 2, … in that order, plain causal mask: later chunks *do* see earlier words.
- ``batch``: positions of a batch model (target starts right after the source: S + i). Trained offline
  (target sees the whole source); streamed with no / position / KV re-encoding (see streaming.session).

Context (prompted hotwords, :mod:`asr_stream.context`): C tokens of a context list, kind ``CONTEXT``, a prefix of
the target group. In every mode a context token sees the context tokens before it and nothing else; every target
row sees all of them; the source (prompt and audio) never sees them, so the source's keys and values do not depend
on the context and the context's do not depend on the audio. Positions (:func:`context_positions`): the C places
just before the target group (group: φ - C .. φ - 1; interleaved: -C .. -1, before the stream's first element;
batch: -C .. -1, before the source, since batch target positions move with the source read). Context slots
"arrive" before the stream starts (arrival numbers -C .. -1), so no other slot's arrival number or position moves.

Every layout is a table of :class:`Elements` (one row per sequence slot); :func:`allowed` turns two
such tables (queries, keys) into a boolean mask using only their attributes, so a streaming step and a
full training forward use literally the same rule. Example: the rows ``BOS a</w> b c</w>`` (a one-token
word, then a two-token word) have units done c = [0, 1, 1, 2], so with k = 1 and N = 3 chunks of E = 1
embedding their visibility is v = min(k + c, N) = [1, 2, 2, 3]. The mask, with positions in brackets
(φ = 0), as ``python -m asr_stream masks --mode group --k 1 --chunks 3 --words "1 2"`` prints it
(tests/equivalence/test_groups.py checks these numbers and this picture against the code)::

                 a0  a1  a2  t0  t1  t2  t3
     a0 (0)       x   .   .   .   .   .   .
     a1 (1)       x   x   .   .   .   .   .
     a2 (2)       x   x   x   .   .   .   .
     t0 (0)       x   .   .   x   .   .   .   v=1
     t1 (1)       x   x   .   x   x   .   .   v=2
     t2 (2)       x   x   .   x   x   x   .   v=2
     t3 (3)       x   x   x   x   x   x   x   v=3
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .config import MODES  # the mode names, written once there

PROMPT, AUDIO, TARGET, PAD, CONTEXT = 0, 1, 2, 3, 4
KIND_NAMES = {PROMPT: "p", AUDIO: "a", TARGET: "t", PAD: "_", CONTEXT: "c"}


def visible_chunks(k: int, units_done: int, n_chunks: int) -> int:
    """Wait-k: audio chunks a target row may see, given target units already finished."""
    if k < 1:
        raise ValueError(f"wait-k needs k >= 1, got {k}")
    return min(k + units_done, n_chunks)


def units_done(boundary: Sequence[bool]) -> list[int]:
    """Per target row i (0 = BOS), the number of boundary tokens among y_<i. Length len(boundary) + 1."""
    out, c = [0], 0
    for b in boundary:
        c += int(bool(b))
        out.append(c)
    return out


@dataclass
class Elements:
    """One row per sequence slot. All fields are 1-D tensors of equal length."""

    kind: torch.Tensor  # PROMPT / AUDIO / TARGET / PAD / CONTEXT
    index: torch.Tensor  # index within its kind: prompt token p, audio embedding e, target row i, context token c
    src: torch.Tensor  # source index (prompt p, audio P + e); -1 for target/pad
    chunk: torch.Tensor  # audio: its chunk; target: visible chunks v_i; else -1
    arrival: torch.Tensor  # order in which the element entered the stream
    position: torch.Tensor  # float position id fed to RoPE

    def __len__(self) -> int:
        return self.kind.shape[0]

    @staticmethod
    def cat(parts: Sequence["Elements"]) -> "Elements":
        return Elements(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Elements)))

    def take(self, idx: torch.Tensor) -> "Elements":
        return Elements(*(getattr(self, f.name)[idx] for f in fields(Elements)))

    @staticmethod
    def make(kind, index, src, chunk, arrival, position) -> "Elements":
        as_long = lambda v: torch.as_tensor(v, dtype=torch.long).reshape(-1)  # noqa: E731
        return Elements(as_long(kind), as_long(index), as_long(src), as_long(chunk), as_long(arrival),
                        torch.as_tensor(position, dtype=torch.float64).reshape(-1))


def source_elements(P: int, audio_chunks: Sequence[int], first_audio: int = 0, arrival0: int = 0,
                    prompt: bool = False) -> Elements:
    """Source slots: either P prompt tokens (prompt=True) or audio embeddings with the given chunk ids."""
    n = P if prompt else len(audio_chunks)
    idx = torch.arange(n) if prompt else torch.arange(first_audio, first_audio + n)
    src = idx if prompt else idx + P
    return Elements.make(
        torch.full((n,), PROMPT if prompt else AUDIO), idx, src,
        torch.full((n,), -1) if prompt else torch.as_tensor(audio_chunks, dtype=torch.long),
        torch.arange(arrival0, arrival0 + n), src.double(),
    )


def target_elements(rows: Sequence[int], vis: Sequence[int], positions: Sequence[float], arrivals: Sequence[int]) -> Elements:
    n = len(rows)
    return Elements.make(torch.full((n,), TARGET), list(rows), torch.full((n,), -1), list(vis), list(arrivals), list(positions))


def context_positions(mode: str, C: int, phi: float = 0.0) -> list[float]:
    """Positions of C context tokens: the C places before the target group (group: φ - C + c), or before the stream
    (interleaved, batch: c - C). Negative positions are fine: RoPE rotates by any real position, and attention
    depends on position differences only."""
    start = phi - C if mode == "group" else -float(C)
    return [start + c for c in range(C)]


def context_elements(mode: str, C: int, phi: float = 0.0) -> Elements:
    """The slots of C context tokens (index c, arrival c - C: before every stream slot, at :func:`context_positions`)."""
    return Elements.make(torch.full((C,), CONTEXT), torch.arange(C), torch.full((C,), -1), torch.full((C,), -1),
                         torch.arange(-C, 0), context_positions(mode, C, phi))


def allowed(mode: str, q: Elements, k: Elements) -> torch.Tensor:
    """Boolean (Lq, Lk): may query slot q attend to key slot k? Pads see only themselves; a context token sees the
    context tokens up to itself only; the source never sees the context; target rows see all of it."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
    qk, kk = q.kind[:, None], k.kind[None, :]
    ctx_q, ctx_k = qk == CONTEXT, kk == CONTEXT
    ctx_rule = ctx_k & (k.index[None, :] <= q.index[:, None])
    if mode == "interleaved":
        ok = k.arrival[None, :] <= q.arrival[:, None]
        ok &= (kk != PAD) & (qk != PAD) & ~(ctx_k & ((qk == PROMPT) | (qk == AUDIO)))
        ok = torch.where(ctx_q, ctx_rule, ok)
    else:  # group and batch share the attention rule; they differ in positions and training visibility
        src_q = (qk == PROMPT) | (qk == AUDIO)
        src_k = (kk == PROMPT) | (kk == AUDIO)
        src_rule = src_k & (k.src[None, :] <= q.src[:, None])
        tgt_rule = (kk == PROMPT) | ctx_k | ((kk == AUDIO) & (k.chunk[None, :] < q.chunk[:, None])) | (
            (kk == TARGET) & (k.index[None, :] <= q.index[:, None])
        )
        ok = torch.where(src_q, src_rule, torch.where(ctx_q, ctx_rule, (qk == TARGET) & tgt_rule))
    same = (qk == PAD) & (kk == PAD) & (q.arrival[:, None] == k.arrival[None, :])
    return ok | same


def additive_mask(ok: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bool allowed-mask -> additive float mask (0 where allowed, dtype min elsewhere).

    The minimum finite value (not -inf) keeps fully masked rows finite in SDPA.
    """
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, torch.finfo(dtype).min)


def training_layout(mode: str, P: int, N: int, E: int, units: Sequence[int], k: int | None, phi: float = 0.0,
                    vis: Sequence[int] | None = None, C: int = 0) -> Elements:
    """The full-utterance layout a mode trains with.

    P prompt tokens, N chunks of E embeddings, target rows i = 0..T with units done ``units[i]``.
    group / interleaved use wait-k visibility; batch is offline (every row sees all N chunks) unless a
    k is given. Slots come in sequence order; ``arrival`` is the streaming order of each element.

    ``vis``: an explicit schedule instead of wait-k: the chunks row i sees (1 <= vis[i] <= N, never
    decreasing), e.g. the visibilities an adaptive read/write policy gave a stream (its
    ``state.elements.chunk`` of the target rows) or per-word visibilities from an alignment; ``k`` is then unused.

    ``C``: context tokens (:func:`context_elements`), first in sequence order; they arrived before the stream.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
    n_rows = len(units)
    if vis is not None:
        vis = [int(v) for v in vis]
        if len(vis) != n_rows:
            raise ValueError(f"vis has {len(vis)} entries for {n_rows} target rows")
        if any(not 1 <= v <= N for v in vis) or any(b < a for a, b in zip(vis, vis[1:])):
            raise ValueError(f"vis must be non-decreasing within 1..{N} chunks, got {vis}")
    else:
        vis = [N if (mode == "batch" and k is None) else visible_chunks(k, c, N) for c in units]  # type: ignore[arg-type]
    audio_chunks = [c for c in range(N) for _ in range(E)]
    # Arrival order: prompt, then for each chunk c: the target rows whose visibility is c, then chunk c.
    # Sort key (time, rank, index, kind): rows (rank 0) come before the chunk (rank 1) they wait for.
    order = [(-1, 0, p, PROMPT) for p in range(P)]
    order += [(c, 1, e, AUDIO) for e, c in enumerate(audio_chunks)]
    order += [(v, 0, i, TARGET) for i, v in enumerate(vis)]
    order.sort()
    arrival = {(kind, idx): a for a, (_, _, idx, kind) in enumerate(order)}
    prompt = source_elements(P, [], prompt=True)
    audio = source_elements(P, audio_chunks)
    prompt.arrival = torch.tensor([arrival[(PROMPT, p)] for p in range(P)], dtype=torch.long)
    audio.arrival = torch.tensor([arrival[(AUDIO, e)] for e in range(len(audio_chunks))], dtype=torch.long)
    S = P + N * E
    if mode == "group":
        pos = [phi + i for i in range(n_rows)]
    elif mode == "batch":
        pos = [S + i for i in range(n_rows)]
    else:
        pos = [0.0] * n_rows  # set below
    tgt = target_elements(range(n_rows), vis, pos, [arrival[(TARGET, i)] for i in range(n_rows)])
    els = Elements.cat([prompt, context_elements(mode, C, phi), audio, tgt])
    if mode == "interleaved":  # sequence order = arrival order, positions = arrival index
        els = els.take(torch.argsort(els.arrival))
        els.position = els.arrival.double()
    return els


def pad_elements(els: Elements, length: int) -> Elements:
    n = length - len(els)
    if n <= 0:
        return els
    start = int(els.arrival.max().item()) + 1 if len(els) else 0
    pad = Elements.make(torch.full((n,), PAD), torch.arange(n), torch.full((n,), -1), torch.full((n,), -1),
                        torch.arange(start, start + n), torch.zeros(n))
    return Elements.cat([els, pad])


def render(mode: str, els: Elements, k: Elements | None = None) -> str:
    """Text picture of the mask of ``els`` (queries) against ``k`` (keys, default the same): x = attends."""
    keys = els if k is None else k
    ok = allowed(mode, els, keys)
    name = lambda e, j: f"{KIND_NAMES[int(e.kind[j])]}{int(e.index[j])}"  # noqa: E731
    head = " " * 12 + " ".join(f"{name(keys, j):>3}" for j in range(len(keys)))
    lines = [head]
    for i in range(len(els)):
        pos = float(els.position[i])
        label = f"{name(els, i):>3} ({pos:g})"
        extra = f"   v={int(els.chunk[i])}" if int(els.kind[i]) == TARGET else ""
        lines.append(f"{label:<11} " + " ".join(f"{'x' if ok[i, j] else '.':>3}" for j in range(len(keys))) + extra)
    return "\n".join(lines)
