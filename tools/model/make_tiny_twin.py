#!/usr/bin/env python3
"""Write a tiny twin of conf/phi3_librispeech.yaml's pretrained models: the same structure, tiny sizes, no download.

    <out>/hubert/   HubertModel (HuBERT-large's layout: layer-norm conv front end, stable layer norm,
                    7 convolutions with strides 5,2,2,2,2,2,2 = 320 samples = 20 ms per frame), save_pretrained
    <out>/whisper/  WhisperForConditionalGeneration (openai/whisper-small's layout, as its hub checkpoint is
                    stored: encoder and decoder, 80 mel bands, 1,500 positions, 20 ms per encoder frame) with
                    its preprocessor_config.json, for conf/phi3_librispeech_whisper.yaml (encoder kind whisper)
    <out>/phi3/     Phi3ForCausalLM in bfloat16 (as Phi-3-mini is stored), pretrained for a few seconds as a
                    language model of the transcripts (a random frozen decoder can only write EOS), with a
                    SentencePiece-style word-start tokenizer ("▁" marks a word's first piece; <unk>=0, <s>=1,
                    </s>=2, <pad>) trained here on the same transcripts; its vocabulary is padded to a multiple
                    of 64 like Phi-3-mini's (32,011 tokens, 32,064 rows)

Both load with ``from_pretrained(<dir>)`` exactly as a hub download does, so ``encoder.hf_name_or_path`` and
``decoder.name_or_path`` in a config take these directories in place of ``facebook/hubert-large-ll60k`` (or
``openai/whisper-small``) and ``microsoft/Phi-3-mini-4k-instruct``. No network is used. The real sizes (``benchmarks/gpu/gpu_check.py``) come from
the same functions with other keyword arguments.

    python tools/model/make_tiny_twin.py exp/librispeech-tiny/twin --text librispeech:data/synth:train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

# HuBERT-large (facebook/hubert-large-ll60k) shrunk: same conv stack geometry (20 ms frames), same norms
TINY_HUBERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
HUBERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
HUBERT_COMMON = dict(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_bias=True,
                     feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.1, mask_time_prob=0.05)
# Whisper-small (openai/whisper-small) shrunk: same front end (80 mel bands, two convolutions), same 1,500 sinusoidal
# positions; only the widths and depths differ
TINY_WHISPER = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
                    decoder_attention_heads=4, decoder_ffn_dim=128)
WHISPER_SMALL = dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072, decoder_layers=12,
                     decoder_attention_heads=12, decoder_ffn_dim=3072)
WHISPER_COMMON = dict(num_mel_bins=80, max_source_positions=1500, max_target_positions=448, vocab_size=51865)
# Phi-3-mini-4k (microsoft/Phi-3-mini-4k-instruct) shrunk; vocab_size comes from the tokenizer (padded to 64)
TINY_PHI3 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=4096, original_max_position_embeddings=4096)
PHI3_MINI = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, original_max_position_embeddings=4096,
                 vocab_size=32064)
PHI3_COMMON = dict(rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=2047)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # Phi-3's ids 0, 1, 2 for <unk>, <s>, </s>


def train_word_start_tokenizer(texts: Iterable[str], vocab_size: int = 256):
    """A SentencePiece-style BPE ("▁" word-start marker, as Phi-3's tokenizer) as a PreTrainedTokenizerFast."""
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no text to train the tokenizer on")
    tok = SentencePieceBPETokenizer(replacement="▁", add_prefix_space=True)
    # every letter of the transcripts (and of upper-case English) is a piece, so nothing maps to <unk>
    alphabet = sorted(set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'") | {c for t in texts for c in t if not c.isspace()})
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIALS,
                            initial_alphabet=alphabet, show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")


def make_hubert(out: str | Path, seed: int = 0, device: str = "cpu", **sizes) -> Path:
    """A random HubertModel (TINY_HUBERT unless ``sizes`` say otherwise) saved with save_pretrained."""
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    cfg = HubertConfig(**{**HUBERT_COMMON, **(sizes or TINY_HUBERT)})
    with torch.device(device):
        model = HubertModel(cfg)
    model.save_pretrained(str(out))
    return Path(out)


def make_whisper(out: str | Path, seed: int = 0, device: str = "cpu", **sizes) -> Path:
    """A random WhisperForConditionalGeneration (TINY_WHISPER unless ``sizes`` say otherwise) and Whisper's feature
    extractor settings, saved with save_pretrained: the files of a hub Whisper checkpoint."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(**{**WHISPER_COMMON, **(sizes or TINY_WHISPER)})
    with torch.device(device):
        model = WhisperForConditionalGeneration(cfg)
    model.save_pretrained(str(out))
    WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(str(out))
    return Path(out)


def pretrain_lm(model, tokenizer, texts: list[str], steps: int, seed: int = 0, lr: float = 3e-3,
                batch: int = 16) -> list[float]:
    """Next-token training of ``model`` (float32) on ``<s> text </s>`` sentences; returns the loss per step.

    A random frozen decoder cannot say anything: at hidden 64 with Phi-3's initialiser (std 0.02) every logit
    stays within about +-1.3, so LoRA alone cannot learn even word frequencies, and the twin would only ever
    write EOS. Real Phi-3 arrives pretrained; this gives the twin a (tiny) language model of the transcripts.
    """
    import random

    import torch

    rng = random.Random(seed)
    rows = [[tokenizer.bos_token_id] + tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id]
            for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        b = rng.sample(rows, min(batch, len(rows)))
        n = max(map(len, b))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (n - len(r)) for r in b])
        labels = torch.tensor([r + [-100] * (n - len(r)) for r in b])
        mask = (labels != -100).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def make_phi3(out: str | Path, tokenizer, seed: int = 0, device: str = "cpu", texts: list[str] | None = None,
              pretrain_steps: int = 0, **sizes) -> Path:
    """A random Phi3ForCausalLM in bfloat16 with ``tokenizer`` beside it, saved with save_pretrained.

    ``sizes``: Phi3Config keyword arguments (TINY_PHI3 by default); without ``vocab_size`` the tokenizer's size
    rounded up to a multiple of 64. Built on ``device`` in bfloat16 directly (a 3.8 B model never exists in
    float32 on the CPU). ``pretrain_steps`` > 0: first trained in float32 as a language model of ``texts``
    (:func:`pretrain_lm`), then stored in bfloat16.
    """
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    sizes = dict(sizes or TINY_PHI3)
    vocab = sizes.pop("vocab_size", -(-len(tokenizer) // 64) * 64)
    if vocab < len(tokenizer):
        raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    cfg = Phi3Config(**{**PHI3_COMMON, **sizes}, vocab_size=vocab, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Phi3ForCausalLM._from_config(cfg, dtype=torch.float32 if pretrain_steps else torch.bfloat16)
    if pretrain_steps:
        losses = pretrain_lm(model, tokenizer, list(texts or []), pretrain_steps, seed)
        print(f"language-model pretraining: loss {losses[0]:.2f} -> {losses[-1]:.2f} in {pretrain_steps} steps")
        model = model.to(torch.bfloat16).eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return Path(out)


def make_twin(out: str | Path, texts: Iterable[str], vocab_size: int = 256, seed: int = 0,
              pretrain_steps: int = 150) -> dict[str, Path]:
    """The tiny models under ``out`` (``hubert/``, ``whisper/``, ``phi3/``); returns their directories. The decoder is
    first pretrained as a language model of ``texts`` for ``pretrain_steps`` (:func:`pretrain_lm`)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars: noise in recipe logs
    out = Path(out)
    texts = [t for t in texts if t.strip()]
    tok = train_word_start_tokenizer(texts, vocab_size)
    return {"hubert": make_hubert(out / "hubert", seed), "whisper": make_whisper(out / "whisper", seed),
            "phi3": make_phi3(out / "phi3", tok, seed, texts=texts, pretrain_steps=pretrain_steps)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="folder to write hubert/, whisper/ and phi3/ into")
    p.add_argument("--text", required=True, action="append",
                   help="tokenizer training text: a corpus (manifest.jsonl or librispeech:ROOT:SPLIT) or a .txt file "
                        "with one sentence per line; repeatable")
    p.add_argument("--vocab-size", type=int, default=256, help="tokenizer vocabulary incl. specials (default 256)")
    p.add_argument("--pretrain-steps", type=int, default=150,
                   help="language-model steps of the decoder on the text before it is saved (default 150; 0: random)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    texts: list[str] = []
    try:
        for spec in args.text:
            if spec.endswith(".txt"):
                texts += Path(spec).read_text().splitlines()
            else:
                from asr_stream.data import read_corpus

                texts += [u.text for u in read_corpus(spec)]
        dirs = make_twin(args.out_dir, texts, args.vocab_size, args.seed, args.pretrain_steps)
    except (ValueError, OSError) as e:
        print(f"make_tiny_twin: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"tiny twin: {dirs['hubert']} (HubertModel), {dirs['whisper']} (WhisperForConditionalGeneration), "
          f"{dirs['phi3']} (Phi3ForCausalLM, bfloat16, word-start tokenizer) from {len(texts)} sentences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
