"""Formatted (cased, punctuated) targets: the wait-k unit is the word with its punctuation, in the tokenizer, the
training layout and the streaming session alike; streaming == training forward with punctuated targets."""

from dataclasses import replace

import pytest
import torch

from asr_stream.decoder import train_bpe
from asr_stream.groups import units_done
from asr_stream.model import SpeechLLM
from asr_stream.presets import test_sized

from ..conftest import TOL, noise_audio
from .test_streaming import assert_streams_like_training, forward_logits, stream_logits

FORMATTED = [
    "The quick brown fox jumps over the lazy dog.",
    "Streaming speech recognition, with large language models!",
    "Is nothing ever encoded twice?",
    "A small model, for fast tests.",
    "Don't wait for the whole sentence, Bob.",
]
# a mark standing alone between spaces: no unit of its own (it joins the next word's unit)
LOOSE = "Hello , world . Is nothing ever encoded twice ?"


@pytest.fixture(scope="module")
def fcodec():
    """An end-of-word BPE trained on cased, punctuated text (small: most words span several tokens)."""
    return train_bpe(FORMATTED * 4 + [LOOSE], vocab_size=90)


@pytest.fixture(scope="module")
def fmodel(fcodec):
    torch.manual_seed(0)
    return SpeechLLM(replace(test_sized(160), text_format="formatted"), fcodec).eval()


def test_a_word_with_its_punctuation_is_one_unit(fcodec):
    for text in FORMATTED:
        ids = fcodec.encode(text)
        assert fcodec.decode(ids) == text  # case and punctuation survive the tokenizer
        assert sum(fcodec.boundaries(ids)) == len(text.split())  # "dog." "models!" "twice?": one unit each
        assert fcodec.boundaries(ids)[-1]  # the full stop finishes its word: no unit after it
    assert any(t in (",</w>", ".</w>", "?</w>", "!</w>") for t in fcodec.tok.convert_ids_to_tokens(fcodec.encode(FORMATTED[1])))


