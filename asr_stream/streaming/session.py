"""One stream's state and the loop: ``push(samples) -> new words``; ``finish()`` flushes.

One decoder KV cache holds everything in arrival order: prompt and context list (``StreamConfig.context``, staged
with the prompt at the start of every utterance), audio chunk embeddings as they are read, target tokens as they are
written. What each slot is lives in ``state.elements`` (see :mod:`asr_stream.groups`), and every new slot's mask row
and position come from the same rule the training layout uses, so teacher-forced streaming reproduces the training logits.

Modes:
- ``group``: source positions 0.., target φ + i, wait-k mask. Nothing in the cache is ever recomputed.
- ``interleaved``: positions in arrival order, plain causal mask (source sees earlier target).
- ``batch``: target position = source read so far + i, with ``reencode``:
  ``none`` (append only), ``position`` (at each new chunk, drop the target slots and recompute them at
  their new positions, each with its original visibility) or ``kv`` (at each new chunk, recompute the
  whole cache as a batch model would see the prefix: every target row sees all audio read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from .. import decoder as dec
from ..audio.io import SAMPLE_RATE, SAMPLES_PER_MS
from ..config import StreamConfig
from ..context import checked_ids
from ..groups import PAD, TARGET, Elements, additive_mask, allowed, context_elements, source_elements, target_elements
from .defaults import stream_config_for
from .policy import Action, View, make_policy, max_rows
from ..transcript import plain_text
from .restart import RestartRule, word_end


@dataclass(frozen=True)
class Word:
    """A finished word and the audio (ms) that had been read when it was emitted."""

    text: str
    time_ms: float
    tokens: tuple[int, ...]


@dataclass
class StreamState:
    """Everything one stream carries. Only the session's own methods write it (named in brackets; a driver such as
    BatchedStreams calls the public ones, :class:`StreamingSession`'s step protocol, and only reads the state).
    Each counter (:data:`COUNTERS`) has one writer."""

    enc: Any  # encoder stream cache [add_encoded]
    cache: Any  # decoder DynamicCache; None when the driver holds the cache (begin(own_cache=False)) [begin / _reencode_all]
    elements: Elements  # what each cache slot is, in cache order [_columns; keep_columns drops; _refuse hides a row]
    pending: int  # next target input token, BOS at start [_consume]
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # samples short of a chunk [feed / _take_chunk; abandon]
    samples_in: int = 0  # samples received [feed]
    chunks_read: int = 0  # chunks encoded and appended [_read_chunk]
    arrivals: int = 0  # slots ever staged (arrival counter) [_arrive]
    rows: int = 0  # target rows fed [_consume]
    units: int = 0  # target units finished (wait-k's j) [_consume]
    k_extra: int = 0  # chunks added to k, one per EOS chosen before the end of the audio (early_eos="wait") [_consume]
    refused_at: int = -1  # chunks read when the pending row was last refused (early EOS, policy); -1: never [_refuse]
    heard: list[float] = field(default_factory=list)  # per chunk read: CTC boundary-token onsets so far (ctc policy) [_read_chunk]
    ctc_last: Any = None  # (1, nB) boundary posteriors of the last frame encoded (ctc policy) [add_encoded]
    ctc_ids: list[int] = field(default_factory=list)  # per encoder frame read: the CTC head's greedy token (restarts) [_read_chunk]
    texts: list[str] = field(default_factory=list)  # the words of this utterance, as finished [flush_word]
    last_word_chunk: int = 0  # chunks read when the last word was finished [flush_word]
    restart_at: int = -1  # a restart is due at this sample of the utterance: nothing more is read (-1: none) [next_step / stop_for_reread]
    tokens: list[int] = field(default_factory=list)  # emitted tokens, no BOS/EOS [_consume]
    word: list[int] = field(default_factory=list)  # tokens of the unfinished word [_consume / flush_word]
    ended: bool = False  # EOS written or length guard hit after the end of audio [_consume / next_step; abandon]
    closing: bool = False  # no more audio will come [close; abandon]
    finished: bool = False  # closed and all its audio read (the policy's "N is known") [next_step; abandon]
    decoder_positions: int = 0  # decoder slots computed, re-encoding included [_columns]
    src_embeds: list[torch.Tensor] = field(default_factory=list)  # per chunk (E, H); kept only for kv re-encoding [_read_chunk]
    encoded: list = field(default_factory=list)  # [(chunk index, embeddings (E, H), boundary mass or None, CTC tokens or None)] encoded, not yet read; enc is the state after them [add_encoded / _read_chunk; abandon]


#: The counters of :class:`StreamState`: each is written by one method of :class:`StreamingSession` only.
COUNTERS = ("samples_in", "chunks_read", "arrivals", "rows", "units", "k_extra", "refused_at", "last_word_chunk",
            "decoder_positions")


class Step(NamedTuple):
    """One decoder call of one stream: the slots it appends (cache order) and their input embeddings.

    ``write``: the last slot is a target row whose logits choose the next token. A chunk read is fused
    with the write it allows (one call instead of two): the row sees the chunk through the mask, so
    the logits are those of two separate calls.
    """

    new: Elements
    embeds: torch.Tensor  # (len(new), H)
    write: bool = False


def _zero_padded(samples: np.ndarray, length: int) -> np.ndarray:
    """The last partial chunk of a stream, zero-padded to a whole chunk (as the training forward pads it)."""
    out = np.zeros(length, np.float32)
    out[: samples.size] = samples
    return out


class StreamingSession:
    """Greedy streaming transcription of one audio stream with a :class:`~asr_stream.model.SpeechLLM`.

    :meth:`push` and :meth:`finish` run the session on its own decoder cache. Underneath is the **step protocol**,
    public so that a driver can run many sessions' decoder calls as one batched call
    (:class:`~asr_stream.streaming.batched.BatchedStreams`, which writes nothing of a session's state itself):

    - :meth:`begin` starts an utterance and returns its prompt step; :meth:`feed` queues audio and :meth:`close`
      says no more will come (no compute); :meth:`abandon` ends the utterance, dropping what is buffered;
    - :meth:`chunk_to_encode` / :meth:`add_encoded`: the driver may encode buffered chunks ahead, in batches (a
      chunk's encoder output depends on the audio only);
    - :meth:`next_step` decides and stages the next decoder call (policy + encoder), or None: waiting or done;
    - the driver runs the call: :meth:`append_columns` adds the step's slots (and PAD slots of other streams) to
      this stream's table and returns it (the mask's keys); :meth:`keep_columns` follows the driver's cache
      compaction;
    - :meth:`complete` takes the call's logits; :meth:`flush_word` emits the last word once the stream is done.
    """

    def __init__(self, model, cfg: StreamConfig | None = None, **overrides) -> None:
        # settings left at None take the model's training values; explicit ones that differ are announced
        cfg = stream_config_for(model, cfg, **overrides)
        self.model = model.eval()
        self.cfg = cfg
        self.codec = model.codec
        self._policy: tuple[StreamConfig, Any] | None = None
        self._context: tuple[tuple[str, ...], list[int]] | None = None
        if self.policy.needs_ctc and model.ctc_head is None:
            raise ValueError(f"policy {cfg.policy!r} needs a model with a CTC head (ctc_weight > 0)")
        self.words: list[Word] = []  # every word emitted, across reset()
        self.forced: list[int] | None = None  # teacher forcing: tokens to emit instead of argmax (+ EOS)
        self.logits: list[torch.Tensor] | None = None  # per target row asked (V,), when recording
        self.written: list[bool] = []  # per entry of logits: was the row written (False: refused and asked again)
        self.restart: RestartRule | None = None  # set by a segment driver: stop where a restart is due (streaming.restart)
        self.track_words = False  # set by a segment driver: keep the CTC evidence of where words end (heard_to)
        self._token_text: dict[int, str] = {}
        self.context_ids  # a context the model cannot read: refused now, before any audio
        self.reset()

    @property
    def policy(self):
        """The read/write policy of ``cfg`` (rebuilt when ``cfg`` is replaced, e.g. a serving slot's own k)."""
        if self._policy is None or self._policy[0] is not self.cfg:
            self._policy = (self.cfg, make_policy(self.cfg.policy, self.cfg.k, self.cfg.policy_args))
        return self._policy[1]

    @property
    def context_ids(self) -> list[int]:
        """Token ids of ``cfg.context`` ([] for none; a list the model cannot read: ValueError, :func:`checked_ids`)."""
        if self._context is None or self._context[0] != tuple(self.cfg.context):
            self._context = (tuple(self.cfg.context), checked_ids(self.model, self.cfg.context))
        return self._context[1]

    @property
    def tracks_words(self) -> bool:
        """Are the CTC head's per-frame tokens kept (:meth:`heard_to`: where restarts go, what is unheard)? Restarts
        need them: a model without a CTC head is never restarted."""
        return (self.track_words or self.restart is not None) and self.model.ctc_head is not None

    # -- public API -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new utterance (keeps ``words``). Memory held drops back to the prompt."""
        step = self.begin()
        if step is not None:
            with torch.inference_mode():
                self._execute(step)

    def teacher_force(self, tokens: Sequence[int], record_logits: bool = True) -> None:
        """Emit ``tokens`` then EOS instead of greedy choices (for tests); record each row's logits."""
        self.forced = list(tokens) + [self.codec.eos_id]
        self.logits = [] if record_logits else None
        self.written = []

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def ms_read(self) -> float:
        s = self.state
        return min(s.chunks_read * self.model.chunk_samples, s.samples_in) / SAMPLES_PER_MS

    def heard_to(self) -> int:
        """Samples from the utterance start to the end of its last finished word, as far as the session can tell:
        :func:`~asr_stream.streaming.restart.word_end` when the CTC head's tokens are kept, else (or when nothing
        aligns) the audio read when the last word was written. 0 before the first word."""
        s = self.state
        if not s.texts:
            return 0
        read = min(s.last_word_chunk * self.model.chunk_samples, s.samples_in)
        if s.ctc_ids:
            end = word_end(s.texts, s.ctc_ids, self.codec.pad_id, self._ctc_text,
                           self.model.chunk_samples // self.model.encoder.frames_per_chunk)
            if end:  # CTC frames lag the audio by the encoder's look-ahead
                end -= self.model.encoder.lookahead_chunks * self.model.chunk_samples
            if end and end > 0:  # (<= 0: the alignment puts the end before the first frame; a word was written, so not so)
                return min(end, read)
        return read

    def stop_for_reread(self, speech_end: int) -> bool:
        """Restart rule 3: the utterance is finished, and its speech (to sample ``speech_end`` of the utterance) goes on
        ``restart.reread_ms`` or more after its last word: stop there (``state.restart_at``) so that the driver reads
        the rest again. False (nothing changes) otherwise."""
        s = self.state
        if self.restart is None or not self.tracks_words or not s.finished or s.restart_at >= 0 or not s.texts:
            return False
        at = self.heard_to()
        if speech_end - at < self.restart.reread_ms * SAMPLES_PER_MS:
            return False
        s.restart_at = at
        return True

    def _ctc_text(self, t: int) -> str:
        """Token t's characters as the CTC transcript spells them, with a space where a word ends (starts)."""
        if t not in self._token_text:
            text, edge = self.codec.decode([t]), bool(self.codec._boundary[t])  # the raw word marker: where a space goes
            self._token_text[t] = (text + " " if edge else text) if self.codec.style == "suffix" else (" " + text if edge else text)
        return self._token_text[t]

    def push(self, samples: np.ndarray | torch.Tensor) -> list[Word]:
        """Feed 16 kHz mono float32 samples (any block size). Returns the words finished meanwhile."""
        n0 = len(self.words)
        self.feed(samples)
        with torch.inference_mode():
            self._advance()
        return self.words[n0:]

    def finish(self) -> list[Word]:
        """End of audio: zero-pad the last partial chunk, read the encoder's look-ahead chunks of zeros after it
        (``SpeechLLM.num_chunks``: as training pads), then write until EOS or the length guard."""
        n0 = len(self.words)
        self.close()
        with torch.inference_mode():
            self._advance()
        if self.state.restart_at < 0:  # stopped for a restart: the unfinished word is read again after it
            self.flush_word()
        return self.words[n0:]

    # -- the step protocol (public: BatchedStreams drives sessions through it; see the class doc) -------
    def begin(self, own_cache: bool = True) -> Step | None:
        """Start a new utterance's state (``words`` are kept); return its first step, the prompt and context list staged
        but not run (None: no prompt, no context). ``own_cache=False``: the driver holds the decoder cache (``state.cache``
        is None) and runs every step itself."""
        m, empty = self.model, Elements.make([], [], [], [], [], [])
        self.state = StreamState(enc=m.encoder.init_state(1), cache=dec.new_cache(m.llm) if own_cache else None,
                                 elements=empty, pending=self.codec.bos_id)
        return self._prompt_step()

    def feed(self, samples: np.ndarray | torch.Tensor) -> None:
        """Queue 16 kHz mono float32 samples (no compute); RuntimeError after :meth:`close`."""
        s = self.state
        if s.closing:
            raise RuntimeError("push() after finish(): call reset() to start a new utterance")
        a = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float32).reshape(-1)
        s.samples_in += a.shape[0]
        s.buffer = np.concatenate([s.buffer, a]) if s.buffer.size else a

    def close(self) -> None:
        """No more audio will come (no compute): the next steps read the zero-padded tail and the encoder's look-ahead
        chunks of zeros, then write until EOS or the length guard."""
        self.state.closing = True

    def abandon(self) -> None:
        """End this utterance now: buffered and encoded audio is dropped, nothing more is read or written (a driver's
        slot that leaves the batch). ``words`` are kept."""
        s = self.state
        s.closing = s.finished = s.ended = True
        s.buffer, s.encoded = np.zeros(0, np.float32), []

    def next_step(self) -> Step | None:
        """Decide and stage the next decoder call (runs the encoder; not the decoder), or None: waiting or done.

        Same order as reading chunk by chunk and writing whatever each chunk allows: a write when the
        policy says so, else the next whole chunk (after close(): the zero-padded tail), else wait.
        """
        s = self.state
        if s.restart_at >= 0:
            return None  # stopped for a restart: the driver starts a fresh utterance at restart_at
        while True:
            act = self._action()
            if act is Action.WRITE:
                return self._stage_write(None)
            if act is Action.STOP and s.finished:
                s.ended = True  # EOS written, or the length guard reached after the end of audio
                return None
            if self.restart is not None and self.tracks_words and not s.finished and self.restart.due(
                    s.chunks_read * self.model.chunk_samples, len(s.texts), s.k_extra, s.chunks_read, s.last_word_chunk):
                s.restart_at = self.heard_to()  # decided before a chunk is read: block sizes cannot change it
                return None
            chunk = self._take_chunk()
            if chunk is None:
                if s.closing and not s.finished:
                    s.finished = True  # every chunk is in: N is known
                    continue
                return None
            step = self._read_chunk(chunk)
            if step is None:  # skipped (EOS already written) or run at once (re-encoding baselines)
                continue
            return self._stage_write(step) if self._action() is Action.WRITE else step

    def append_columns(self, new: Elements, computed: int) -> Elements:
        """The driver appended the cache columns ``new`` to this stream's row: this step's slots, padded, or the PAD
        slots other streams' steps gave it; ``computed`` of them went through the decoder for this stream. Returns
        the stream's table with them (the keys of the step's mask)."""
        return self._columns(Elements.cat([self.state.elements, new]), computed)

    def keep_columns(self, keep: torch.Tensor) -> None:
        """Keep only the table rows ``keep`` (cache column indices, ascending): the cache's owner drops the others."""
        self.state.elements = self.state.elements.take(keep)

    def complete(self, step: Step, logits: torch.Tensor) -> None:
        """Use a step's logits (its last row's, or all its rows'): a write consumes those of its last row."""
        if step.write:
            self._consume(logits[-1])

    def chunk_to_encode(self) -> np.ndarray | None:
        """The next buffered chunk not encoded yet, or None. Lets a driver run encoders ahead, in batches, and hand
        the outputs back with :meth:`add_encoded`: a chunk's encoder output depends on the audio only, never on what
        the decoder has done."""
        s = self.state
        if s.ended or s.restart_at >= 0:
            return None
        cs, j = self.model.chunk_samples, len(s.encoded)
        if s.buffer.shape[0] >= (j + 1) * cs:
            return s.buffer[j * cs : (j + 1) * cs]
        if s.closing and s.chunks_read + j < self.model.num_chunks(s.samples_in):
            return _zero_padded(s.buffer[j * cs :], cs)
        return None

    def add_encoded(self, embeds: torch.Tensor, mass: float | None, ids: list[int] | None, enc: Any,
                    ctc_last: Any) -> None:
        """The encoder's output for :meth:`chunk_to_encode`'s chunk: its projected embeddings (E, H), the CTC boundary
        mass (ctc policy, else None) and greedy CTC tokens (when words are tracked, else None), the encoder state
        after it, and the boundary posteriors of its last frame (ctc policy, else None). Read in order by
        :meth:`next_step`."""
        s = self.state
        s.encoded.append((s.chunks_read + len(s.encoded), embeds, mass, ids))
        s.enc, s.ctc_last = enc, ctc_last

    def flush_word(self) -> None:
        """Emit the unfinished word (at the end of the utterance)."""
        s = self.state
        if s.word:
            text = self.codec.decode(s.word)
            if text:
                shown = plain_text(text) if self.cfg.plain and self.model.cfg.text_format == "formatted" else text
                if shown:  # (plain: a mark alone is no word)
                    self.words.append(Word(text=shown, time_ms=self.ms_read, tokens=tuple(s.word)))
                s.texts.append(text)  # what the model wrote: the restart rules align it with the CTC transcript
                s.last_word_chunk = s.chunks_read
            s.word = []

    # -- the step machine --------------------------------------------------------------------------
    def _prompt_step(self) -> Step | None:
        """The prompt's slots (arrival numbers 0 ..) and the context's (arrival numbers -C .. -1: they arrived before the
        stream, so no later slot's arrival number or position moves), as one step."""
        m = self.model
        P, ctx = len(m.prompt_ids), self.context_ids
        if not P and not ctx:
            return None
        with torch.inference_mode():
            parts = [context_elements(self.cfg.mode, len(ctx), self.cfg.phi), self._stage(source_elements(P, [], prompt=True))]
            return Step(Elements.cat(parts), m.embed_tokens(ctx + m.prompt_ids))

    def _advance(self) -> None:
        """Run steps until the stream waits for audio or is done."""
        while (step := self.next_step()) is not None:
            self._execute(step)

    def _view(self) -> View:
        """What the policy sees of this stream now."""
        s = self.state
        return View(units=s.units, rows=s.rows, chunks_read=s.chunks_read, finished=s.finished, ended=s.ended,
                    row_limit=self._row_limit(), k_extra=s.k_extra, refused_at=s.refused_at, heard=s.heard)

    def _action(self) -> Action:
        return self.policy.action(self._view())

    def _take_chunk(self) -> np.ndarray | None:
        """The next whole chunk of the buffer (after finish(): the zero-padded tail), or None."""
        s = self.state
        cs = self.model.chunk_samples
        if s.buffer.shape[0] >= cs:
            chunk, s.buffer = s.buffer[:cs], s.buffer[cs:]
            return chunk
        if s.closing and s.chunks_read < self.model.num_chunks(s.samples_in):  # the tail, then look-ahead zeros
            tail, s.buffer = _zero_padded(s.buffer, cs), np.zeros(0, np.float32)
            return tail
        return None

    def _execute(self, step: Step) -> None:
        """Run one step on this session's own cache."""
        self.complete(step, self._append(step.new, step.embeds)[0])

    # -- reading ---------------------------------------------------------------------------------
    def _read_chunk(self, chunk: np.ndarray) -> Step | None:
        """Encode a chunk; return its slots as a step, or None when nothing is left to stage."""
        s, m = self.state, self.model
        E, P = m.embeds_per_chunk, len(m.prompt_ids)
        c = s.chunks_read
        emb = mass = ids = None
        if s.encoded:  # encoded ahead (BatchedStreams)
            c_enc, emb, mass, ids = s.encoded.pop(0)
            assert c_enc == c, (c_enc, c)
        if s.ended:  # EOS already written: nothing more will be written, so skip the work
            s.chunks_read += 1
            return None
        if emb is None:
            self._encode(chunk)
            _, emb, mass, ids = s.encoded.pop(0)
        if ids is not None:
            s.ctc_ids += ids
        if mass is not None:  # cumulative: the policy compares it with the words written
            s.heard.append((s.heard[-1] if s.heard else 0.0) + mass)
        els = source_elements(P, [c] * E, first_audio=c * E)
        s.chunks_read += 1
        if self.cfg.reencode == "kv":
            s.src_embeds.append(emb)
            self._reencode_all()
            return None
        if self.cfg.reencode == "position":
            self._append(self._stage(els), emb)
            if s.rows:
                self._reencode_targets()
            return None
        return Step(self._stage(els), emb)

    def _encode(self, chunk: np.ndarray) -> None:
        """Encode one chunk here (no driver encoded it ahead), handing the output over as a driver would."""
        s, m = self.state, self.model
        wave = torch.from_numpy(chunk).to(m.device)[None]
        enc, state = m.encoder.stream(wave, s.enc)
        mass = ids = last = None
        if self.policy.needs_ctc:
            onsets, last = m.boundary_onsets(enc, s.ctc_last)
            mass = float(onsets[0])
        if self.tracks_words:
            ids = m.ctc_tokens(enc)[0].tolist()
        self.add_encoded(m.project(enc)[0], mass, ids, state, last)  # embeddings (E, H)

    # -- writing ---------------------------------------------------------------------------------
    def _row_limit(self) -> int:
        secs = self.state.chunks_read * self.model.chunk_samples / SAMPLE_RATE
        return max_rows(secs, self.cfg.max_tokens_per_s, self.cfg.max_tokens_extra)

    def _target_position(self, row: int) -> float:
        s, m = self.state, self.model
        if self.cfg.mode == "group":
            return self.cfg.phi + row
        if self.cfg.mode == "interleaved":
            return float(s.arrivals)
        return len(m.prompt_ids) + s.chunks_read * m.embeds_per_chunk + row  # batch: right after the source read

    def _stage_write(self, before: Step | None) -> Step:
        """Stage target row ``rows`` (input: the pending token), after the slots of ``before`` if given."""
        s = self.state
        i = s.rows
        vis = self.policy.visibility(self._view())
        els = self._stage(target_elements([i], [vis], [self._target_position(i)], [s.arrivals]))
        emb = self.model.embed_tokens([s.pending])
        if before is None:
            return Step(els, emb, write=True)
        return Step(Elements.cat([before.new, els]), torch.cat([before.embeds, emb]), write=True)

    def _consume(self, logits: torch.Tensor) -> None:
        """The logits (V,) of target row ``rows``: choose (or force) the next token."""
        s = self.state
        i = s.rows
        if self.logits is not None:
            self.logits.append(logits.float().cpu())
            self.written.append(True)
        if not self.policy.accept(self._view(), float(logits.float().softmax(-1).max())):
            self._refuse(i)  # not sure enough yet: asked again after the next chunk
            return
        nxt = self._choose(i, logits)
        if nxt == self.codec.eos_id and self.forced is None and not s.finished and self.cfg.early_eos == "wait":
            # Too early: the audio goes on. Ask for the row again once one more chunk is in: k (and every
            # policy's bound) grows by one for the rest of the utterance.
            self._refuse(i)
            s.k_extra += 1
            return
        s.rows += 1
        if nxt == self.codec.eos_id:
            s.ended = True
            self.flush_word()
            return
        boundary = self.codec.boundary_after(s.tokens[-1] if s.tokens else None, nxt)  # as codec.boundaries counts
        if self.codec.style == "prefix" and boundary:
            self.flush_word()  # a new word starts: the previous one is complete
        s.tokens.append(nxt)
        s.word.append(nxt)
        if boundary:
            s.units += 1
            if self.codec.style == "suffix":
                self.flush_word()
        s.pending = nxt

    def _refuse(self, i: int) -> None:
        """Row ``i`` was computed but is not written: hide its slot (it stays in the cache, masked like a PAD)
        until another chunk is read. The slot was the last one staged; its arrival number is given back, so
        interleaved positions continue as if it had never been there."""
        s = self.state
        if self.logits is not None:
            self.written[-1] = False
        s.elements.kind[(s.elements.kind == TARGET) & (s.elements.index == i)] = PAD
        self._arrive(-1)
        s.refused_at = s.chunks_read

    def _choose(self, row: int, logits: torch.Tensor) -> int:
        """The token for target ``row``: forced, or greedy."""
        if self.forced is not None and row < len(self.forced):
            return self.forced[row]
        return int(torch.argmax(logits))

    # -- the decoder -------------------------------------------------------------------------------
    def _run(self, q: Elements, keys: Elements, embeds: torch.Tensor, cache) -> torch.Tensor:
        m = self.model
        mask = additive_mask(allowed(self.cfg.mode, q, keys), embeds.dtype).to(m.device)[None]
        return dec.run(m.llm, embeds[None], mask, q.position[None].to(m.device), cache, last_only=True)

    def _stage(self, new: Elements) -> Elements:
        """Give new slots their arrival numbers (and, interleaved, their positions)."""
        a0 = self._arrive(len(new))
        new.arrival = torch.arange(a0, a0 + len(new))
        if self.cfg.mode == "interleaved":
            new.position = new.arrival.double()
        return new

    def _arrive(self, n: int, start: int | None = None) -> int:
        """``n`` more slots arrive (-1: a refused row's number is given back), counted from ``start`` when given (a
        rebuilt cache); returns the first one's arrival number. The one writer of ``arrivals``."""
        s = self.state
        first = s.arrivals if start is None else start
        s.arrivals = first + n
        return first

    def _columns(self, keys: Elements, computed: int) -> Elements:
        """The table becomes ``keys`` (the old one and new columns after it, or a rebuilt one), ``computed`` slots of
        which were run through the decoder: the one writer of ``decoder_positions``."""
        s = self.state
        s.elements = keys
        s.decoder_positions += computed
        return keys

    def _append(self, new: Elements, embeds: torch.Tensor) -> torch.Tensor:
        """Append staged slots to the cache; their mask rows come from the shared rule. Returns logits."""
        s = self.state
        keys = Elements.cat([s.elements, new])
        logits = self._run(new, keys, embeds, s.cache)
        self._columns(keys, len(new))
        return logits

    def _target_inputs(self) -> list[int]:
        s = self.state
        return [self.codec.bos_id] + s.tokens[: s.rows - 1]

    def _reencode_targets(self) -> None:
        """Batch + position re-encoding: recompute every target slot at position S_now + i."""
        s, m = self.state, self.model
        keep = torch.nonzero(s.elements.kind != TARGET).flatten()
        old_t = s.elements.take(torch.nonzero(s.elements.kind == TARGET).flatten())
        dec.cache_keep(s.cache, keep)
        self.keep_columns(keep)
        S = len(m.prompt_ids) + s.chunks_read * m.embeds_per_chunk
        order = torch.argsort(old_t.index)
        rows = old_t.index[order]
        tgt = target_elements(rows.tolist(), old_t.chunk[order].tolist(), (S + rows.double()).tolist(), old_t.arrival[order].tolist())
        keys = Elements.cat([s.elements, tgt])
        self._run(tgt, keys, m.embed_tokens(self._target_inputs()), s.cache)
        self._columns(keys, len(tgt))

    def _reencode_all(self) -> None:
        """Batch + KV re-encoding: rebuild the cache from scratch over prompt, audio read and targets."""
        s, m = self.state, self.model
        P, E, n = len(m.prompt_ids), m.embeds_per_chunk, s.chunks_read
        S = P + n * E
        parts, embeds = [], []
        if P:
            parts.append(source_elements(P, [], prompt=True))
            embeds.append(m.embed_tokens(m.prompt_ids))
        parts.append(source_elements(P, [c for c in range(n) for _ in range(E)]))
        ctx = self.context_ids
        embeds.append(torch.cat(s.src_embeds))
        if s.rows:
            parts.append(target_elements(range(s.rows), [n] * s.rows, [S + i for i in range(s.rows)], [0] * s.rows))
            embeds.append(m.embed_tokens(self._target_inputs()))
        els = Elements.cat(parts)
        els.arrival = torch.arange(len(els))
        if ctx:  # before the stream, as _prompt_step stages it
            els = Elements.cat([context_elements(self.cfg.mode, len(ctx), self.cfg.phi), els])
            embeds.insert(0, m.embed_tokens(ctx))
        s.cache = dec.new_cache(m.llm)
        self._run(els, els, torch.cat(embeds), s.cache)
        self._columns(els, len(els))
        self._arrive(len(els) - len(ctx), start=0)


__all__ = ["StreamingSession", "StreamState", "Step", "Word"]
