#!/usr/bin/env python3
"""Write one training run's copy of a LightningCLI config, with every output path inside the run's folder.

The configs in conf/ name their outputs (CSV/TensorBoard logs, checkpoints, export_dir) and their data with
fixed paths, for a single run from the repository root. A recipe that trains several runs (one model per φ) or
writes to another --exp needs each run's own paths; this tool writes ``<run>/config.yaml`` with

- every logger's ``save_dir`` = ``<run>/logs``; every callback with a ``dirpath`` = ``<run>/ckpt``;
- ``model.export_dir`` = ``<run>/model``;
- ``data.train`` / ``data.val`` = the corpora given (e.g. the manifests of the prepare stage);
- ``model.model.phi`` = ``--phi`` when given;
- any ``--set dotted.key=value`` (value parsed as YAML), e.g. the tiny twin's model directories.

The written file is the exact config the run trained with, kept beside its outputs.

    python tools/training/run_config.py conf/phi3_librispeech.yaml exp/ls/phi0/config.yaml --run exp/ls/phi0 --phi 0 \\
        --train exp/ls/manifests/train-clean-100.jsonl --val exp/ls/manifests/dev-clean.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml


def _set(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            raise ValueError(f"--set {dotted}: {k!r} is not a section of the config")
        node = node[k]
    if keys[-1] not in node:
        raise ValueError(f"--set {dotted}: no such key in the config (only existing keys can be set)")
    node[keys[-1]] = value


def run_config(cfg: dict, run: Path, train: list[str] | None = None, val: list[str] | None = None,
               phi: float | None = None, sets: dict[str, Any] | None = None) -> dict:
    """``cfg`` (a parsed LightningCLI YAML) with its outputs under ``run`` and the given data / φ / overrides."""
    trainer = cfg.setdefault("trainer", {})
    loggers = trainer.get("logger") or []
    for lg in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(lg, dict) and "save_dir" in lg.get("init_args", {}):
            lg["init_args"]["save_dir"] = str(run / "logs")
    for cb in trainer.get("callbacks") or []:
        if isinstance(cb, dict) and "dirpath" in cb.get("init_args", {}):
            cb["init_args"]["dirpath"] = str(run / "ckpt")
    cfg.setdefault("model", {})["export_dir"] = str(run / "model")
    if train:
        cfg.setdefault("data", {})["train"] = list(train)
    if val is not None:
        cfg.setdefault("data", {})["val"] = list(val)
    if phi is not None:
        _set(cfg, "model.model.phi", float(phi))
    for key, value in (sets or {}).items():
        _set(cfg, key, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path, help="LightningCLI YAML (e.g. conf/phi3_librispeech.yaml)")
    p.add_argument("output", type=Path, help="the run's config to write (must not be the input)")
    p.add_argument("--run", type=Path, required=True, help="the run's folder: logs/, ckpt/, model/ go here")
    p.add_argument("--train", nargs="+", help="training corpora (manifest.jsonl or librispeech:ROOT:SPLIT)")
    p.add_argument("--val", nargs="*", help="validation corpora (none: no validation)")
    p.add_argument("--phi", type=float, help="training φ (model.model.phi)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted key = YAML value; repeatable")
    args = p.parse_args(argv)
    try:
        if args.output.resolve() == args.config.resolve():
            raise ValueError(f"{args.output}: would overwrite the input config")
        cfg = yaml.safe_load(args.config.read_text())
        if not isinstance(cfg, dict):
            raise ValueError(f"{args.config}: not a YAML mapping")
        sets = {}
        for item in args.set:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ValueError(f"--set {item!r}: expected KEY=VALUE")
            sets[key] = yaml.safe_load(value)
        run_config(cfg, args.run, args.train, args.val, args.phi, sets)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(f"# written by tools/training/run_config.py from {args.config}\n"
                               + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    except (ValueError, OSError, yaml.YAMLError) as e:
        print(f"run_config: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
