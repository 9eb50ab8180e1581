"""Stream settings follow the model's training unless chosen otherwise: the one place that decides.

A model directory records how it was trained (``ModelConfig.train_mode``, ``train_k``, ``phi``). Streaming
a model at a φ or in a mode it was not trained with costs accuracy without any other sign (a φ = 256 model
used to stream at φ = 0 by default), so every entry point (``StreamingSession``, ``BatchedStreams``,
``transcribe``, ``mic``, ``eval``, ``sweep``) resolves its settings here:

- a setting left at None takes the training value: mode = ``train_mode``, φ = ``phi``, and k = 3 when the
  model was trained with k = 3, else the training k closest to 3 (the larger on a tie: more audio per word);
- the adaptive policies' (ctc, confidence) ``k_min`` left unset is the smallest training k (at most their k_max):
  word j is then never written with fewer than k_min + j chunks, a lag the training masks showed the model
  (with k_min = 0 the bundled model wrote 20 % of its words one chunk earlier than anything it was trained on).
  A batch model is trained offline: its default is the policy's own, 1;
- a setting given explicitly is used as it is, and announced with a :class:`TrainingMismatchWarning` when
  the mode differs, φ differs (group mode), k is not among the training k values, or an adaptive policy's
  k_min is below the smallest of them (group / interleaved training; a batch model is trained offline, so any
  k is as good as another).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

from ..config import MODES, ModelConfig, StreamConfig, TrainingMismatchWarning
from .policy import ADAPTIVE, make_policy

PREFERRED_K = 3


def default_k(train_k: tuple[int, ...] | list[int]) -> int:
    """3 if among ``train_k``, else the value of ``train_k`` closest to 3 (the larger on a tie)."""
    if not train_k:
        return PREFERRED_K
    return min(train_k, key=lambda k: (abs(k - PREFERRED_K), -k))


def default_k_min(model_cfg: ModelConfig, k_max: int) -> int:
    """An adaptive policy's k_min when none is given: the smallest training k (group / interleaved training), at most
    ``k_max``; 1 (the policy's own default) for a batch model."""
    floor = min(model_cfg.train_k) if model_cfg.train_mode != "batch" and model_cfg.train_k else 1
    return max(0, min(floor, k_max))


def with_k(cfg: StreamConfig, k: int) -> StreamConfig:
    """``cfg`` (resolved) with wait-k ``k`` (an adaptive policy's k_max unless its parameters set one), as a server's
    client may ask for its own: a k_min above the new k_max is lowered to it (the client's k is the bound it chose)."""
    args = dict(cfg.policy_args)
    if cfg.policy in ADAPTIVE and "k_max" not in args and args.get("k_min", 0) > k:
        args["k_min"] = float(k)
    return replace(cfg, k=k, policy_args=args)


def training_differences(model_cfg: ModelConfig, cfg: StreamConfig) -> list[str]:
    """How a resolved ``cfg`` differs from the model's training, e.g. ``["phi=0 (trained: 256)"]``; [] if it does not."""
    out = []
    if cfg.mode != model_cfg.train_mode:
        out.append(f"mode={cfg.mode} (trained: {model_cfg.train_mode})")
    elif cfg.mode == "group" and cfg.phi != model_cfg.phi:
        out.append(f"phi={cfg.phi:g} (trained: {model_cfg.phi:g})")
    if cfg.mode != "batch" and model_cfg.train_mode != "batch" and cfg.k not in model_cfg.train_k:
        out.append(f"k={cfg.k} (trained: {' '.join(str(k) for k in model_cfg.train_k)})")
    k_min = cfg.policy_args.get("k_min")
    if (cfg.policy in ADAPTIVE and k_min is not None and cfg.mode != "batch" and model_cfg.train_mode != "batch"
            and model_cfg.train_k and k_min < min(model_cfg.train_k)):
        out.append(f"k_min={k_min:g} (trained: k >= {min(model_cfg.train_k)}; words at lags never trained)")
    return out


def _check(cfg: StreamConfig) -> None:
    """One-line errors for settings no session can run."""
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r} (expected one of {MODES})")
    if cfg.reencode != "none" and cfg.mode != "batch":
        raise ValueError(f"reencode={cfg.reencode!r} applies to mode 'batch' only")
    if cfg.k < 1:
        raise ValueError(f"k must be >= 1, got {cfg.k}")
    if not math.isfinite(cfg.phi) or cfg.phi < 0:
        raise ValueError(f"phi must be a finite number >= 0, got {cfg.phi}")
    if cfg.early_eos not in ("wait", "stop"):
        raise ValueError(f"early_eos must be 'wait' or 'stop', got {cfg.early_eos!r}")
    if cfg.policy != "waitk" and cfg.reencode != "none":
        raise ValueError(f"policy {cfg.policy!r} needs reencode='none' (re-encoding recomputes rows at wait-k visibilities)")
    make_policy(cfg.policy, cfg.k, cfg.policy_args)  # one-line errors for unknown policies and parameters


def stream_config_for(model: Any, cfg: StreamConfig | None = None, warn: bool = True, **fields: Any) -> StreamConfig:
    """The stream settings for ``model`` (a SpeechLLM or its ModelConfig): ``cfg`` with ``fields`` applied,
    its None settings filled in from the training (see the module doc). Explicit settings that differ from
    the training raise a :class:`TrainingMismatchWarning` (one line) unless ``warn`` is False."""
    mc: ModelConfig = model if isinstance(model, ModelConfig) else model.cfg
    cfg = replace(cfg or StreamConfig(), **fields)
    resolved = replace(cfg, mode=cfg.mode if cfg.mode is not None else mc.train_mode,
                       k=cfg.k if cfg.k is not None else default_k(mc.train_k),
                       phi=cfg.phi if cfg.phi is not None else mc.phi)
    _check(resolved)
    if isinstance(resolved.context, str):
        raise ValueError("StreamConfig.context is a sequence of phrases, not a string (asr_stream.context.parse_context)")
    resolved = replace(resolved, context=tuple(resolved.context))
    if resolved.context:
        from ..context import check_context_length

        check_context_length(mc, 1 if mc.context_max_tokens == 0 else 0)  # trained without context: refused here
    args = {a: float(v) for a, v in resolved.policy_args.items()}  # "1" -> 1.0 (command line)
    if resolved.policy in ADAPTIVE and "k_min" not in args:
        args["k_min"] = float(default_k_min(mc, int(args.get("k_max", resolved.k))))
    resolved = replace(resolved, policy_args=args)
    if warn:
        diffs = training_differences(mc, resolved)  # values filled in from the training never differ from it
        if diffs:
            warnings.warn("streaming differently from how the model was trained: " + ", ".join(diffs)
                          + " (expect a higher error rate)", TrainingMismatchWarning, stacklevel=2)
    return resolved
