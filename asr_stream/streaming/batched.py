"""Many independent streams, one batched decoder forward per step.

A serving engine holds ``n`` slots. Each slot is a :class:`~asr_stream.streaming.session.StreamingSession`
(its own audio buffer, encoder state, ``Elements`` table, positions, wait-k counters, teacher forcing and
words): all per-stream logic is the session's own, and the engine drives each session through its public step
protocol (``begin``, ``feed``, ``close``, ``next_step``, ``append_columns``, ``complete``, ...; see
:class:`~asr_stream.streaming.session.StreamingSession`), writing nothing of a session's state itself. Only the
decoder call is shared. At each :meth:`BatchedStreams.step` every stream stages at most one call
(``StreamingSession.next_step``: a chunk's E audio slots, one target row, or both fused), the calls are padded to
the same width with PAD slots and run as ONE forward over one ``DynamicCache`` of batch size B (the streams attached
now).

Why PADs are harmless: :func:`asr_stream.groups.allowed` lets a PAD query see only itself and hides PAD
keys from every other query, so each stream computes what it computes alone (up to float rounding of
batched matmuls). Each stream's ``state.elements`` therefore has one row per cache column: its own slots
and PAD rows where other streams appended. Its positions are its own (group: source 0.., target φ + i;
interleaved: its own arrival count — PADs take negative arrival numbers and no position).

Typical serving loop (one engine thread; network threads only queue audio)::

    engine = BatchedStreams(model, n=16, cfg=StreamConfig(mode="group", k=3))
    while True:
        for slot, samples in incoming():          # whatever arrived since the last round
            engine.feed(slot, samples)            # buffers only: no compute
        for slot in ended_connections():
            engine.end(slot)                      # no more audio: the tail is read, remaining words written
        engine.drain()                            # batched steps until every stream waits for audio
        for slot in active_slots():
            send(slot, engine.poll(slot))         # words not yet returned for that slot
        for slot in done_slots():                 # engine.done(slot): all words written
            engine.reset(slot)                    # reuse the slot for the next connection

Offline throughput: ``BatchedStreams.run(model, waves, cfg)`` returns the words of every wave.

Costs and limits:
- A stream that is done (all audio read and EOS / the length guard reached) leaves the batch: its cache
  row is dropped, and cache columns that are PAD for every remaining stream are dropped too. A stream
  that only waits for audio stays in the batch, but a step computes only the rows with work (the others'
  cache rows are left out of the forward; their new columns are zero PADs): most steps of a server are one
  or two streams writing the next tokens of a word while the rest wait for audio.
- The cache is as long as the union of the attached streams' slots plus PADs; with streams in lockstep
  (every stream has audio) PADs are a few percent (a token-only step of one stream next to chunk
  steps of the others), with streams that started far apart they can be more.
- ``reencode`` must be ``none`` (re-encoding baselines rebuild one stream's cache; they stay per stream).
- Encoders are batched too, and run ahead of the decoder: at each step every stream's next buffered
  chunk is encoded in one call when the encoder has ``stream_many`` (the chunk transformer: per-row
  positions, cached keys left-padded and masked), else one call per group of streams whose encoder
  states match (same chunk count and cached lengths; states stacked along the batch dimension, the
  ``ChunkEncoder`` contract: ``init_state(batch)``, batch-first tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any

import numpy as np
import torch

from .. import decoder as dec
from ..config import StreamConfig
from ..groups import PAD, Elements, additive_mask, allowed
from .defaults import with_k
from .session import Step, StreamingSession, Word


class BatchedStreams:
    """``n`` independent streams whose decoder steps run as one batched forward (see the module doc)."""

    def __init__(self, model, n: int, cfg: StreamConfig | None = None, **overrides) -> None:
        if n < 1:
            raise ValueError(f"need at least one stream, got n={n}")
        self.model = model.eval()
        self.sessions = [StreamingSession(model, cfg, **overrides) for _ in range(n)]
        self.cfg = self.sessions[0].cfg
        if self.cfg.reencode != "none":
            raise ValueError(f"BatchedStreams needs reencode='none' (got {self.cfg.reencode!r}): re-encoding rebuilds a stream's own cache")
        self.cache = dec.new_cache(model.llm)
        self.length = 0  # cache columns (every attached stream's table has this many rows)
        self.slot_at: list[int | None] = []  # the slot of each cache batch row (None: a free row, reused first)
        self.steps = 0  # batched decoder forwards run
        self.encoder_calls = 0  # encoder calls run
        self.encoder_streams = 0  # chunks encoded by them (/ encoder_calls = mean encoder batch)
        self.pad_positions = 0  # PAD slots computed (cost of batching)
        self._pending: dict[int, Step] = {}  # a staged step not yet run (the prompt of a fresh stream)
        self._pads = [0] * n  # PAD slots ever given to each slot: their (negative) arrival numbers
        self._owed = [0] * n  # PAD columns not yet appended to each slot's table (see _sync)
        self._idle: dict[int, tuple] = {}  # slots whose last next_step was None, with what would change that
        self._returned = [0] * n  # words of each slot already returned by push / finish / poll
        for i in range(n):
            self.reset(i)

    @property
    def attached(self) -> list[int]:
        """The slots in the batch, in cache row order."""
        return [i for i in self.slot_at if i is not None]

    # -- per-stream API ---------------------------------------------------------------------------
    def feed(self, i: int, samples: np.ndarray | torch.Tensor) -> None:
        """Queue 16 kHz mono float32 samples for stream ``i`` (no compute)."""
        self.sessions[i].feed(samples)

    def end(self, i: int) -> None:
        """No more audio for stream ``i``: the next steps read its zero-padded tail and write its last words."""
        self.sessions[i].close()

    def poll(self, i: int) -> list[Word]:
        """Words of stream ``i`` emitted since the last push / finish / poll of ``i``."""
        words = self.sessions[i].words
        new, self._returned[i] = words[self._returned[i] :], len(words)
        return new

    def push(self, i: int, samples: np.ndarray | torch.Tensor) -> list[Word]:
        """Feed stream ``i`` and step every stream until all wait; returns stream ``i``'s new words.

        The other streams advance too (their words come with their own next push / finish / poll).
        """
        self.feed(i, samples)
        self.drain()
        return self.poll(i)

    def finish(self, i: int) -> list[Word]:
        """End stream ``i``, step until all wait; returns its remaining words (the last one flushed)."""
        self.end(i)
        self.drain()
        if self.done(i):
            self.sessions[i].flush_word()
        return self.poll(i)

    def done(self, i: int) -> bool:
        """Stream ``i`` has read all its audio and will write nothing more."""
        s = self.sessions[i].state
        return s.finished and s.ended and i not in self._pending

    def reset(self, i: int, k: int | None = None, context: Sequence[str] | None = None) -> None:
        """Start a new utterance in slot ``i`` (its ``words`` are kept, as in ``StreamingSession.reset``).

        ``k``: wait-k for this slot from now on (a server's client may ask for its own; the mode and φ are the
        engine's). None keeps the slot's k. ``context``: this slot's context list from now on (() for none; a
        server's client sends its own); None keeps the slot's. A context the model cannot read is a ValueError.
        """
        sess = self.sessions[i]
        cfg = sess.cfg
        if k is not None:
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            cfg = with_k(replace(self.cfg, context=cfg.context), k)  # an adaptive policy's k_min never above the new k_max
        if context is not None:
            cfg = replace(cfg, context=tuple(context))
            if context:
                from ..context import check_context_length

                check_context_length(self.model.cfg, 1 if self.model.cfg.context_max_tokens == 0 else 0)
        if cfg is not sess.cfg:
            old, sess.cfg = sess.cfg, cfg
            try:
                sess.context_ids  # checked before the slot changes
            except ValueError:
                sess.cfg = old
                raise
        if i in self.attached:
            self._detach(i)
        step = sess.begin(own_cache=False)  # the stream lives in self.cache
        self._pending.pop(i, None)
        self._attach(i)
        if step is not None:
            self._pending[i] = step

    def release(self, i: int) -> None:
        """Slot ``i`` leaves the batch until its next :meth:`reset` (a server's free slot: it costs nothing, not even
        PAD queries). Words not yet polled are dropped."""
        if i in self.attached:
            self._detach(i)
        self._pending.pop(i, None)
        self.sessions[i].abandon()  # done(i): nothing to read or write
        self._returned[i] = len(self.sessions[i].words)

    # -- stepping ---------------------------------------------------------------------------------
    def step(self) -> bool:
        """One batched decoder forward over every stream with work. False when all wait (or are done)."""
        with torch.inference_mode():
            self._encode_ahead()
            plans: dict[int, Step] = {}
            waiting = []
            for i in self.attached:
                s = self.sessions[i].state
                mark = self._idle.get(i)
                if mark is not None and mark[0] is s and mark[1] == s.buffer.shape[0] and mark[2] == s.closing:
                    continue  # nothing it waits for has changed since it last had no work
                st = self._pending.pop(i, None) or self.sessions[i].next_step()
                if st is not None:
                    plans[i] = st
                    self._idle.pop(i, None)
                else:
                    waiting.append(i)
                    self._idle[i] = (s, s.buffer.shape[0], s.closing)
            for i in [i for i in waiting if self.done(i)]:
                self.sessions[i].flush_word()
                self._detach(i)
            if not plans:
                return False
            self._forward(plans)
            return True

    def drain(self) -> int:
        """Step until every stream waits for audio or is done. Returns the number of steps run."""
        n = 0
        while self.step():
            n += 1
        return n

    @classmethod
    def run(cls, model, waves: Sequence[np.ndarray], cfg: StreamConfig | None = None,
            forced: Sequence[Sequence[int]] | None = None, **overrides) -> list[list[Word]]:
        """Offline throughput: transcribe whole waves as concurrent streams; words per wave.

        ``forced``: teacher forcing per wave (token ids; EOS is appended), as ``StreamingSession.teacher_force``.
        """
        eng = cls(model, len(waves), cfg, **overrides)
        for i, w in enumerate(waves):
            if forced is not None:
                eng.sessions[i].teacher_force(forced[i], record_logits=False)
            eng.feed(i, w)
            eng.end(i)
        eng.drain()
        return [eng.finish(i) for i in range(len(waves))]

    # -- the batched forward ---------------------------------------------------------------------
    def _sync(self, i: int) -> None:
        """Append the PAD rows owed to slot ``i``'s table: after it, the table has one row per cache column.

        Waiting rows get their PAD columns lazily (one append when the stream next steps, not one per step it
        waited): the rows and their arrival numbers are the same either way."""
        if self._owed[i]:
            self.sessions[i].append_columns(self._pad_elements(i, self._owed[i]), 0)
            self._owed[i] = 0

    def _pad_elements(self, i: int, n: int) -> Elements:
        a0 = self._pads[i]
        self._pads[i] += n
        return Elements.make([PAD] * n, list(range(n)), [-1] * n, [-1] * n, list(range(-a0 - 1, -a0 - 1 - n, -1)), [0.0] * n)

    def _forward(self, plans: dict[int, Step]) -> None:
        """One decoder forward for the streams in ``plans``; every attached stream gets the step's columns.

        Only the rows with work are computed: when some streams wait, their cache rows are left out of the
        forward (gathered rows in a temporary cache) and their new columns are PAD, whose keys and values
        nothing ever sees (:func:`~asr_stream.groups.allowed`), so they are stored as zeros. A stream's
        results do not depend on which others stepped with it (up to batched-matmul rounding).
        """
        m = self.model
        Q = max(len(st.new) for st in plans.values())
        B, K = len(self.slot_at), self.length + Q
        rows = [r for r, i in enumerate(self.slot_at) if i in plans]
        b = len(rows)
        H = next(iter(plans.values())).embeds.shape[-1]
        dtype = next(iter(plans.values())).embeds.dtype
        x = torch.zeros(b, Q, H, dtype=dtype, device=m.device)
        mask = torch.empty(b, Q, K, dtype=dtype)
        pos = torch.zeros(b, Q, dtype=torch.float64)
        j = 0
        for i in self.attached:
            st = plans.get(i)
            if st is None:  # a waiting row: Q PAD columns, appended to its table when it is next read
                self._owed[i] += Q
                continue
            self._sync(i)
            q = len(st.new)
            new = st.new if q == Q else Elements.cat([st.new, self._pad_elements(i, Q - q)])
            keys = self.sessions[i].append_columns(new, q)  # the stream's table, with this step's columns
            mask[j] = additive_mask(allowed(self.cfg.mode, new, keys), dtype)
            pos[j] = new.position
            x[j, :q] = st.embeds
            self.pad_positions += Q - q  # waiting rows are not computed (see _forward_rows)
            j += 1
        if b == B:
            logits = dec.run(m.llm, x, mask.to(m.device), pos.to(m.device), self.cache)
        else:
            logits = self._forward_rows(rows, x, mask, pos, Q)
        self.length += Q
        self.steps += 1
        j = 0
        for i in self.attached:
            st = plans.get(i)
            if st is not None:
                self.sessions[i].complete(st, logits[j, : len(st.new)])
                j += 1

    def _forward_rows(self, rows: list[int], x, mask, pos, Q: int) -> torch.Tensor:
        """The forward of cache rows ``rows`` only; the other rows get ``Q`` zero (PAD) columns."""
        m = self.model
        layers = self.cache.layers
        idx = torch.tensor(rows, device=m.device)
        sub = dec.new_cache(m.llm)
        for ly, full in zip(sub.layers, layers):
            if getattr(full, "keys", None) is not None and full.keys.numel():
                ly.lazy_initialization(full.keys, full.values)
                n, (_, h, k, d) = len(rows), full.keys.shape
                # gathered into storage with room for the step's Q columns: the append below copies nothing more
                ly._kbuf, ly._vbuf = full.keys.new_empty(n, h, k + Q, d), full.values.new_empty(n, h, k + Q, d)
                ly.keys, ly.values = ly._kbuf[:, :, :k], ly._vbuf[:, :, :k]
                torch.index_select(full.keys, 0, idx, out=ly.keys)
                torch.index_select(full.values, 0, idx, out=ly.values)
        logits = dec.run(m.llm, x, mask.to(m.device), pos.to(m.device), sub)
        for ly, full in zip(sub.layers, layers):
            k_new, v_new = ly.keys[:, :, -Q:], ly.values[:, :, -Q:]
            zk = k_new.new_zeros(len(self.slot_at), *k_new.shape[1:])
            full.update(zk, zk.clone())
            full.keys[idx, :, -Q:] = k_new
            full.values[idx, :, -Q:] = v_new
        return logits

    def _encode_ahead(self) -> None:
        """Encode the next buffered chunk of every stream in one encoder call.

        An encoder with ``stream_many`` (the chunk transformer) takes every stream at once, whatever the point
        of its segment (cached keys are padded and masked per row). Other encoders get one call per group of
        streams whose states match (same chunk count and cached lengths: streams fed in rounds from a common
        start). A chunk's encoder output depends on the audio only, so encoding it before the session reads it
        changes nothing but the batching.
        """
        m = self.model
        many = getattr(m.encoder, "stream_many", None)
        groups: dict[Any, list[tuple[int, np.ndarray]]] = {}
        for i in self.attached:
            chunk = self.sessions[i].chunk_to_encode()
            if chunk is not None:
                key = "all" if many is not None else _signature(self.sessions[i].state.enc)
                groups.setdefault(key, []).append((i, chunk))
        for members in groups.values():
            states = [self.sessions[i].state.enc for i, _ in members]
            wave = torch.from_numpy(np.stack([c for _, c in members])).to(m.device)
            if len(members) == 1:
                out, st = m.encoder.stream(wave, states[0])
                new_states = [st]
            elif many is not None:
                out, new_states = many(wave, states)
            else:
                out, st = m.encoder.stream(wave, _stack(states))
                new_states = [_row(st, b) for b in range(len(members))]
            emb = m.project(out)
            mass: list[float | None] = [None] * len(members)
            last: list[Any] = [None] * len(members)  # the ctc policy's last-frame posteriors
            ids = m.ctc_tokens(out).tolist() if self.sessions[members[0][0]].tracks_words else [None] * len(members)
            if self.sessions[members[0][0]].policy.needs_ctc:  # the ctc policy's evidence, carried frame to frame
                first = [self.sessions[i].state.ctc_last is None for i, _ in members]
                for fresh in (True, False):  # a stream's first chunk has no previous frame
                    rows = [b for b in range(len(members)) if first[b] == fresh]
                    if not rows:
                        continue
                    prev = None if fresh else torch.cat([self.sessions[members[b][0]].state.ctc_last for b in rows])
                    onsets, ends = m.boundary_onsets(out[rows], prev)
                    for r, b in enumerate(rows):
                        mass[b], last[b] = float(onsets[r]), ends[r : r + 1]
            for b, (i, _) in enumerate(members):
                self.sessions[i].add_encoded(emb[b], mass[b], ids[b], new_states[b], last[b])
            self.encoder_calls += 1
            self.encoder_streams += len(members)

    # -- batch rows and columns -------------------------------------------------------------------
    def _layers(self):
        return [ly for ly in self.cache.layers if getattr(ly, "keys", None) is not None and ly.keys.numel()]

    def _attach(self, i: int) -> None:
        """Give slot ``i`` a cache row, all PAD so far: a free row if there is one (its old keys are never seen
        again: every column so far is PAD to the new stream), else a new zero row."""
        self._owed[i] = self.length  # the fresh stream's table is empty: every column so far is owed as PAD
        self._idle.pop(i, None)
        if None in self.slot_at:
            self.slot_at[self.slot_at.index(None)] = i
            return
        for ly in self._layers():
            zk = ly.keys.new_zeros((1, *ly.keys.shape[1:]))
            ly.keys, ly.values = torch.cat([ly.keys, zk]), torch.cat([ly.values, zk.clone()])
        self.slot_at.append(i)

    def _detach(self, i: int) -> None:
        """Free slot ``i``'s cache row. Rows and columns are compacted only when that pays: once free rows are half the
        batch, and once columns that are PAD for every stream are half the cache (so copies are amortised: a
        server's streams end segments several times a second)."""
        self.slot_at[self.slot_at.index(i)] = None
        self._sync(i)
        self._idle.pop(i, None)
        if not self.attached:
            self.cache, self.length, self.slot_at = dec.new_cache(self.model.llm), 0, []
            return
        free = [r for r, j in enumerate(self.slot_at) if j is None]
        if 2 * len(free) >= len(self.slot_at):
            rows = torch.tensor([r for r, j in enumerate(self.slot_at) if j is not None])
            for ly in self._layers():
                ly.keys, ly.values = ly.keys.index_select(0, rows.to(ly.keys.device)), ly.values.index_select(0, rows.to(ly.values.device))
            self.slot_at = [j for j in self.slot_at if j is not None]
        for j in self.attached:
            self._sync(j)
        kinds = torch.stack([self.sessions[j].state.elements.kind for j in self.attached])
        keep = torch.nonzero((kinds != PAD).any(0)).flatten()
        if 2 * len(keep) <= self.length:
            dec.cache_keep(self.cache, keep)
            for j in self.attached:
                self.sessions[j].keep_columns(keep)
            self.length = len(keep)


def rounds(waves: Sequence[np.ndarray], block: int):
    """Feed order of many waves as concurrent streams: per round, ``(i, next block of wave i, is its last)`` for
    every wave that has audio left, so streams advance in step (one encoder and decoder batch per round)."""
    for start in range(0, max(len(w) for w in waves), block):
        yield [(i, w[start : start + block], start + block >= len(w)) for i, w in enumerate(waves) if start < len(w)]


def _signature(x: Any) -> Any:
    """What must match for encoder states to be stacked: everything but the batch dimension."""
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape[1:]), x.dtype, x.device)
    if is_dataclass(x):
        return (type(x),) + tuple(_signature(getattr(x, f.name)) for f in fields(x) if not f.metadata.get("scratch"))
    if isinstance(x, (list, tuple)):
        return (type(x), tuple(_signature(v) for v in x))
    return ("value", x)


def _stack(xs: list) -> Any:
    """Stack same-signature states along the batch dimension."""
    x0 = xs[0]
    if isinstance(x0, torch.Tensor):
        return torch.cat(xs, 0)
    if is_dataclass(x0):  # scratch fields (spare storage) are per state: dropped, rebuilt on the next append
        return replace(x0, **{f.name: f.default_factory() if f.metadata.get("scratch") else _stack([getattr(x, f.name) for x in xs])
                              for f in fields(x0)})
    if isinstance(x0, (list, tuple)):
        return type(x0)(_stack(list(v)) for v in zip(*xs))
    return x0


def _row(x: Any, b: int) -> Any:
    """Batch row ``b`` of a stacked state (batch size 1)."""
    if isinstance(x, torch.Tensor):
        return x[b : b + 1]
    if is_dataclass(x):
        return replace(x, **{f.name: f.default_factory() if f.metadata.get("scratch") else _row(getattr(x, f.name), b)
                             for f in fields(x)})
    if isinstance(x, (list, tuple)):
        return type(x)(_row(v, b) for v in x)
    return x


__all__ = ["BatchedStreams", "rounds"]
