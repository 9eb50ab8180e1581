"""The Phi-3 decoder and its tokenizer. The only module that knows transformers' LLM internals.

- :func:`build_decoder`: ``Phi3ForCausalLM`` from a hub id / local directory, or from a tiny config.
  Attention is always SDPA and every call passes an explicit float 4-D mask and explicit float
  position ids (eager attention with a bool 4-D mask is silently wrong in transformers 5.x, and with no
  mask and non-unit position steps transformers guesses "packed sequences").
- :class:`TextCodec`: tokenizer wrapper that knows where words end (needed by the wait-k schedule).
- :func:`train_bpe`: a small end-of-word BPE for models trained from scratch.
- cache helpers: keep / drop slots of a ``DynamicCache`` (used by the re-encoding baselines only).
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .config import DecoderConfig
from .kv import append_kv

EOW = "</w>"  # end-of-word suffix of our own BPE
TWIN = "</m>"  # a word-final token's twin that another token of the same word follows (":func:`cased_vocabulary`)
MARKS = ".,!?;:\""  # the marks a cased vocabulary splits off a word's letters (and joins again with twins)
WORD_START_MARKS = ("▁", "Ġ")  # SentencePiece / byte-level BPE word-start markers


def _marks_only(piece: str) -> bool:
    """Is a token's text, without its word marker, punctuation only (``",</w>"``, ``"▁."``)?"""
    text = _strip_marker(piece)
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


def _as_final(piece: str) -> str:
    """A twin's word-final token (``"lo</m>"`` -> ``"lo</w>"``); any other token as it is."""
    return piece[: -len(TWIN)] + EOW if piece.endswith(TWIN) else piece


def _strip_marker(piece: str) -> str:
    """A token's text without its end-of-word suffix, twin suffix or word-start marker."""
    for suffix in (EOW, TWIN):
        if piece.endswith(suffix):
            return piece[: -len(suffix)]
    return piece.lstrip("".join(WORD_START_MARKS))


