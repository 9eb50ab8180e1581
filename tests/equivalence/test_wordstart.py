"""Wait-k with a word-start tokenizer (SentencePiece "▁", as Phi-3's): the end of a word is only known when
the next word starts, so the first token of word j sees exactly k + j chunks and its later tokens one
chunk more (groups.py). Checked on the training layout's mask, on the streaming session's logits (which
audio changes them), and streaming == training forward.

The tokenizer here marks every word, the first one included, with "▁" (SentencePiece's behaviour).
"""

import numpy as np
import pytest
import torch

from asr_stream.decoder import TextCodec
from asr_stream.groups import AUDIO, TARGET, allowed, training_layout, units_done
from asr_stream.model import SpeechLLM
from asr_stream.presets import test_sized

from ..conftest import SENTENCES, TOL, noise_audio
from .test_streaming import assert_streams_like_training, stream_logits

TEXT = SENTENCES[0]  # 9 words


@pytest.fixture(scope="module")
def sp_codec() -> TextCodec:
    """A small SentencePiece-style BPE: Metaspace pre-tokenizer, "▁" prepended to every word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(SENTENCES * 4, trainers.BpeTrainer(vocab_size=70, special_tokens=specials, show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return TextCodec(fast)


@pytest.fixture(scope="module")
def sp_model(sp_codec) -> SpeechLLM:
    torch.manual_seed(0)
    return SpeechLLM(test_sized(160), sp_codec).eval()


def words_of_tokens(codec: TextCodec, text: str) -> tuple[list[int], list[int], list[bool]]:
    """Tokens of ``text``, the word each belongs to, and whether it is its word's first token. Found by
    encoding word by word (not from the codec's boundary flags, which are what is under test)."""
    tokens, word, first = [], [], []
    for j, w in enumerate(text.split()):
        ids = codec.encode(w)
        tokens += ids
        word += [j] * len(ids)
        first += [True] + [False] * (len(ids) - 1)
    assert tokens == codec.encode(text)
    return tokens, word, first


def expected_visibility(k: int, N: int, word: list[int], first: list[bool]) -> list[int]:
    """Per target row (row i predicts y_i; the last row predicts EOS): chunks it may see."""
    vis = [min(k + j + (0 if f else 1), N) for j, f in zip(word, first)]
    return vis + [min(k + word[-1] + 1, N)]  # EOS: after the last word has started


def test_tokenizer_is_word_start_style(sp_codec):
    tokens, word, first = words_of_tokens(sp_codec, TEXT)
    assert sp_codec.style == "prefix"
    assert sp_codec.boundaries(tokens) == first
    assert sum(not f for f in first) >= 5  # several words span more than one token
    assert sp_codec.decode(tokens) == TEXT


@pytest.mark.parametrize("k", [1, 3])
def test_training_layout_gives_first_tokens_k_plus_j_and_the_rest_one_more(sp_codec, k):
    tokens, word, first = words_of_tokens(sp_codec, TEXT)
    N, E, P = 12, 2, 1
    els = training_layout("group", P, N, E, units_done(sp_codec.boundaries(tokens)), k, 0.5)
    ok = allowed("group", els, els)
    for row, want in enumerate(expected_visibility(k, N, word, first)):
        q = torch.nonzero((els.kind == TARGET) & (els.index == row)).item()
        seen = {int(c) for c in els.chunk[ok[q] & (els.kind == AUDIO)]}
        assert seen == set(range(want)), (row, want)


@pytest.mark.parametrize("mode,k,phi", [("group", 1, 0.5), ("group", 3, 0.0), ("interleaved", 2, 0.0)])
def test_word_start_streaming_equals_training_forward(sp_model, sp_codec, mode, k, phi):
    wave = noise_audio(1.9, seed=11)
    tokens = sp_codec.encode(TEXT)
    s = assert_streams_like_training(sp_model, wave, tokens, len(sp_codec), mode=mode, k=k, phi=phi)
    assert [w.text for w in s.words] == TEXT.split()  # words are flushed when the next one starts


@pytest.mark.parametrize("k", [1, 2])
def test_streaming_rows_see_exactly_their_chunks(sp_model, sp_codec, k):
    """Perturbing audio: a row's logits change when its last visible chunk changes and never when later
    chunks do. First tokens of word j: k + j chunks; later tokens of word j: k + j + 1."""
    model = sp_model
    cs = model.chunk_samples
    N = 14
    wave = noise_audio(N * cs / 16000, seed=12)
    tokens, word, first = words_of_tokens(sp_codec, TEXT)
    vis = expected_visibility(k, N, word, first)
    base, _ = stream_logits(model, wave, tokens, 2000, mode="group", k=k)
    rng = np.random.default_rng(0)
    checked = 0
    for v in sorted(set(vis)):
        if v >= N:
            break
        rows = [i for i, w in enumerate(vis) if w == v]
        later = wave.copy()
        later[v * cs :] = 0.2 * rng.standard_normal(len(wave) - v * cs).astype(np.float32)
        changed, _ = stream_logits(model, later, tokens, 2000, mode="group", k=k)
        assert torch.equal(changed[rows], base[rows]), f"rows {rows} saw audio after chunk {v - 1}"
        last = wave.copy()
        last[(v - 1) * cs : v * cs] *= -3.0
        changed, _ = stream_logits(model, last, tokens, 2000, mode="group", k=k)
        for r in rows:
            assert (changed[r] - base[r]).abs().max().item() > 100 * TOL, f"row {r} did not see chunk {v - 1}"
        checked += len(rows)
    assert checked >= len(tokens) // 2
    assert any(not f for f, v in zip(first, vis) if v < N)  # continuation tokens were among the checked rows
