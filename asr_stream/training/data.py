"""Datasets, duration-bucketed batch sampling (DDP-aware) and on-the-fly augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..audio.io import load_audio
from ..data import Utterance, duration_batches
from .augment import AugmentConfig, augment, nonspeech, speed, utterance_rng


class UtteranceDataset(Dataset):
    """Loads audio lazily; optional speed perturbation (a factor drawn from ``speeds`` per utterance) and the
    waveform augmentations of ``augment`` (:mod:`asr_stream.training.augment`), which may also replace an
    utterance by non-speech with an empty transcript (``nonspeech_prob``). ``targets`` (plain / formatted) picks
    the transcript (:meth:`Utterance.target`): the model's ``text_format``.

    Items are asked for by index, or by (index, epoch) as :class:`DurationBatchSampler` yields them with
    ``tag_epoch``: the random draws come from (seed, epoch, index) alone, so they do not depend on the number
    of workers or the loading order, and differ from epoch to epoch.
    """

    def __init__(self, utts: Sequence[Utterance], speeds: Sequence[float] = (1.0,), seed: int = 0,
                 augment: Optional[AugmentConfig] = None, targets: str = "plain") -> None:
        self.utts = list(utts)
        self.targets = targets  # the transcript each item gives: Utterance.target(targets)
        self.speeds = list(speeds)
        if not self.speeds or any(not (0.5 <= s <= 2.0) for s in self.speeds):
            raise ValueError(f"speed_perturb factors must lie in [0.5, 2.0], got {self.speeds}")
        self.seed = seed
        self.augment = augment if augment is not None and augment.active else None

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> tuple[np.ndarray, str]:
        wave, text, _ = self.draw(key)
        return wave, text

    def draw(self, key: Union[int, tuple[int, int]]) -> tuple[np.ndarray, str, bool]:
        """The item as :meth:`__getitem__` serves it, and whether non-speech replaced the utterance."""
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        u = self.utts[i]
        wave = load_audio(u.audio_path)
        rng = utterance_rng(self.seed, epoch, i)
        factor = self.speeds[int(rng.integers(len(self.speeds)))]  # drawn even for [1.0]: same stream either way
        wave = speed(wave, factor)
        text = u.target(self.targets)
        if self.augment is not None:
            wave = augment(wave, self.augment, rng)
            quiet = nonspeech(len(wave), self.augment, rng)
            if quiet is not None:
                return quiet.astype(np.float32), "", True
        return wave.astype(np.float32), text, False


@dataclass
class Collated:
    wave: torch.Tensor
    wave_lens: torch.Tensor
    texts: list[str]
    enc: Optional[torch.Tensor] = None  # (B, frames, D): a frozen encoder's cached outputs (training.features)
    contexts: Optional[list[tuple[str, ...]]] = None  # per utterance, its context list (() for none): WithContext


class WithContext(Dataset):
    """A training dataset whose items also carry a context list (:class:`asr_stream.context.ContextSampler`), drawn
    from the item's transcript (its last field, after augmentation: non-speech gets a distractor-only list) with
    random draws from (seed, epoch, index) alone, apart from the augmentation's (a feature cache stays valid).
    Items are ``(base item, context, (index, epoch))``; :class:`ContextCollate` batches them (and, with
    ``data.context.per_batch``, keeps or drops the batch's lists together)."""

    def __init__(self, base: Dataset, sampler, seed: int = 0) -> None:
        self.base, self.sampler, self.seed = base, sampler, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key):
        from ..context import context_rng

        i, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.base[key]
        return item, self.sampler(item[-1], context_rng(self.seed, epoch, i)), (i, epoch)


class ContextCollate:
    """Collates :class:`WithContext` items with the base dataset's collate function, then adds ``contexts``. With
    ``draw.per_batch`` the whole batch keeps its lists or gets none (:func:`asr_stream.context.batch_has_context`, by
    the batch's first utterance)."""

    def __init__(self, base, draw=None, seed: int = 0) -> None:
        self.base, self.draw, self.seed = base, draw, seed

    def __call__(self, items) -> "Collated":
        from ..context import batch_has_context

        out = self.base([item for item, _, _ in items])
        out.contexts = [ctx for _, ctx, _ in items]
        if self.draw is not None and self.draw.per_batch and items:
            i, epoch = items[0][2]
            if not batch_has_context(self.draw, self.seed, epoch, i):
                out.contexts = [() for _ in items]
        return out


def collate(items: Sequence[tuple[np.ndarray, str]]) -> Collated:
    T = max(len(w) for w, _ in items)
    wave = torch.zeros(len(items), T)
    for i, (w, _) in enumerate(items):
        wave[i, : len(w)] = torch.from_numpy(w)
    return Collated(wave, torch.tensor([len(w) for w, _ in items]), [t for _, t in items])


class DurationBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances under a padded-seconds budget, sharded over DDP ranks.

    Every rank gets the same number of batches (a DDP requirement); the order is reshuffled per epoch.
    """

    def __init__(self, utts: Sequence[Utterance], max_seconds: float, shuffle: bool, seed: int = 0,
                 rank: int = 0, world: int = 1, max_batch_size: Optional[int] = None, tag_epoch: bool = False) -> None:
        self.index = {id(u): i for i, u in enumerate(utts)}
        self.utts, self.max_seconds, self.shuffle = list(utts), max_seconds, shuffle
        self.seed, self.rank, self.world, self.max_batch_size = seed, rank, world, max_batch_size
        self.epoch = 0
        self.tag_epoch = tag_epoch  # yield (index, epoch) pairs: the dataset seeds each item's augmentation by both
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to skip once, after a mid-epoch resume

    def skip_once(self, epoch: int, batches: int) -> None:
        self._skip = (epoch, batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        batches = duration_batches(self.utts, self.max_seconds, shuffle=self.shuffle, seed=self.seed + self.epoch,
                                   max_batch_size=self.max_batch_size)
        per_rank = len(batches) // self.world if self.world > 1 else len(batches)
        mine = batches[self.rank :: self.world][:per_rank]
        return [[self.index[id(u)] for u in b] for b in mine]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if self._skip is not None and self._skip[0] == self.epoch:
            batches = batches[self._skip[1] :]
            self._skip = None
        if self.tag_epoch:
            return iter([[(i, self.epoch) for i in b] for b in batches])
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())