class TextCodec:
    """Tokenizer + word-boundary knowledge. ``style`` is 'suffix' (end-of-word BPE) or 'prefix' (word-start).

    A target unit (the wait-k schedule's word) is a whitespace-separated word with the punctuation written against
    it: "Hello," and "you?" are one unit each, so a full stop costs no extra chunk. Formatted text keeps its marks
    in their words (:attr:`asr_stream.corpus.text.Sentence.formatted`), and a tokenizer that splits on whitespace
    only puts them in the word's tokens (suffix style: the word-final token ends with the mark; prefix style: the
    mark is a continuation token without "▁"). A mark standing alone between spaces (``"world ."``) is never a
    unit of its own: a prefix-style ``"▁."`` continues the word before it (and a word token after a ``"▁\""`` starts
    the unit: an opening quote belongs to its word), and a suffix-style ``".</w>"`` that starts a word does not
    finish a unit (it joins the next word's unit), so a model that writes one gets no extra chunk for it either."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(tokenizer, name) is None:
                raise ValueError(f"tokenizer has no {name.split('_')[0]} token")
        self.bos_id: int = tokenizer.bos_token_id
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.style = "suffix" if sum(str(p).endswith(EOW) for p in pieces if p) > len(pieces) // 4 else "prefix"
        special = set(tokenizer.all_special_ids)
        if self.style == "suffix":
            flags = [bool(p) and str(p).endswith(EOW) for p in pieces]
        else:
            flags = [bool(p) and str(p).startswith(WORD_START_MARKS) for p in pieces]
        # the flag of token t: does emitting t complete (suffix) / start (prefix) a target unit?
        self._boundary = torch.tensor([f and i not in special for i, f in enumerate(flags)], dtype=torch.bool)
        # tokens that are punctuation only: never a unit on their own (see the class docstring)
        self._marks = torch.tensor([bool(p) and i not in special and _marks_only(str(p)) for i, p in enumerate(pieces)],
                                   dtype=torch.bool)
        # a cased vocabulary (:func:`cased_vocabulary`): each word-final token's twin, written when another token of
        # the same whitespace word follows it ("Hello," = Hel lo</m> ,</w>), so the word keeps its plain tokens
        # and the unit still ends at the word's last token, its mark
        ids = {str(p): i for i, p in enumerate(pieces) if p}
        self._twin = {ids[_as_final(p)]: i for p, i in ids.items()
                      if self.style == "suffix" and p.endswith(TWIN) and _as_final(p) in ids}
        self._final = {twin: final for final, twin in self._twin.items()}  # each twin's word-final token
        # and each token's plain form, which the CTC head is taught (it hears words; the decoder writes them):
        # lower case, a twin as its word-final token, a mark as none (-1); None for any other vocabulary
        self.canonical: list[int] | None = None
        if self._twin:
            def plain_form(p: str) -> int:
                if not p or _marks_only(p):
                    return -1
                q = _as_final(p)
                return ids.get(q.lower(), ids.get(q, -1))
            self.canonical = [i if i in special else plain_form(str(p or "")) for i, p in enumerate(pieces)]

    def plain_targets(self, ids: Sequence[int]) -> list[int]:
        """A transcript's tokens in their plain forms (:attr:`canonical`; marks left out): what the CTC head of a
        model with a cased vocabulary learns. Any other vocabulary: the tokens as they are."""
        if self.canonical is None:
            return list(ids)
        return [c for c in (self.canonical[t] for t in ids) if c >= 0]

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        if not self._twin:
            return list(self.tok.encode(text, add_special_tokens=False))
        words = text.split()
        if not words:
            return []
        ids: list[int] = []
        for word in self.tok(words, add_special_tokens=False)["input_ids"]:
            ids += [self._twin.get(t, t) for t in word[:-1]] + word[-1:]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(self._mended(list(ids)), skip_special_tokens=True).strip()

    def _mended(self, ids: list[int]) -> list[int]:
        """A cased vocabulary's text as a model may write it, made readable: a letter token's twin followed by no mark
        is written as the word's end (``person</m> who</w>``: "person who", not "personwho"), and a word-final mark
        that follows a word's end is written against that word (``anything</w> .</w>``: "anything.", not
        "anything ."; the model often writes a mark so, one unit later, once it has heard the pause). Only the text
        changes: the tokens, their units and their times are what the model wrote. Other vocabularies: as they are."""
        if not self._twin:
            return ids
        out = list(ids)
        for i, t in enumerate(out):
            nxt = out[i + 1] if i + 1 < len(out) else None
            if t in self._final and not bool(self._marks[t]) and nxt is not None and not bool(self._marks[nxt]):
                out[i] = self._final[t]
            elif i and bool(self._marks[t]) and bool(self._boundary[t]) and out[i - 1] in self._twin:
                out[i - 1] = self._twin[out[i - 1]]
        return out

    def is_boundary(self, token: int, first: bool = False, word_start: bool = False) -> bool:
        """Does emitting ``token`` complete (suffix style) / start (prefix style) a target unit?

        ``first``: the token is the transcript's first. In prefix style it always starts a unit: a
        byte-level BPE (GPT-2 style "Ġ", as Phi-4-mini's) gives the first word no marker, and without this
        every later word would count one start fewer and see one chunk less than wait-k promises.
        (SentencePiece marks the first word too, so nothing changes there.)
        ``word_start``: suffix style: the token starts a whitespace word (the transcript's first token, or the
        one after a word-final token); a punctuation-only word-final token there is a mark standing alone and
        finishes no unit. Prefix style: a punctuation-only token never starts a unit (except as ``first``), and
        ``word_start`` says that the token follows one with a word-start marker ("▁\"" before "Hello"): a word
        token there starts the unit the mark could not (an opening quote belongs to the word after it)."""
        mark = bool(self._marks[token])
        if self.style == "prefix":
            return first or (not mark and (bool(self._boundary[token]) or word_start))
        return bool(self._boundary[token]) and not (word_start and mark)

    def boundaries(self, ids: Sequence[int]) -> list[bool]:
        """:meth:`is_boundary` of each token of a transcript (the first one counted as its first; a token after a
        word-final one as a word start)."""
        return [self.boundary_after(ids[i - 1] if i else None, t) for i, t in enumerate(ids)]

    def boundary_after(self, prev: int | None, token: int) -> bool:
        """:meth:`is_boundary` of ``token`` written after ``prev`` (None: it is the transcript's first): the one
        rule the training layout (:meth:`boundaries`) and the streaming session both count units with."""
        if prev is None:
            return self.is_boundary(token, first=True, word_start=True)
        if self.style == "suffix":
            return self.is_boundary(token, word_start=bool(self._boundary[prev]))
        return self.is_boundary(token, word_start=bool(self._boundary[prev]) and bool(self._marks[prev]))

    def save(self, path: str | Path) -> None:
        self.tok.save_pretrained(str(path))

    @staticmethod
    def load(path: str | Path) -> "TextCodec":
        from transformers import AutoTokenizer

        return TextCodec(AutoTokenizer.from_pretrained(str(path)))


def train_bpe(texts: Iterable[str], vocab_size: int) -> TextCodec:
    """Train an end-of-word BPE (``</w>`` suffix) on transcripts; words are split on whitespace only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix=EOW))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.BPEDecoder(suffix=EOW)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, end_of_word_suffix=EOW, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return TextCodec(fast)


