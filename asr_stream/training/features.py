"""A frozen encoder's outputs, computed once and read by the training instead of the audio (``data.features``).

With a pretrained encoder that is not trained (``model.model.encoder.freeze: true``), every training step spends
most of its time computing the same encoder outputs again: Whisper tiny.en run chunk-wise with its left context,
look-ahead and trailing silence took 3.7 of the 4.6 s of a 64 s batch's forward pass on 2 CPU cores. This module
computes them once, for exactly the audio the training would see, and the training reads them back:

    python -m asr_stream.training.cache_features --config conf/tiny_synthetic_whisper.yaml --epochs 1
    asr-stream train fit --config conf/tiny_synthetic_whisper.yaml --data.features <the same folder>

What is cached is item (i, e) of the training dataset, utterance i as epoch e would serve it (speed factor and
waveform augmentation drawn from (seed, e, i), as :class:`UtteranceDataset` does), run
through the encoder's own ``forward`` (the training forward, equal to streaming) in float32 by default. So a
training step on the cache computes what a step on the audio computes, up to the order of additions in batched
matrix products (``tests/unit/test_feature_cache.py`` compares the two losses). Epoch e of the training reads the cache's
epoch e mod E: with E = 1 every epoch sees the same augmented draw of each utterance (less variety than the audio
path, which draws anew per epoch; a frozen pretrained encoder is what makes that cheap enough to accept).

Non-speech replacement (``augment.nonspeech_prob``) is kept apart: the item's speech is cached as if the coin never
fired, and where it fires (for the same draws: the coin comes after every other draw) the non-speech is cached
under a key of its own. A training with non-speech reads those in place of the speech; one without reads the
speech; and a cache written without non-speech gains it by running ``cache_features`` again with the new setting,
which encodes only the replaced items (a tenth of them at ``nonspeech_prob: 0.1``), not the speech again.

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

import numpy as np
import torch

from ..audio.io import SAMPLE_RATE
from ..data import Utterance
from .augment import AugmentConfig

if TYPE_CHECKING:
    from .data import Collated

META, INDEX = "meta.json", "index.jsonl"
SHARD_BYTES = 256 * 2**20
"""A shard is closed when its tensors reach this size (a stopped run loses at most one shard's work)."""


def item_key(epoch: int, index: int) -> str:
    return f"e{epoch}/i{index}"


def nonspeech_key(epoch: int, index: int) -> str:
    """The key of item (i, e)'s non-speech replacement, written only where the augmentation's coin replaces it."""
    return f"e{epoch}/i{index}/nonspeech"


NONSPEECH_FIELDS = ("nonspeech_prob", "nonspeech_dbfs")


def nonspeech_settings(augment: AugmentConfig) -> Optional[dict[str, Any]]:
    """The non-speech settings a cache's replacement items are drawn with (None when ``nonspeech_prob`` is 0)."""
    if augment.nonspeech_prob <= 0:
        return None
    return json.loads(json.dumps({k: getattr(augment, k) for k in NONSPEECH_FIELDS}))


def speech_only(augment: AugmentConfig) -> AugmentConfig:
    """The augmentation without non-speech replacement: what a cache's main items are written with."""
    from dataclasses import replace

    return replace(augment, nonspeech_prob=0.0)


def cache_meta(encoder, encoder_cfg, train: Sequence[str], sample: Optional[int], speeds: Sequence[float],
               augment: AugmentConfig, seed: int, max_utterances: Optional[int], dtype: str,
               targets: str = "plain") -> dict[str, Any]:
    """What a cache was made for; the training compares it with its own settings (:func:`check_cache`). The
    transcripts it holds are ``targets`` (recorded only when formatted, so that older caches still match)."""
    from .module import weights_digest

    enc = {k: v for k, v in asdict(encoder_cfg).items() if k != "unfrozen_top_layers"}  # 0 for any cache (the
    # outputs of trained layers are refused): left out, so that caches written before the field existed still match
    meta = {"encoder": enc, "encoder_sha256": weights_digest(encoder), "train": list(train),
            "sample_utterances": sample, "max_utterances": max_utterances, "speed_perturb": [float(s) for s in speeds],
            "augment": asdict(speech_only(augment)), "nonspeech": nonspeech_settings(augment), "seed": int(seed),
            "dtype": dtype}
    return meta if targets == "plain" else {**meta, "targets": targets}


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """The settings the main items depend on: non-speech replacement is kept apart (its own items, ``nonspeech``)."""
    out = {k: v for k, v in meta.items() if k not in ("epochs", "dtype", "nonspeech")}
    out["augment"] = {k: v for k, v in dict(out.get("augment") or {}).items() if k not in NONSPEECH_FIELDS}
    return json.loads(json.dumps(out))


def check_cache(folder: str | Path, want: dict[str, Any]) -> dict[str, Any]:
    """The cache's meta if it was made for ``want`` (:func:`cache_meta` of the training); else a one-line ValueError
    naming the first setting that differs."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"data.features {folder}: no readable {META} ({type(e).__name__}): write the cache with "
                         "python -m asr_stream.training.cache_features") from None
    if float((meta.get("augment") or {}).get("nonspeech_prob", 0.0)) > 0 and "nonspeech" not in meta:
        raise ValueError(f"data.features {folder}: written before non-speech items were kept apart (its items mix "
                         "speech and non-speech): write a new cache for this config")
    have, need = _comparable(meta), _comparable(want)
    for key in [*need, *(k for k in have if k not in need)]:
        if have.get(key) != need.get(key):
            what = "the encoder's weights" if key == "encoder_sha256" else f"'{key}'"
            raise ValueError(f"data.features {folder}: made for other settings ({what} differs from this training's): "
                             "write a new cache for this config")
    check_nonspeech(folder, meta, want.get("nonspeech"))
    return meta


def check_nonspeech(folder: str | Path, meta: dict[str, Any], nonspeech: Optional[dict[str, Any]]) -> None:
    """A one-line ValueError when a training asks for non-speech items (:func:`nonspeech_settings`) that the cache
    with ``meta`` does not hold for those settings."""
    if nonspeech is not None and meta.get("nonspeech") != nonspeech:
        raise ValueError(f"data.features {folder}: holds no non-speech items for data.augment's {nonspeech}: "
                         "run python -m asr_stream.training.cache_features again with this config to add them")


class FeatureDataset(torch.utils.data.Dataset):
    """Items (encoder output (frames, D) float32, samples of the audio it came from, transcript) by (index, epoch),
    as :class:`~asr_stream.training.data.UtteranceDataset` serves the audio; epoch e reads the cache's e mod E.
    With ``nonspeech`` (:func:`nonspeech_settings` of the training's augmentation) an item that the augmentation
    replaces by non-speech is served as that non-speech (its own cached encoder output, empty transcript)."""

    def __init__(self, folder: str | Path, count: int, nonspeech: Optional[dict[str, Any]] = None) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / META).read_text())
        check_nonspeech(self.folder, meta, nonspeech)
        self.nonspeech = nonspeech is not None
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
        if self.nonspeech:
            rec = self.items.get(nonspeech_key(epoch % self.epochs, i), rec)
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
    items already written (same settings) are kept. The items are written without non-speech replacement; with
    ``nonspeech_prob`` > 0 a second pass encodes, for each item the augmentation's coin replaces, that non-speech
    under :func:`nonspeech_key` (so a cache written without non-speech gains it without encoding its speech again).
    Returns the number of items written now."""
    from torch.utils.data import DataLoader

    from ..data import duration_batches
    from .data import UtteranceDataset, collate

    folder = Path(folder)
    if net.cfg.encoder.trains:
        raise ValueError("the encoder trains (model.model.encoder.freeze false or unfrozen_top_layers > 0): its "
                         "outputs change every step and cannot be cached")
    dm.setup("fit")
    utts: list[Utterance] = dm.train_utts
    meta = cache_meta(net.encoder, net.cfg.encoder, dm.train_specs, dm.sample_utterances, dm.speeds, dm.augment, dm.seed,
                      dm.max_utterances, str(dtype).replace("torch.", ""), dm.targets)
    want_ns = meta["nonspeech"]
    folder.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    before, have_ns = 0, None
    if (folder / META).exists():
        old = check_cache(folder, {**meta, "nonspeech": None})
        if old["dtype"] != meta["dtype"]:
            raise ValueError(f"{folder}: written in {old['dtype']}, asked for {meta['dtype']}")
        before, have_ns = int(old.get("epochs", 0)), old.get("nonspeech")
        if want_ns is not None and have_ns is not None and have_ns != want_ns:
            raise ValueError(f"{folder}: holds non-speech items drawn with {have_ns}, asked for {want_ns}: write a new "
                             "cache for this config")
        if (folder / INDEX).exists():
            done = {json.loads(l)["key"] for l in (folder / INDEX).read_text().splitlines() if l.strip()}
    elif any(folder.iterdir()):
        raise ValueError(f"{folder}: not empty and not a feature cache (no {META}); nothing written")
    total_epochs = max(epochs, before)
    # non-speech items are complete for the epochs they were written for: more epochs need them again
    kept_ns = have_ns if total_epochs == before else None
    (folder / META).write_text(json.dumps({**meta, "epochs": total_epochs, "nonspeech": kept_ns}, indent=1))
    writer = _ShardWriter(folder, dtype)

    index = {id(u): i for i, u in enumerate(utts)}
    batches = [[(index[id(u)], e) for u in b] for e in range(epochs)
               for b in duration_batches(utts, batch_seconds, shuffle=False, seed=dm.seed)]
    batches = [[k for k in b if item_key(k[1], k[0]) not in done] for b in batches]
    batches = [b for b in batches if b]
    todo = sum(len(b) for b in batches)
    # rank 0's draws (SpeechDataModule: seed + rank), without non-speech replacement
    ds = UtteranceDataset(utts, dm.speeds, dm.seed, speech_only(dm.augment), dm.targets)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=dm.num_workers)
    net.eval()
    from rich.progress import Progress

    written = 0
    with Progress(disable=not progress) as bar, torch.inference_mode():
        task = bar.add_task("encoding", total=todo)
        for keys, b in zip(batches, loader):
            writer.add(net, [item_key(e, i) for i, e in keys], b)
            written += len(keys)
            bar.advance(task, len(keys))
        writer.flush()
        if want_ns is not None and kept_ns != want_ns:
            written += _write_nonspeech(net, dm, utts, total_epochs, done, writer, batch_seconds, bar)
            writer.flush()
            (folder / META).write_text(json.dumps({**meta, "epochs": total_epochs, "nonspeech": want_ns}, indent=1))
    return written


def _write_nonspeech(net, dm, utts, epochs: int, done: set[str], writer: "_ShardWriter", batch_seconds: float,
                     bar) -> int:
    """Draw every item (i, e) with the whole augmentation; encode the non-speech of those it replaces."""
    from torch.utils.data import DataLoader

    from .data import UtteranceDataset, collate

    ds = UtteranceDataset(utts, dm.speeds, dm.seed, dm.augment, dm.targets)
    keys = [(i, e) for e in range(epochs) for i in range(len(utts)) if nonspeech_key(e, i) not in done]
    draws = DataLoader(_Draws(ds, keys), batch_size=None, num_workers=dm.num_workers)
    task = bar.add_task("non-speech", total=len(keys))
    pending: list[tuple[str, np.ndarray]] = []
    written = 0

    def encode() -> None:
        nonlocal pending, written
        if pending:
            b = collate([(w, "") for _, w in pending])
            writer.add(net, [k for k, _ in pending], b)
            written += len(pending)
            pending = []

    for (i, e), wave, replaced in draws:
        if replaced:
            pending.append((nonspeech_key(e, i), np.asarray(wave)))
            if sum(len(w) for _, w in pending) >= batch_seconds * SAMPLE_RATE:
                encode()
        bar.advance(task, 1)
    encode()
    return written


class _Draws(torch.utils.data.Dataset):
    def __init__(self, ds, keys: list[tuple[int, int]]) -> None:
        self.ds, self.keys = ds, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, j: int):
        wave, _, replaced = self.ds.draw(self.keys[j])
        return self.keys[j], wave if replaced else np.zeros(0, np.float32), replaced