def sentencepiece_style(texts, vocab_size: int):
    """A SentencePiece-style BPE ("▁" before every word, as Phi-3's) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from asr_stream.decoder import TextCodec

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                       show_progress=False))
    return TextCodec(PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                             unk_token="<unk>"))


def test_a_mark_standing_alone_is_no_unit(fcodec):
    ids = fcodec.encode(LOOSE)
    pieces = fcodec.tok.convert_ids_to_tokens(ids)
    alone = [i for i, p in enumerate(pieces) if p in (",</w>", ".</w>", "?</w>")]
    assert len(alone) == 3
    flags = fcodec.boundaries(ids)
    assert not any(flags[i] for i in alone)
    assert sum(flags) == len([w for w in LOOSE.split() if w not in ",.?"])
    # prefix style (SentencePiece "▁."): a mark with a word-start marker continues the word before it
    sp_codec = sentencepiece_style(FORMATTED * 4 + [LOOSE] * 40, 200)
    assert sp_codec.style == "prefix"
    sp = sp_codec.encode(LOOSE)
    sp_pieces = sp_codec.tok.convert_ids_to_tokens(sp)
    assert {"▁,", "▁.", "▁?"} <= set(sp_pieces)
    assert sp_codec.boundaries(sp) == [p.startswith("▁") and p not in ("▁,", "▁.", "▁?") for p in sp_pieces]
    assert sum(sp_codec.boundaries(sp_codec.encode(FORMATTED[1]))) == len(FORMATTED[1].split())
    # an opening quote with its word-start marker: the word after it starts the unit ('"Hello' is one unit)
    quotes = [f'He said "{w} there" to me.' for w in ("Hello", "Bye", "Stop", "Wait", "Run", "Go", "No", "Yes")]
    quoted = sentencepiece_style(FORMATTED * 4 + quotes * 4, 110)
    ids = quoted.encode('He said "Hello there" to me.')
    assert '▁"' in quoted.tok.convert_ids_to_tokens(ids)
    assert sum(quoted.boundaries(ids)) == 6


@pytest.mark.parametrize("text", [FORMATTED[1], LOOSE])
@pytest.mark.parametrize("mode,k,phi", [("group", 1, 0.5), ("group", 3, 0.0), ("interleaved", 2, 0.0)])
def test_punctuated_streaming_equals_training_forward(fmodel, fcodec, text, mode, k, phi):
    wave = noise_audio(2.2, seed=21)
    tokens = fcodec.encode(text)
    s = assert_streams_like_training(fmodel, wave, tokens, len(fcodec), mode=mode, k=k, phi=phi)
    # the session's units are the training layout's, and its words carry their marks
    assert s.state.units == units_done(fcodec.boundaries(tokens))[-1]
    words = [w.text for w in s.words]
    if text == LOOSE:  # a loose mark is written at the start of the next word (the last one: alone, at the end)
        assert words == ["Hello", ", world", ". Is", "nothing", "ever", "encoded", "twice", "?"]
    else:
        assert words == text.split()


QUOTED = 'He said "Hello there" , to me .'  # an opening quote, and loose marks, with a word-start tokenizer


@pytest.fixture(scope="module")
def sp_formatted():
    quotes = [f'He said "{w} there" to me.' for w in ("Hello", "Bye", "Stop", "Wait", "Run", "Go", "No", "Yes")]
    codec = sentencepiece_style(FORMATTED * 4 + quotes * 4 + [LOOSE] * 20, 130)
    torch.manual_seed(1)
    return codec, SpeechLLM(replace(test_sized(160), text_format="formatted"), codec).eval()


@pytest.mark.parametrize("mode,k", [("group", 1), ("interleaved", 2)])
def test_word_start_punctuated_streaming_equals_training_forward(sp_formatted, mode, k):
    codec, model = sp_formatted
    tokens = codec.encode(QUOTED)
    pieces = codec.tok.convert_ids_to_tokens(tokens)
    assert {'▁"', "▁,", "▁."} <= set(pieces)
    assert sum(codec.boundaries(tokens)) == 6  # He, said, "Hello, there", to, me (the loose marks join their words)
    wave = noise_audio(2.2, seed=22)
    full = forward_logits(model, wave, tokens, mode=mode, k=k)
    streamed, s = stream_logits(model, wave, tokens, 1000, mode=mode, k=k)
    assert (streamed - full).abs().max().item() <= TOL
    assert s.state.units == 6
    # a word is shown when the next one starts; an opening quote is written before its word starts, so it is shown
    # with the word before it (its unit, for the schedule, is the next word's)
    assert [w.text for w in s.words] == ["He", 'said "', "Hello", 'there" ,', "to", "me ."]


# -- a cased vocabulary made from a plain one (cased_vocabulary): the plain model's cut of every word is kept -------

def plain_words(text: str) -> str:
    return " ".join("".join(c for c in w if c.isalpha() or c == "'").upper() for w in text.split())


@pytest.fixture(scope="module")
def cased():
    from asr_stream.decoder import cased_vocabulary

    plain = train_bpe([plain_words(t) for t in FORMATTED * 4], vocab_size=80)
    return plain, cased_vocabulary(plain)


def test_a_cased_vocabulary_keeps_the_plain_cut_and_ends_each_unit_at_its_mark(cased, tmp_path):
    from asr_stream.decoder import TextCodec, vocabulary_rows

    plain, codec = cased
    rows, counts = vocabulary_rows(plain, codec)
    pieces = codec.tok.convert_ids_to_tokens(list(range(len(codec))))
    # only marks and letter forms the plain vocabulary lacks start new (its every token is there in two cases)
    assert counts["pieces"] == 0 and counts["same"] >= 2 * (len(plain) - 4)
    assert all(len(p.replace("</w>", "").replace("</m>", "")) == 1 for p, r in zip(pieces, rows) if not r)
    codec.save(tmp_path / "tok")
    loaded = TextCodec.load(tmp_path / "tok")
    for c in (codec, loaded):
        for text in FORMATTED + ["NASA's Bob, the students' books?"]:
            ids = c.encode(text)
            assert c.decode(ids) == text and c.tok.unk_token_id not in ids
            flags = c.boundaries(ids)
            assert sum(flags) == len(text.split()) and flags[-1]  # "dog." is one unit, ended by its full stop
            # every word of letters is cut where the plain tokenizer cuts it in upper case, row for row
            letters = [t for t in ids if rows[t] != []]
            if text in FORMATTED:
                assert [rows[t] for t in letters] == [[t] for t in plain.encode(plain_words(text))]


@pytest.mark.parametrize("mode,k,phi", [("group", 1, 0.5), ("group", 3, 0.0), ("interleaved", 2, 0.0)])
def test_cased_vocabulary_streaming_equals_training_forward(cased, mode, k, phi):
    _, codec = cased
    torch.manual_seed(2)
    model = SpeechLLM(replace(test_sized(160), text_format="formatted"), codec).eval()
    text = FORMATTED[4]
    tokens = codec.encode(text)
    s = assert_streams_like_training(model, noise_audio(2.2, seed=23), tokens, len(codec), mode=mode, k=k, phi=phi)
    assert s.state.units == len(text.split())
    assert [w.text for w in s.words] == text.split()  # "Don't", "sentence,", "Bob.": each word with its mark


def test_a_cased_vocabulary_mends_a_twin_without_its_mark_and_a_loose_mark(cased):
    """What a model may write, made readable by decode (the tokens, units and times stay as written): a twin that no
    mark follows ends its word ("person who", not "personwho"), and a mark written as a word of its own after a word
    stands against that word ("thought, if", not "thought , if")."""
    _, codec = cased
    ids = codec.encode("Don't wait, Bob.")
    twin = codec._twin
    end = codec.boundaries(ids).index(True)  # "Don't"'s last token
    glued = [twin[t] if i == end else t for i, t in enumerate(ids)]  # written in its twin form, then "wait"
    assert codec.decode(glued) == "Don't wait, Bob." and glued != ids
    loose = codec.encode("Don't wait , Bob .")  # the marks as words of their own: a final form, then the mark
    assert [t for t in loose if t not in twin.values()] == loose  # no twin in it
    assert codec.decode(loose) == "Don't wait, Bob."
    # a whole transcript of twins with nothing after them: words, not one glued string
    assert codec.decode([twin.get(t, t) for t in codec.encode("the quick fox")]) == "the quick fox"