def cased_vocabulary(plain: TextCodec, marks: str = MARKS) -> TextCodec:
    """A vocabulary for cased, punctuated text made from a plain (upper-case) end-of-word BPE, so that a model
    trained on the plain one keeps every word it knows (issue #31; compare :func:`train_bpe` on the formatted text,
    whose new segmentation starts the decoder far from the plain one):

    - each plain token in lower case and capitalised (``"THE</w>"`` -> ``"the</w>"``, ``"The</w>"``), with each
      plain merge in the same two forms at the same rank, so a lower-case or capitalised word is cut exactly where
      the plain tokenizer cuts it in upper case (a word in capitals falls back to letters);
    - ``marks`` split off the word's letters by the pre-tokenizer, each a token of its own;
    - a twin (``"lo</m>"``) of every word-final token, which :meth:`TextCodec.encode` writes when another token of
      the same whitespace word follows: ``"Hello,"`` is ``Hel lo</m> ,</w>``, so a word before a mark keeps its
      plain tokens and its mark ends the wait-k unit (a full stop costs no chunk), and decoding drops the ``</m>``.

    Lower-case tokens come first, then the capitalised ones, the marks, the twins: a decoder whose rows are copied
    per token (:func:`transfer_vocabulary`) ties the forms of a word and picks the lower-case, unmarked one."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if plain.style != "suffix":
        raise ValueError("cased_vocabulary needs an end-of-word BPE (train_bpe's); this tokenizer marks word starts")
    spec = json.loads(plain.tok.backend_tokenizer.to_str())["model"]
    if spec.get("type") != "BPE" or spec.get("end_of_word_suffix") != EOW:
        raise ValueError(f"cased_vocabulary needs an end-of-word BPE ({EOW} suffix); got {spec.get('type')}")
    special = set(plain.tok.all_special_tokens)
    old = sorted(spec["vocab"].items(), key=lambda kv: kv[1])
    specials = [p for p, _ in old if p in special]

    def lower(p: str) -> str:
        return p.lower()

    def cap(p: str) -> str:
        return p[:1].upper() + p[1:].lower()

    letters = {c for p, _ in old if p not in special for c in _strip_marker(p)}
    alphabet = sorted({f(c) for c in letters for f in (str.lower, str.upper)} | set(marks))
    order: list[str] = list(specials)
    for form in (lower, cap):
        order += [form(p) for p, _ in old if p not in special]
    order += alphabet + [c + EOW for c in alphabet]
    finals = [p for p in dict.fromkeys(order) if p.endswith(EOW)]
    order += [p[: -len(EOW)] + TWIN for p in finals]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(order))}
    merges: list[tuple[str, str]] = []
    for m in spec["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        merges.append((lower(a), lower(b)))
        if cap(a) != lower(a):
            merges.append((cap(a), lower(b)))
    merges = [m for m in dict.fromkeys(merges) if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    unk = plain.tok.unk_token
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, end_of_word_suffix=EOW))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex("[" + "".join("\\" + c for c in marks) + "]"), behavior="isolated")])
    tok.decoder = decoders.Sequence([decoders.Replace(TWIN, ""), decoders.BPEDecoder(suffix=EOW)])
    p = plain.tok
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=p.pad_token, bos_token=p.bos_token,
                                   eos_token=p.eos_token, unk_token=unk)
    return TextCodec(fast)


def vocabulary_rows(src_codec: TextCodec, codec: TextCodec) -> tuple[list[list[int]], dict[str, int]]:
    """For each token of ``codec``, the rows of ``src_codec``'s vocabulary it starts from (the rules of
    :func:`transfer_vocabulary`; [] : the mean of all rows), and how many tokens each rule made."""
    old = src_codec.tok
    roles = {codec.bos_id: src_codec.bos_id, codec.eos_id: src_codec.eos_id, codec.pad_id: src_codec.pad_id}
    if codec.tok.unk_token_id is not None and old.unk_token_id is not None:
        roles[codec.tok.unk_token_id] = old.unk_token_id
    old_vocab = old.get_vocab()
    unk = {old.unk_token_id}
    counts = {"special": 0, "same": 0, "pieces": 0, "mean": 0}
    rows: list[list[int]] = []
    for t, piece in enumerate(codec.tok.convert_ids_to_tokens(list(range(len(codec))))):
        piece = str(piece or "")
        if t in roles:
            rows.append([roles[t]])
            counts["special"] += 1
        elif (key := _upper(piece)) in old_vocab and old_vocab[key] not in unk:
            rows.append([old_vocab[key]])
            counts["same"] += 1
        else:
            text = _strip_marker(piece)
            ids = [i for i in src_codec.encode(text.upper()) if i not in unk] if text else []
            rows.append(ids)
            counts["pieces" if ids else "mean"] += 1
    return rows, counts


def _upper(piece: str) -> str:
    """The plain vocabulary's form of a token: its text in upper case with its end-of-word suffix (``"the</w>"`` ->
    ``"THE</w>"``), a twin as its word-final token (``"lo</m>"`` -> ``"LO</w>"``)."""
    piece = _as_final(piece)
    return piece[: -len(EOW)].upper() + EOW if piece.endswith(EOW) else piece.upper()


@torch.no_grad()
def map_rows(new: torch.Tensor, old: torch.Tensor, rows: list[list[int]]) -> None:
    """``new[t] = old[rows[t]].mean(0)`` (the mean of all of ``old``'s rows where ``rows[t]`` is empty)."""
    mean = old.mean(0)
    for t, ids in enumerate(rows[: new.shape[0]]):
        new[t] = old[ids].mean(0) if ids else mean


def transfer_vocabulary(src_llm: nn.Module, src_codec: TextCodec, llm: nn.Module, codec: TextCodec) -> dict[str, int]:
    """Start ``llm`` (the same architecture, the vocabulary of ``codec``) from ``src_llm`` (``src_codec``'s): every
    weight is copied except the input and output embeddings, whose rows are made per token of the new vocabulary:

    - special tokens (BOS, EOS, pad, unknown): the old one of the same role;
    - a token the old vocabulary has in upper case (``"the</w>"`` -> ``"THE</w>"``; a twin ``"the</m>"`` as its
      word-final token): its row, so cased text starts
      where the plain model's words are;
    - else the mean of the rows of the old tokenizer's tokens for the token's text in upper case (``"Hel"`` ->
      ``"HEL"``), unknown tokens left out;
    - else (punctuation, which a plain vocabulary has no token for) the mean of all old rows.

    Used when a model that writes formatted text starts from a plain model's decoder (``model.init_decoder_from`` with
    a ``model.tokenizer`` of its own). Returns how many tokens each rule made."""
    src, dst = base_model(src_llm), base_model(llm)
    old_in, old_out = src.get_input_embeddings().weight, src.get_output_embeddings().weight
    state = {k: v for k, v in src.state_dict().items() if v.shape == dst.state_dict()[k].shape}
    missing, _ = dst.load_state_dict(state, strict=False)
    vocab_keys = {k for k in dst.state_dict() if k not in state}
    if set(missing) != vocab_keys or len(vocab_keys) > 2:
        raise ValueError(f"cannot transfer the decoder: weights other than the embeddings differ ({sorted(vocab_keys)})")
    rows, counts = vocabulary_rows(src_codec, codec)
    for new, weight in ((dst.get_input_embeddings().weight, old_in), (dst.get_output_embeddings().weight, old_out)):
        map_rows(new, weight, rows)
    return counts


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

TINY_PHI3 = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=4096, rope_theta=10000.0)


