"""Write a model directory from a Lightning training checkpoint: ``asr-stream export``.

A run exports its model by itself (at each checkpoint and at the end), so this is for the other cases: an
earlier checkpoint, a run killed between checkpoints, or the live weights of a run trained with a weight
average (EMA / SWA), whose checkpoints keep the average in ``state_dict`` and the live weights in
``current_model_state`` (Lightning's ``WeightAveraging`` layout).

The checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so no
pickled code runs. The configuration and tokenizer come from a model directory of the same run (``--like``),
since checkpoints hold weights only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from ..model import CheckpointError, SpeechLLM

PREFIX = "net."  # SpeechLLMModule keeps the model as ``self.net``


def checkpoint_state(ckpt: str | Path, weights: Literal["average", "live"] = "average") -> dict[str, torch.Tensor]:
    """The model's state dict (``net.`` prefix removed) from a training checkpoint.

    Args:
        ckpt: a ``.ckpt`` file written by ``asr-stream train``.
        weights: ``average``: the weight average if the run kept one (else an error); ``live``: the optimiser's
            weights (for a run without averaging these are the only ones).
    """
    path = Path(ckpt)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refuses code objects, truncation, non-torch files ...
        raise CheckpointError(f"{path}: not a readable weights-only checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict):
        raise CheckpointError(f"{path}: no state_dict (not a Lightning checkpoint)")
    averaged = "current_model_state" in ck
    if weights == "average" and not averaged:
        raise CheckpointError(f"{path}: holds no weight average (trained without EMA/SWA); use --weights live")
    state = ck["current_model_state"] if weights == "live" and averaged else ck["state_dict"]
    net = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not net:
        raise CheckpointError(f"{path}: no '{PREFIX}*' weights (not an asr-stream training checkpoint)")
    return net


def export_checkpoint(ckpt: str | Path, like: str | Path, output: str | Path,
                      weights: Literal["average", "live"] = "average") -> Path:
    """Load ``like`` (config + tokenizer), put the checkpoint's weights in, save the result to ``output``."""
    model = SpeechLLM.load(like)
    state = checkpoint_state(ckpt, weights)
    expected = model.state_dict()
    missing = sorted(set(model._saved_state()) - set(state))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or wrong or set(state) - set(expected):
        bad = (missing or wrong or sorted(set(state) - set(expected)))[0]
        raise CheckpointError(f"{ckpt}: weights do not match the model in {like} (e.g. {bad})")
    model.load_state_dict(state, strict=False)
    return model.save(output)
