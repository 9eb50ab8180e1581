"""DataModule: corpora (LibriSpeech layout or JSONL manifests), duration batches, augmentation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import lightning as L
from torch.utils.data import DataLoader

from ..data import read_corpus
from ..config import TEXT_FORMATS
from ..data.corpus import check_corpus_spec
from .augment import AugmentConfig
from ..context import ContextDraw, ContextSampler
from .data import ContextCollate, DurationBatchSampler, UtteranceDataset, WithContext, collate
from .features import FeatureDataset, collate_features, nonspeech_settings


class SpeechDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: list[str],
        val: list[str] = [],  # noqa: B006 - jsonargparse needs a literal default
        max_batch_seconds: float = 120.0,
        max_batch_size: Optional[int] = None,
        speed_perturb: list[float] = [1.0],  # noqa: B006
        num_workers: int = 1,
        seed: int = 0,
        max_utterances: Optional[int] = None,
        augment: Optional[dict] = None,
        sample_utterances: Optional[int] = None,
        features: Optional[str] = None,
        context: Optional[dict] = None,
        targets: str = "plain",
    ) -> None:
        """
        Args:
            train: corpora, each a JSONL manifest path or ``librispeech:ROOT:SPLIT[,SPLIT]`` (train-960 allowed).
            val: validation corpora, same forms.
            max_batch_seconds: padded audio seconds per batch (per device).
            max_batch_size: cap on utterances per batch.
            speed_perturb: speed factors drawn per utterance in training, e.g. [0.9, 1.0, 1.1].
            num_workers: DataLoader worker processes.
            seed: batching and augmentation seed.
            max_utterances: use only the first N training utterances (smoke tests).
            augment: waveform augmentations for training, each off unless its probability is set, e.g.
                ``{silence_prob: 0.5, gain_prob: 0.5, noise_prob: 0.3, snr_db: [5, 30]}``; the keys are the fields
                of :class:`asr_stream.training.augment.AugmentConfig`. Seeded by ``seed``, per utterance and epoch.
                SpecAugment is the encoder's (``model.model.encoder.spec_augment``).
            sample_utterances: train on a random sample of N of the training utterances (drawn with ``seed``, kept
                in corpus order): a subset that covers every voice, where ``max_utterances`` takes the first N.
            features: a folder of the frozen encoder's outputs for these training settings, written by
                ``python -m asr_stream.training.cache_features`` (:mod:`asr_stream.training.features`): training reads
                them instead of the audio (the encoder is not run on training batches; validation still runs it).
            context: context lists (prompted hotwords) for training utterances, e.g. ``{prob: 0.5,
                distractor_only_prob: 0.3, true_words: [1, 3], distractors: [0, 100], rare_rank: 1000}``; the keys are
                the fields of :class:`asr_stream.context.ContextDraw`. Needs ``model.model.context_max_tokens`` > 0;
                longer lists are cut to it. Validation runs without context.
            targets: plain or formatted transcripts (:meth:`asr_stream.data.Utterance.target`); set from
                ``model.model.text_format`` by the training command (linked: one switch, in the model).
        """
        super().__init__()
        for spec in [*train, *val]:
            check_corpus_spec(spec)  # a missing manifest or root: one line now, not a traceback once fit has begun
        self.train_specs, self.val_specs = list(train), list(val)
        self.max_batch_seconds, self.max_batch_size = max_batch_seconds, max_batch_size
        self.speeds, self.num_workers, self.seed = list(speed_perturb), num_workers, seed
        self.max_utterances = max_utterances
        if sample_utterances is not None and sample_utterances < 1:
            raise ValueError(f"data.sample_utterances must be >= 1, got {sample_utterances}")
        self.sample_utterances, self.features = sample_utterances, features
        if features is not None and not Path(features).is_dir():
            raise ValueError(f"data.features {features}: no such folder (write it with python -m asr_stream.training.cache_features)")
        if targets not in TEXT_FORMATS:
            raise ValueError(f"data.targets must be one of {', '.join(TEXT_FORMATS)}, got {targets!r}")
        self.targets = targets
        self.augment = AugmentConfig.from_dict(augment)  # a bad key or range: one line now, not once fit has begun
        self.context = ContextDraw.from_dict(context)  # likewise
        self.context_sampler: Optional[ContextSampler] = None
        UtteranceDataset([], self.speeds)  # checks the speed factors

    # Mid-epoch resume: remember how many batches of the current epoch were trained, and skip them.
    def state_dict(self) -> dict:
        t = self.trainer
        if t is None:
            return {}
        return {"epoch": t.current_epoch, "batches_done": t.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (int(state.get("epoch", 0)), int(state.get("batches_done", 0)))

    def setup(self, stage: Optional[str] = None) -> None:
        self.train_utts = [u for s in self.train_specs for u in read_corpus(s)][: self.max_utterances]
        if self.sample_utterances is not None and self.sample_utterances < len(self.train_utts):
            keep = sorted(random.Random(self.seed).sample(range(len(self.train_utts)), self.sample_utterances))
            self.train_utts = [self.train_utts[i] for i in keep]
        self.val_utts = [u for s in self.val_specs for u in read_corpus(s)]
        if not self.train_utts:
            raise ValueError(f"no training utterances in {self.train_specs}")
        if self.targets == "formatted":  # a corpus without formatted text would silently teach plain text
            for u in (*self.train_utts, *self.val_utts):
                if u.formatted is None and u.text.strip():
                    raise ValueError(f"{u.audio_path}: no formatted text for '{u.id}' (formatted targets; add it with "
                                     "tools/corpus/add_formatted_text.py or write the corpus again)")
        if self.context.active:  # lists drawn from the targets: a formatted model's keep their case
            self.context_sampler = ContextSampler(self.context, (u.target(self.targets) for u in self.train_utts))

    def _loader(self, utts, shuffle: bool, speeds, augment: Optional[AugmentConfig] = None) -> DataLoader:
        t = self.trainer
        rank, world = (t.global_rank, t.world_size) if t is not None else (0, 1)
        sampler = DurationBatchSampler(utts, self.max_batch_seconds, shuffle, self.seed, rank, world, self.max_batch_size,
                                       tag_epoch=shuffle)
        if shuffle and getattr(self, "_resume", None):
            sampler.skip_once(*self._resume)
            self._resume = None
        if shuffle and self.features:  # training batches from the frozen encoder's cache
            ds, coll = FeatureDataset(self.features, len(utts), nonspeech_settings(self.augment)), collate_features
        else:
            ds, coll = UtteranceDataset(utts, speeds, self.seed + rank, augment, self.targets), collate
        if shuffle and self.context_sampler is not None:  # training utterances get context lists
            ds, coll = (WithContext(ds, self.context_sampler, self.seed + rank),
                        ContextCollate(coll, self.context, self.seed + rank))
        return DataLoader(ds, batch_sampler=sampler, collate_fn=coll, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_utts, True, self.speeds, self.augment)

    def val_dataloader(self):
        return self._loader(self.val_utts, False, [1.0]) if self.val_utts else []