def pin_rope_factors(conf):
    """Longrope checkpoints (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini): one set of RoPE factors per model.

    transformers rotates with the ``short_factor`` set when the largest position *in a call* is below
    ``original_max_position_embeddings`` and with ``long_factor`` otherwise. A training forward sees the
    whole utterance in one call while streaming makes many small calls, so past that threshold the two
    would rotate the same position differently (streaming != training). We pin the short factors, always
    (``long_factor := short_factor`` in the config; the attention scaling, computed from the length ratio,
    is unchanged): they are what the checkpoint runs every input shorter than the threshold with (4096
    positions for these models, about 5 minutes of audio at 12.5 source embeddings per second), so every
    utterance a speech recipe trains and streams on behaves exactly as transformers would run it; only
    positions past the threshold now extrapolate with the short factors instead of switching the whole
    call to the long ones. Streams longer than that are better segmented (``mic`` cuts at pauses / 30 s).
    Other rope types are left alone: their frequencies do not depend on the call.
    """
    rope = getattr(conf, "rope_parameters", None) or {}
    if rope.get("rope_type") == "longrope" and rope.get("short_factor") is not None:
        conf.rope_parameters = {**rope, "long_factor": list(rope["short_factor"])}
    return conf


def build_decoder(cfg: DecoderConfig, codec: TextCodec | None = None) -> tuple[nn.Module, TextCodec]:
    """Return (Phi3ForCausalLM, codec). Pretrained when ``cfg.name_or_path`` is set, else from ``cfg.tiny``."""
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    if cfg.dtype not in _DTYPES:
        raise ValueError(f"decoder dtype {cfg.dtype!r} is not one of {sorted(_DTYPES)}")
    if cfg.name_or_path:
        try:
            if codec is None:
                codec = TextCodec(AutoTokenizer.from_pretrained(cfg.name_or_path))
            conf = pin_rope_factors(Phi3Config.from_pretrained(cfg.name_or_path))
            llm = Phi3ForCausalLM.from_pretrained(cfg.name_or_path, config=conf, attn_implementation="sdpa",
                                                  dtype=_DTYPES[cfg.dtype])
        except OSError as e:
            raise ValueError(f"{cfg.name_or_path}: cannot load a Phi-3 model ({str(e).splitlines()[0]})") from None
    else:
        if codec is None:
            raise ValueError("a decoder built from a tiny config needs a tokenizer (train one with train_bpe)")
        kwargs = {**TINY_PHI3, **cfg.tiny}
        conf = pin_rope_factors(Phi3Config(vocab_size=len(codec), pad_token_id=codec.pad_id, bos_token_id=codec.bos_id,
                                           eos_token_id=codec.eos_id, **kwargs))
        conf._attn_implementation = "sdpa"
        llm = Phi3ForCausalLM(conf)
    if len(codec) > llm.config.vocab_size:
        raise ValueError(f"tokenizer has {len(codec)} tokens but the model only {llm.config.vocab_size}")
    if cfg.freeze:
        llm.requires_grad_(False)
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
        llm = get_peft_model(llm, lcfg)
    return llm, codec


