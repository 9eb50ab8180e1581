"""Read / write policies. Pure: they know nothing of models; the session hands them counts and evidence.

A policy answers one question per step: given what the stream has read and written (a :class:`View`),
write the pending target row now, or read the next chunk? Every policy keeps the same hard bounds
(:func:`bounded`): nothing is written before the first chunk, and target unit j is written at the latest
once ``k_max + j`` chunks are read (wait-k with ``k_max``); after the end of the audio every row is written.
The adaptive policies also take ``k_min``: unit j never before ``k_min + j`` chunks. Its default here is 1, the
smallest k any wait-k training shows; a session streaming a model fills in the smallest k that model was trained
with (:func:`asr_stream.streaming.defaults.stream_config_for`), so no row is written at a lag its training masks
never showed. k_min = 0 (unit j after j chunks, the first after one) is allowed and announced as a difference
from the training.

- :class:`WaitK` (``waitk``): write unit j once ``k + j`` chunks are read. The fixed schedule of the paper.
- :class:`CtcTriggered` (``ctc``): write unit j once the CTC head says that unit j's boundary has been
  heard: the expected number of boundary-token onsets (word-final "</w>" tokens; word-start tokens for a
  prefix-style tokenizer; :meth:`asr_stream.model.SpeechLLM.boundary_onsets`) over every frame read
  reaches ``j + threshold``, at least ``margin`` chunks ago. Needs a model with a CTC head
  (``ctc_weight > 0``). Costs little: a chunk's posteriors are computed once, when it is encoded.
- :class:`ConfidenceTriggered` (``confidence``): compute the pending row, and keep its token only when
  the decoder's probability of its top token is at least ``threshold``; otherwise the row is hidden
  (masked for good, like a PAD) and asked again after the next chunk. Costs one decoder row per refusal.

Whatever the policy, the visibility a written row gets (the chunks it attends to) is recorded in the
session's ``state.elements.chunk``, and the masked training forward reproduces it from that list
(:func:`asr_stream.groups.training_layout` with ``vis=``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Mapping, Sequence

from ..config import POLICIES, PolicyName
from ..groups import visible_chunks


class Action(Enum):
    READ = "read"  # wait for the next audio chunk
    WRITE = "write"  # feed the pending token and predict the next one
    STOP = "stop"  # nothing more will be written for this utterance


def max_rows(seconds_read: float, tokens_per_s: float, extra: int) -> int:
    """Length guard: target rows allowed after reading this much audio (never derived from a reference)."""
    return int(tokens_per_s * seconds_read) + extra


def wait_k_action(k: int, units_done: int, chunks_read: int, finished: bool, rows: int, row_limit: int, ended: bool) -> Action:
    """Wait-k over chunks: write target unit j once min(k + j, N) chunks are read.

    Before the end of the audio N is unknown, so a row may be written only when k + j chunks are in;
    after ``finish`` every remaining row sees all N chunks.
    """
    if ended:
        return Action.STOP
    if rows >= row_limit:
        return Action.STOP if finished else Action.READ
    if finished or chunks_read >= visible_chunks(k, units_done, sys.maxsize):
        return Action.WRITE
    return Action.READ


@dataclass(frozen=True)
class View:
    """What a policy sees of one stream at one decision (counts only; built by the session)."""

    units: int
    """Target units finished (the pending row belongs to unit ``units``: wait-k's j)."""
    rows: int
    """Target rows written."""
    chunks_read: int
    """Audio chunks read so far."""
    finished: bool
    """All audio is read (N = chunks_read is known)."""
    ended: bool
    """EOS written (or the length guard reached after the end of the audio)."""
    row_limit: int
    """Length guard: rows allowed for the audio read so far."""
    k_extra: int = 0
    """Chunks added to every bound after EOS was refused before the end of the audio (early_eos='wait')."""
    refused_at: int = -1
    """Chunks read when the pending row was last refused (an early EOS, or too little confidence); -1: never.
    A refused row is not asked again before another chunk is read."""
    heard: Sequence[float] = ()
    """CTC evidence: after each chunk read, the expected boundary-token onsets over every frame read so far
    (about the number of word ends heard). Empty unless the policy needs it."""


def bounded(v: View, k_max: int, ready: bool, k_min: int = 0) -> Action:
    """The bounds every policy keeps, around its own ``ready`` (write now?) decision: unit j is written after
    at least max(1, k_min + j) chunks and at most k_max + j."""
    if v.ended:
        return Action.STOP
    if v.rows >= v.row_limit:
        return Action.STOP if v.finished else Action.READ
    if v.finished or v.chunks_read >= k_max + v.k_extra + v.units:
        return Action.WRITE  # the latest a row may come: wait-k with k_max (after the end of audio: now)
    if v.chunks_read < max(1, k_min + v.units) or v.chunks_read <= v.refused_at:
        return Action.READ  # the earliest: one chunk (or wait-k with k_min); a refused row waits for the next chunk
    return Action.WRITE if ready else Action.READ


class Policy:
    """Base: the decision (:meth:`action`), the visibility of a row written now (:meth:`visibility`) and,
    for policies that judge a computed row, :meth:`accept`. ``needs_ctc``: the session must supply ``heard``."""

    name = ""
    needs_ctc = False
    k_max = 1
    params: ClassVar[tuple[str, ...]] = ()
    """The parameters ``--policy-args`` may set (wait-k's k is ``--k``), in the order errors list them."""

    def action(self, v: View) -> Action:
        raise NotImplementedError

    def visibility(self, v: View) -> int:
        """Chunks the row written now attends to: everything read, never more than wait-k with k_max gives."""
        return visible_chunks(self.k_max + v.k_extra, v.units, v.chunks_read)

    def accept(self, v: View, top_prob: float) -> bool:
        """Keep the row just computed (decoder probability of its top token ``top_prob``)? Refused rows are
        hidden and asked again after the next chunk. Rows at a bound are always kept."""
        return True

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class WaitK(Policy):
    """Write unit j once ``k + j`` chunks are read (unchanged from before policies were pluggable)."""

    k: int = 3
    name = "waitk"

    @property
    def k_max(self) -> int:  # type: ignore[override]
        return self.k

    def action(self, v: View) -> Action:
        return wait_k_action(self.k + v.k_extra, v.units, v.chunks_read, v.finished, v.rows, v.row_limit, v.ended)

    def describe(self) -> str:
        return f"waitk-k{self.k}"


@dataclass(frozen=True)
class CtcTriggered(Policy):
    """Write unit j once the CTC boundary onsets heard reach ``j + threshold``, ``margin`` chunks ago or more."""

    k_max: int = 5  # type: ignore[misc]
    threshold: float = 0.5
    margin: int = 0
    k_min: int = 1  # the smallest trained k is filled in for a model (streaming.defaults)
    name = "ctc"
    needs_ctc = True
    params = ("k_max", "k_min", "threshold", "margin")

    def __post_init__(self) -> None:
        if self.k_max < 1:
            raise ValueError(f"ctc policy: k_max must be >= 1, got {self.k_max}")
        if not 0.0 < self.threshold <= 1.5:
            raise ValueError(f"ctc policy: threshold must be in (0, 1.5], got {self.threshold}")
        if self.margin < 0:
            raise ValueError(f"ctc policy: margin must be >= 0 chunks, got {self.margin}")
        if not 0 <= self.k_min <= self.k_max:
            raise ValueError(f"ctc policy: need 0 <= k_min <= k_max, got {self.k_min}, {self.k_max}")

    def action(self, v: View) -> Action:
        c = v.chunks_read - 1 - self.margin  # the last chunk whose evidence counts
        ready = 0 <= c < len(v.heard) and v.heard[c] >= v.units + self.threshold
        return bounded(v, self.k_max, ready, self.k_min)

    def describe(self) -> str:
        return f"ctc-t{self.threshold:g}-m{self.margin}-k{self.k_min}..{self.k_max}"


@dataclass(frozen=True)
class ConfidenceTriggered(Policy):
    """Try the pending row as soon as the bounds allow; keep it when its top token's probability >= ``threshold``."""

    k_max: int = 5  # type: ignore[misc]
    threshold: float = 0.9
    k_min: int = 1  # the smallest trained k is filled in for a model (streaming.defaults)
    name = "confidence"
    params = ("k_max", "k_min", "threshold")

    def __post_init__(self) -> None:
        if self.k_max < 1:
            raise ValueError(f"confidence policy: k_max must be >= 1, got {self.k_max}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"confidence policy: threshold must be in [0, 1], got {self.threshold}")
        if not 0 <= self.k_min <= self.k_max:
            raise ValueError(f"confidence policy: need 0 <= k_min <= k_max, got {self.k_min}, {self.k_max}")

    def action(self, v: View) -> Action:
        return bounded(v, self.k_max, True, self.k_min)

    def accept(self, v: View, top_prob: float) -> bool:
        if v.finished or v.chunks_read >= self.k_max + v.k_extra + v.units:
            return True
        return top_prob >= self.threshold

    def describe(self) -> str:
        return f"confidence-t{self.threshold:g}-k{self.k_min}..{self.k_max}"


#: The policy registry: name -> class, in the order of :data:`asr_stream.config.POLICIES` (the names, written once:
#: the command line's ``--policy`` choices); each class's ``params`` is its parameter table.
REGISTRY: dict[PolicyName, type[Policy]] = {c.name: c for c in (WaitK, CtcTriggered, ConfidenceTriggered)}  # type: ignore[misc]
#: The adaptive policies: those with a k_min (filled in from a model's training by streaming.defaults).
ADAPTIVE: tuple[PolicyName, ...] = tuple(n for n, c in REGISTRY.items() if "k_min" in c.params)


def make_policy(name: str, k: int, args: Mapping[str, Any] | None = None) -> Policy:
    """The policy ``name`` with ``args``; ``k`` is wait-k's k and the adaptive policies' default k_max."""
    if name not in REGISTRY:
        raise ValueError(f"unknown policy {name!r} (expected one of {', '.join(POLICIES)})")
    cls = REGISTRY[name]  # type: ignore[index]
    args = dict(args or {})
    unknown = sorted(set(args) - set(cls.params))
    if unknown:
        allowed = ", ".join(cls.params) or "none"
        raise ValueError(f"policy {name!r} has no parameter(s) {', '.join(unknown)} (its parameters: {allowed})")
    if cls is WaitK:
        return WaitK(k)
    args.setdefault("k_max", k)
    try:
        args = {a: (float(v) if a == "threshold" else int(v)) for a, v in args.items()}
    except (TypeError, ValueError):
        raise ValueError(f"policy {name!r}: bad parameter value in {dict(args)}") from None
    return cls(**args)


def parse_policy_args(items: Sequence[str] | str | None) -> dict[str, Any]:
    """``["threshold=0.5", "margin=1"]`` or ``"threshold=0.5,margin=1"`` -> {"threshold": "0.5", "margin": "1"}."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in (p for it in items for p in it.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"policy parameter {item!r}: expected NAME=VALUE, e.g. threshold=0.5")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
