"""Prepare stage for a model trained from scratch: a BPE tokenizer and log-mel statistics from training data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..audio.features import LogMel
from ..audio.io import load_audio
from ..decoder import TextCodec, cased_vocabulary, train_bpe
from ..data import read_corpus


def prepare(train: Sequence[str], out_dir: str, vocab_size: int = 1000, stats_utterances: int = 300, seed: int = 0,
            text_format: str = "plain", cased_from: str | None = None) -> Path:
    """Write ``out_dir/tokenizer/`` (end-of-word BPE on the training transcripts) and ``out_dir/feat_stats.json``.

    Args:
        train: training corpora (JSONL manifests or ``librispeech:ROOT:SPLITS``).
        out_dir: output directory.
        vocab_size: BPE vocabulary size (special tokens included).
        stats_utterances: utterances sampled for the log-mel mean / std.
        seed: sampling seed.
        text_format: the transcripts the tokenizer is trained on: ``plain`` (upper case) or ``formatted`` (case and
            punctuation, :attr:`Utterance.formatted`; every utterance with words must have it), for a model with
            that ``text_format``. Words are split on whitespace only, so a mark stays in its word's last token
            (``"Hello,"`` ends in one word-final token): the wait-k unit is the word with its punctuation.
        cased_from: for ``formatted``: instead of a new BPE, the cased form of this plain tokenizer (a model folder or
            a tokenizer folder; :func:`asr_stream.decoder.cased_vocabulary`), which keeps the plain model's cut of
            every word, for a model that starts from that plain model (``model.init_from``). ``vocab_size`` is
            not used then.
    """
    from rich.progress import track

    utts = [u for spec in train for u in read_corpus(spec)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [u for u in utts if text_format == "formatted" and u.formatted is None and u.text.strip()]
    if missing:
        raise ValueError(f"{missing[0].audio_path}: no formatted text for '{missing[0].id}' ({len(missing)} utterances "
                         "without it; add it with tools/corpus/add_formatted_text.py)")
    if cased_from:
        if text_format != "formatted":
            raise ValueError("cased_from makes a tokenizer for formatted text: give text_format='formatted'")
        codec = cased_vocabulary(TextCodec.load(cased_from))
        unk = codec.tok.unk_token_id
        lost = [u for u in utts if unk in codec.encode(u.target(text_format))]
        if lost:
            raise ValueError(f"the cased form of {cased_from} cannot write '{lost[0].target(text_format)}' ({len(lost)} "
                             "training transcripts have a character the plain vocabulary lacks)")
    else:
        codec = train_bpe((u.target(text_format) for u in utts), vocab_size)
    codec.save(out / "tokenizer")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(utts), size=min(stats_utterances, len(utts)), replace=False)
    lm = LogMel()
    total, sq, n = 0.0, 0.0, 0
    for i in track(pick, description="log-mel statistics"):
        f = lm(torch.from_numpy(load_audio(utts[int(i)].audio_path))[None])[0].double()
        total, sq, n = total + f.sum(0), sq + (f * f).sum(0), n + f.shape[0]
    mean = total / n
    std = torch.sqrt(torch.clamp(sq / n - mean * mean, min=1e-8))
    (out / "feat_stats.json").write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist(), "frames": n}))
    print(f"tokenizer: {len(codec)} tokens ({codec.style} word boundaries); statistics over {n} frames -> {out}")
    return out