def base_model(llm: nn.Module) -> nn.Module:
    """The Phi3ForCausalLM under an optional peft wrapper."""
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def embed_tokens(llm: nn.Module) -> nn.Module:
    return base_model(llm).get_input_embeddings()


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    return base_model(llm).model.layers


@functools.cache
def _growing_layer_class():
    """Built on first use: transformers is imported lazily, as everywhere in this module."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A full (never sliding) KV layer that appends into spare capacity instead of re-concatenating.

        ``DynamicLayer`` copies the whole cache on every append (O(length) per call, O(length^2) per stream);
        here (:func:`asr_stream.kv.append_kv`) the storage doubles when full, so an append copies only the new
        slots. ``keys`` / ``values`` stay plain tensors (views of the storage); anything that replaces them
        (``cache_keep``, batch row edits) simply makes the next append start a new storage from them.
        """

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            empty = not self.keys.numel()
            self.keys, self._kbuf = append_kv(None if empty else self.keys, key_states, getattr(self, "_kbuf", None))
            self.values, self._vbuf = append_kv(None if empty else self.values, value_states, getattr(self, "_vbuf", None))
            return self.keys, self.values

    return GrowingLayer


def new_cache(llm: nn.Module):
    """An empty KV cache for streaming: every layer keeps every slot (our masks decide what is seen).

    A checkpoint's ``sliding_window`` (Phi-3-mini-4k has 2047) would make transformers build sliding layers
    that silently drop old slots, while our explicit masks (training and streaming) let every slot be seen;
    so the cache is always full-length. Bound memory with the session's segmentation / ``reset`` instead.
    """
    from transformers import DynamicCache

    layer = _growing_layer_class()
    cache = DynamicCache()  # no config: no sliding layers
    cache.layer_class_to_replicate = layer
    cache.layers = [layer() for _ in range(base_model(llm).config.num_hidden_layers)]
    return cache


def run(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache=None,
        last_only: bool = False) -> torch.Tensor:
    """One decoder forward. embeds (B, Q, H); mask (B, Q, K) additive float with K = cached + Q;
    positions (B, Q) float. Appends to ``cache`` when given. Returns logits (B, Q, V), or (B, 1, V) for the
    last row only with ``last_only`` (the LM head then runs on one row: all a streaming step consumes)."""
    out = llm(inputs_embeds=embeds, attention_mask=mask[:, None].to(embeds.dtype), position_ids=positions.to(torch.float32),
              cache=cache, use_cache=cache is not None, logits_to_keep=1 if last_only else 0)
    return out.logits


def cache_keep(cache, keep: torch.Tensor) -> None:
    """Keep only the slots ``keep`` (1-D index tensor) of every layer of a DynamicCache, in place."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(2, keep.to(layer.keys.device))
            layer.values = layer.values.index_select(2, keep.to(layer.values.device))


def cache_length(cache) -> int:
    return cache.get_seq_length() if cache is not None else 0
