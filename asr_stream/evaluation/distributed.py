"""``eval --devices N [--num-nodes M]``: one evaluation over several processes through Lightning's DDP strategy.

The strategy is the one training uses (``strategy: ddp``; gloo on CPU, NCCL on GPUs), and so is the launch: Lightning
starts the other processes of one machine itself (it runs the same command again with its rank in the environment);
several machines are launched the way training's are (torchrun or SLURM, one command per machine, ``--num-nodes``).

The rule: rank 0 alone opens the output folder (checks its settings, reads the records a killed run left, drops stale
ones) and broadcasts the ids still to score; rank r of W scores ids r, r + W, r + 2W, ... of that list, so each
utterance is scored exactly once whatever W is. Each rank appends each record, as soon as it is scored, to its own
part file in the output folder (``records.rank<r>.jsonl``: no two processes write one file); once every rank is done
the records are gathered, rank 0 appends them to ``records.jsonl`` (in corpus order) and writes the summary, then each
rank deletes its part file. A run killed before that leaves the part files: the next run (any number of processes)
folds them into ``records.jsonl`` first (:func:`~asr_stream.evaluation.runner.fold_parts`) and scores only the rest.
With several machines the part files of the other machines' ranks are on their disks unless the folder is shared.
The summary is :func:`~asr_stream.evaluation.runner.summarize` of the same records a single process makes, so every
column is a single process's except the wall-clock ones (RTF, the computation-aware latencies), which measure these
processes.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch

from ..data import Utterance
from .runner import PART, Setting, data_lists, finish, open_records, prepare, score_utterance, standard_json


def _one(x):
    return x


class EvalModule(L.LightningModule):
    """Scores this rank's share of the utterances in ``predict_step``; see the module doc for the rule."""

    def __init__(self, model, utts: Sequence[Utterance], setting: Setting, out: Optional[Path], segment: str):
        super().__init__()
        self.net = model  # a submodule: Lightning puts it on this rank's device
        self.utts = list(utts)
        self.setting, self.cfg = prepare(model, setting)
        self.lists = data_lists(model, self.setting, self.utts)
        self.out, self.segment = out, segment
        self.records: dict[str, dict] = {}  # rank 0: the records already in the output folder
        self.scored: dict[str, dict] = {}  # this rank's new records
        self.failed: Optional[str] = None  # the first utterance this rank could not score, and why

    def predict_dataloader(self):
        todo = None
        if self.global_rank == 0:
            if self.out is not None:
                self.records = open_records(self.out, self.net, self.utts, self.cfg, self.setting, self.segment, self.lists)
            todo = [i for i, u in enumerate(self.utts) if u.id not in self.records]
        todo = self.trainer.strategy.broadcast(todo, src=0)
        mine = todo[self.global_rank :: self.trainer.world_size]
        return torch.utils.data.DataLoader(mine, batch_size=None, collate_fn=_one)

    def predict_step(self, i: int, batch_idx: int = 0):
        u = self.utts[int(i)]
        if self.failed:  # after a failure this rank scores nothing more: rank 0 reports it once all are done
            return u.id
        try:
            self.scored[u.id] = r = score_utterance(self.net, self.cfg, u, self.segment, self.lists)
            self.keep(r)
        except Exception as e:  # noqa: BLE001 - handed to rank 0, which raises it (one line) after the gather
            line = str(e).splitlines()[0] if str(e) else ""
            kind = "" if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: "  # a bug says what it is
            self.failed = f"{u.audio_path}: {kind}{line}"
        return u.id  # (None would be warned about)

    def part(self) -> Optional[Path]:
        """This rank's part file (None: no output folder)."""
        return self.out / PART.format(rank=self.global_rank) if self.out is not None else None

    def keep(self, record: dict) -> None:
        """Append ``record`` to this rank's part file at once (a killed run keeps it; the next run folds it in)."""
        import json
        import os

        part = self.part()
        if part is None:
            return
        part.parent.mkdir(parents=True, exist_ok=True)  # (another machine's rank: its own disk, or the shared folder)
        with part.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def evaluate_distributed(model, utts: Sequence[Utterance], setting: Setting, out_dir: Optional[str | Path] = None,
                         segment: str = "auto", devices: int = 2, num_nodes: int = 1, device: str = "cpu",
                         rows_out: Optional[list] = None) -> Optional[dict]:
    """:func:`~asr_stream.evaluation.runner.evaluate` over ``devices`` processes on each of ``num_nodes`` machines.
    Returns the summary on rank 0 (``rows_out`` gets the records in corpus order there; key ``scored_by_rank``: how
    many utterances each process scored in this run) and None on the other ranks."""
    import json
    import os

    if segment not in ("auto", "on", "off"):
        raise ValueError(f"segment must be auto, on or off, got {segment!r}")
    for name, v in (("--devices", devices), ("--num-nodes", num_nodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
    out = Path(out_dir) if out_dir else None
    module = EvalModule(model, utts, setting, out, segment)
    for name in ("lightning.pytorch", "lightning.fabric"):  # no banners of devices and ranks from every process
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # lightning vs this torch
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=devices, num_nodes=num_nodes,
                        strategy="ddp", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    trainer.predict(module, return_predictions=False)
    parts: list = [None] * trainer.world_size  # the process group outlives predict (DDPStrategy.teardown keeps it)
    torch.distributed.all_gather_object(parts, (module.scored, module.failed))
    scored = {k: v for part, _ in parts for k, v in part.items()}
    if trainer.global_rank == 0 and out is not None and scored:
        with (out / "records.jsonl").open("a") as f:
            for u in utts:
                if u.id in scored:
                    f.write(json.dumps(scored[u.id]) + "\n")
            f.flush()
            os.fsync(f.fileno())
    torch.distributed.barrier()  # records.jsonl holds them all: the part files can go
    part = module.part()
    if part is not None and part.exists():
        part.unlink()
    if trainer.global_rank != 0:
        return None
    failed = [f for _, f in parts if f is not None]
    records = {**module.records, **scored}
    if failed:  # what was scored is kept (a rerun resumes); the error is the user's, as a one-process run raises it
        raise ValueError(failed[0] + (f" (and {len(failed) - 1} more process(es) failed)" if len(failed) > 1 else ""))
    summary = finish(module.net, utts, module.setting, module.cfg, records, out, rows_out)
    summary["scored_by_rank"] = [len(p) for p, _ in parts]  # utterances each process scored in this run
    if out is not None:
        (out / "summary.json").write_text(standard_json(summary))
    return summary
