"""A frozen encoder's outputs, computed once and read by the training instead of the audio (``data.features``).

With a pretrained encoder that is not trained (``model.model.encoder.freeze: true``), every training step spends
most of its time computing the same encoder outputs again: Whisper tiny.en run chunk-wise with its left context,
look-ahead and trailing silence took 3.7 of the 4.6 s of a 64 s batch's forward pass on 2 CPU cores. This module
computes them once, for exactly the audio the training would see, and the training reads them back:

    python -m asr_stream.training.cache_features --config conf/tiny_synthetic_whisper.yaml --epochs 1
    asr-stream train fit --config conf/tiny_synthetic_whisper.yaml --data.features <the same folder>

What is cached is item (i, e) of the training dataset, utterance i as epoch e would serve it (speed factor,
waveform augmentation and non-speech replacement drawn from (seed, e, i), as :class:`UtteranceDataset` does), run
through the encoder's own ``forward`` (the training forward, equal to streaming) in float32 by default. So a
training step on the cache computes what a step on the audio computes, up to the order of additions in batched
matrix products (``tests/test_features.py`` compares the two losses). Epoch e of the training reads the cache's
epoch e mod E: with E = 1 every epoch sees the same augmented draw of each utterance (less variety than the audio
path, which draws anew per epoch; a frozen pretrained encoder is what makes that cheap enough to accept).

The folder holds ``meta.json`` (the encoder config, a SHA-256 of its weights, the corpora, sample, speeds,
augmentation and seed it was made for), ``index.jsonl`` (one line per item: epoch, index, shard, samples, text) and
``shard-NNNNN.safetensors`` files. It is written incrementally: a shard, then its index lines; a run that is stopped
keeps every shard it finished and the next run with the same settings continues where it stopped. The training
refuses a cache made for another encoder, other weights or other data settings (one line, before any step).
Multi-GPU: every rank reads the same cache (rank 0's augmentation draws); each rank still gets its own batches.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ..data import Utterance
from .augment import AugmentConfig

if TYPE_CHECKING:
    from .data import Collated

META, INDEX = "meta.json", "index.jsonl"
SHARD_BYTES = 256 * 2**20
"""A shard is closed when its tensors reach this size (a stopped run loses at most one shard's work)."""


def item_key(epoch: int, index: int) -> str:
    return f"e{epoch}/i{index}"


def cache_meta(encoder, encoder_cfg, train: Sequence[str], sample: Optional[int], speeds: Sequence[float],
               augment: AugmentConfig, seed: int, max_utterances: Optional[int], dtype: str,
               targets: str = "plain") -> dict[str, Any]:
    """What a cache was made for; the training compares it with its own settings (:func:`check_cache`). The
    transcripts it holds are ``targets`` (recorded only when formatted, so that older caches still match)."""
    from .module import weights_digest

    meta = {"encoder": asdict(encoder_cfg), "encoder_sha256": weights_digest(encoder), "train": list(train),
            "sample_utterances": sample, "max_utterances": max_utterances, "speed_perturb": [float(s) for s in speeds],
            "augment": asdict(augment), "seed": int(seed), "dtype": dtype}
    return meta if targets == "plain" else {**meta, "targets": targets}


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in meta.items() if k not in ("epochs", "dtype")}))


def check_cache(folder: str | Path, want: dict[str, Any]) -> dict[str, Any]:
    """The cache's meta if it was made for ``want`` (:func:`cache_meta` of the training); else a one-line ValueError
    naming the first setting that differs."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"data.features {folder}: no readable {META} ({type(e).__name__}): write the cache with "
                         "python -m asr_stream.training.cache_features") from None
    have, need = _comparable(meta), _comparable(want)
    for key in [*need, *(k for k in have if k not in need)]:
        if have.get(key) != need.get(key):
            what = "the encoder's weights" if key == "encoder_sha256" else f"'{key}'"
            raise ValueError(f"data.features {folder}: made for other settings ({what} differs from this training's): "
                             "write a new cache for this config")
    return meta


class FeatureDataset(torch.utils.data.Dataset):
    """Items (encoder output (frames, D) float32, samples of the audio it came from, transcript) by (index, epoch),
    as :class:`~asr_stream.training.data.UtteranceDataset` serves the audio; epoch e reads the cache's e mod E."""

    def __init__(self, folder: str | Path, count: int) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / META).read_text())
        self.epochs = int(meta["epochs"])
        self.items: dict[str, dict] = {}
        for line in (self.folder / INDEX).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                self.items[rec["key"]] = rec
        missing = [item_key(e, i) for e in range(self.epochs) for i in range(count) if item_key(e, i) not in self.items]
        if missing:
            raise ValueError(f"data.features {self.folder}: {len(missing)} of {self.epochs * count} items not written yet "
                             f"(e.g. {missing[0]}): run python -m asr_stream.training.cache_features again to finish it")
        self.count = count
        self._open: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key):
        from safetensors import safe_open

        i, epoch = key if isinstance(key, tuple) else (key, 0)
        rec = self.items[item_key(epoch % self.epochs, i)]
        if rec["shard"] not in self._open:
            self._open[rec["shard"]] = safe_open(str(self.folder / rec["shard"]), framework="pt")
        enc = self._open[rec["shard"]].get_tensor(rec["key"]).float()
        return enc, int(rec["samples"]), rec["text"]