class _ShardWriter:
    """Encodes batches and appends them to the cache: a shard, then its index lines (a shard appears whole or not)."""

    def __init__(self, folder: Path, dtype: torch.dtype) -> None:
        self.folder, self.dtype = folder, dtype
        shards = sorted(folder.glob("shard-*.safetensors"))
        self.next_shard = 1 + max([int(p.stem.split("-")[1]) for p in shards] or [-1])
        self.pending: dict[str, torch.Tensor] = {}
        self.lines: list[str] = []
        self.size = 0

    def add(self, net, keys: list[str], b) -> None:
        n_chunks = [net.num_chunks(int(n)) for n in b.wave_lens]
        total = max(n_chunks) * net.chunk_samples
        wave = torch.nn.functional.pad(b.wave, (0, max(0, total - b.wave.shape[1])))[:, :total]
        wave = wave * (torch.arange(total)[None] < b.wave_lens[:, None])  # as SpeechLLM.forward pads
        enc = net.encoder(wave.to(net.device)).cpu()
        F = net.encoder.frames_per_chunk
        for j, key in enumerate(keys):
            e, i = (int(x[1:]) for x in key.split("/")[:2])
            self.pending[key] = enc[j, : n_chunks[j] * F].to(self.dtype).contiguous()
            self.size += self.pending[key].numel() * self.pending[key].element_size()
            self.lines.append(json.dumps({"key": key, "epoch": e, "index": i, "shard": "@SHARD@",
                                          "samples": int(b.wave_lens[j]), "text": b.texts[j]}) + "\n")
        if self.size >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        name = f"shard-{self.next_shard:05d}.safetensors"
        save_file(self.pending, str(self.folder / f".{name}.part"))
        (self.folder / f".{name}.part").rename(self.folder / name)
        with open(self.folder / INDEX, "a") as f:
            f.write("".join(l.replace("@SHARD@", name) for l in self.lines))
        self.next_shard += 1
        self.pending, self.lines, self.size = {}, [], 0
