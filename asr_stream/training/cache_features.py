"""``python -m asr_stream.training.cache_features --config CONF``: write the frozen encoder's outputs for a training
config's data (:mod:`asr_stream.training.features`), into ``--output`` or the config's ``data.features``."""

from __future__ import annotations

import sys
from typing import Any, Optional

import torch

from .datamodule import SpeechDataModule
from .features import write_cache
from .module import SpeechLLMModule


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0].replace('``', ''))
    p.add_argument("--config", action="config", help="the training config (asr-stream train fit --config ...)")
    p.add_class_arguments(SpeechLLMModule, "model")
    p.add_class_arguments(SpeechDataModule, "data")
    p.link_arguments("model.model.text_format", "data.targets")  # as the training command links them
    p.add_argument("--trainer", type=Optional[dict], default=None, help="(read from the config, unused)")
    p.add_argument("--seed_everything", type=Any, default=None, help="(read from the config, unused)")
    p.add_argument("--ckpt_path", type=Optional[str], default=None, help="(read from the config, unused)")
    p.add_argument("--output", type=Optional[str], default=None, help="the cache folder (default: data.features)")
    p.add_argument("--epochs", type=int, default=1, help="augmented draws per utterance (epochs 0 .. E-1)")
    p.add_argument("--batch_seconds", type=float, default=60.0, help="padded audio per encoder call")
    p.add_argument("--dtype", type=str, default="float32", choices=["float32", "float16"],
                   help="stored precision (float16 halves the disk; the model then trains on rounded outputs)")
    try:
        cfg = p.parse_args(argv)
        out = cfg.output or cfg.data.features
        if not out:
            raise ValueError("no cache folder: give --output or data.features")
        if cfg.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {cfg.epochs}")
        cfg.data.features = None  # what is being written: the data module need not find it
        init = p.instantiate(cfg)
        torch.manual_seed(0)
        n = write_cache(init.model.net, init.data, out, cfg.epochs, cfg.batch_seconds, getattr(torch, cfg.dtype))
    except (ValueError, OSError) as e:
        print(f"asr_stream.training.cache_features: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    print(f"{out}: {n} items written", file=sys.stderr)


if __name__ == "__main__":
    main()