def collate_features(items) -> "Collated":
    """(enc, samples, text) items -> a Collated batch with ``enc`` (B, max frames, D) zero-padded and zero audio
    of the right lengths (the model reads the lengths, never the samples, when ``enc`` is given)."""
    from .data import Collated

    T = max(e.shape[0] for e, _, _ in items)
    enc = torch.zeros(len(items), T, items[0][0].shape[1])
    for b, (e, _, _) in enumerate(items):
        enc[b, : e.shape[0]] = e
    lens = torch.tensor([n for _, n, _ in items])
    return Collated(torch.zeros(len(items), 0), lens, [t for _, _, t in items], enc=enc)


def write_cache(net, dm, folder: str | Path, epochs: int, batch_seconds: float, dtype: torch.dtype = torch.float32,
                progress: bool = True) -> int:
    """Encode items (i, e) of ``dm``'s training utterances for e < ``epochs`` into ``folder`` with ``net``'s encoder;
    items already written (same settings) are kept. Returns the number of items written now."""
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from ..data import duration_batches
    from .data import UtteranceDataset, collate

    folder = Path(folder)
    if not net.cfg.encoder.freeze:
        raise ValueError("model.model.encoder.freeze is false: a trained encoder's outputs change every step and "
                         "cannot be cached")
    dm.setup("fit")
    utts: list[Utterance] = dm.train_utts
    meta = cache_meta(net.encoder, net.cfg.encoder, dm.train_specs, dm.sample_utterances, dm.speeds, dm.augment, dm.seed,
                      dm.max_utterances, str(dtype).replace("torch.", ""), dm.targets)
    folder.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    before = 0
    if (folder / META).exists():
        old = check_cache(folder, meta)
        if old["dtype"] != meta["dtype"]:
            raise ValueError(f"{folder}: written in {old['dtype']}, asked for {meta['dtype']}")
        before = int(old.get("epochs", 0))
        if (folder / INDEX).exists():
            done = {json.loads(l)["key"] for l in (folder / INDEX).read_text().splitlines() if l.strip()}
    elif any(folder.iterdir()):
        raise ValueError(f"{folder}: not empty and not a feature cache (no {META}); nothing written")
    (folder / META).write_text(json.dumps({**meta, "epochs": max(epochs, before)}, indent=1))
    shards = sorted(folder.glob("shard-*.safetensors"))
    next_shard = 1 + max([int(p.stem.split("-")[1]) for p in shards] or [-1])

    index = {id(u): i for i, u in enumerate(utts)}
    batches = [[(index[id(u)], e) for u in b] for e in range(epochs)
               for b in duration_batches(utts, batch_seconds, shuffle=False, seed=dm.seed)]
    batches = [[k for k in b if item_key(k[1], k[0]) not in done] for b in batches]
    batches = [b for b in batches if b]
    todo = sum(len(b) for b in batches)
    ds = UtteranceDataset(utts, dm.speeds, dm.seed, dm.augment, dm.targets)  # rank 0's draws (SpeechDataModule: seed + rank)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=dm.num_workers)
    net.eval()
    pending: dict[str, torch.Tensor] = {}
    lines: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal pending, lines, size, next_shard
        if not pending:
            return
        name = f"shard-{next_shard:05d}.safetensors"
        save_file(pending, str(folder / f".{name}.part"))
        (folder / f".{name}.part").rename(folder / name)  # a shard appears whole or not at all
        with open(folder / INDEX, "a") as f:
            f.write("".join(l.replace("@SHARD@", name) for l in lines))
        next_shard += 1
        pending, lines, size = {}, [], 0

    from rich.progress import Progress

    written = 0
    with Progress(disable=not progress) as bar, torch.inference_mode():
        task = bar.add_task("encoding", total=todo)
        for keys, b in zip(batches, loader):
            n_chunks = [net.num_chunks(int(n)) for n in b.wave_lens]
            total = max(n_chunks) * net.chunk_samples
            wave = torch.nn.functional.pad(b.wave, (0, max(0, total - b.wave.shape[1])))[:, :total]
            wave = wave * (torch.arange(total)[None] < b.wave_lens[:, None])  # as SpeechLLM.forward pads
            enc = net.encoder(wave.to(net.device)).cpu()
            F = net.encoder.frames_per_chunk
            for j, (i, e) in enumerate(keys):
                key = item_key(e, i)
                pending[key] = enc[j, : n_chunks[j] * F].to(dtype).contiguous()
                size += pending[key].numel() * pending[key].element_size()
                lines.append(json.dumps({"key": key, "epoch": e, "index": i, "shard": "@SHARD@",
                                         "samples": int(b.wave_lens[j]), "text": b.texts[j]}) + "\n")
            written += len(keys)
            bar.advance(task, len(keys))
            if size >= SHARD_BYTES:
                flush()
        flush()
    return written
