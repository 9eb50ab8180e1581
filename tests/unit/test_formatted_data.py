"""Formatted text through the data layer and training: the corpus keeps it, readers expose it, an older corpus gets it
from its plan again, training takes it as targets (one switch: model.model.text_format), and a tokenizer is trained on
it."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from asr_stream import corpus
from asr_stream.corpus.formatted import add_formatted_text
from asr_stream.corpus.synth import _write_transcripts
from asr_stream.data import DataError, Utterance, read_librispeech, read_manifest, write_manifest
from asr_stream.evaluation.wer import normalize_text
from asr_stream.presets import test_sized

from ..conftest import noise_audio

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, she says.",
    "Is a visit to a strange place bringing fresh work?",
    "Never put off until tomorrow what you can do today!",
    "All that glitters is not gold; they say.",
    "Time flies like an arrow, Bob said, fruit flies like a banana.",
]
SETTINGS = {"seed": 7, "num_dev": 1, "num_test": 1, "voices": ["en-us", "en-gb"], "unseen_voice": "en-us+f3",
            "min_train_vocab": 0, "snr_db": 30.0, "train_voices": ["en-us", "en-gb"], "espeak_ng": "1.51"}


@pytest.mark.parametrize("raw,formatted", [
    ("\"Well, I don't know; ask the long-forgotten one,\" she said!",
     "Well, I don't know, ask the long forgotten one, she said!"),
    ("Is it `true' -- or not?", "Is it true, or not?"),
    ("A visit to a strange place will bring fresh work", "A visit to a strange place will bring fresh work."),
    ("NASA sent John to Mars.", "NASA sent John to Mars."),
])
def test_a_sentence_keeps_its_case_and_marks_in_its_words(raw, formatted):
    s = corpus.clean_sentence(raw)
    assert s.formatted == formatted
    assert s.spoken == formatted.lower()  # espeak-ng is given the same marks: the audio's prosody matches the target
    assert normalize_text(s.formatted).upper() == s.text
    assert all(any(c.isalpha() for c in w) for w in s.formatted.split())  # every unit holds a word


def write_old_corpus(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A corpus laid out as the synthesis tool writes it (transcripts from its plan, short noise as audio: no
    speech engine needed), with its formatted.txt files removed as a corpus made before them lacks them; returns
    the text file and the formatted files the writer wrote."""
    text = root / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    out = root / "corpus"
    settings = {**SETTINGS, "text_file": str(text)}
    from asr_stream.corpus.formatted import settings_from_json

    (root / "synth_config.json").write_text(json.dumps(settings))
    cfg, voices = settings_from_json(root / "synth_config.json", out)
    plan = corpus.plan_corpus(cfg, corpus.load_sentences(cfg), voices)
    _write_transcripts(out, plan)
    for i, p in enumerate(plan):
        sf.write(p.audio_path(out), noise_audio(0.3, seed=i), 16000)
    written = {}
    for f in sorted(out.rglob("*.formatted.txt")):
        written[str(f.relative_to(out))] = f.read_bytes()
        f.unlink()
    (out / "synth_config.json").write_text(json.dumps(settings))
    return text, written


def test_the_writer_and_the_reader_keep_the_formatted_text(tmp_path):
    _, written = write_old_corpus(tmp_path)
    assert len(written) == len(list((tmp_path / "corpus").rglob("*.trans.txt")))
    for name, data in written.items():  # put them back: the corpus as the tool now writes it
        (tmp_path / "corpus" / name).write_bytes(data)
    utts = read_librispeech(tmp_path / "corpus", corpus.SPLITS)
    assert {u.formatted for u in utts} == {s.replace(";", ",") for s in SENTENCES}  # ";" is spoken as ","
    for u in utts:
        assert normalize_text(u.formatted).upper() == u.text
        assert u.target("formatted") == u.formatted and u.target("plain") == u.text
    # a formatted line whose words are not the transcript's is refused, naming the line
    f = next((tmp_path / "corpus").rglob("*.formatted.txt"))
    uid = f.read_text().split()[0]
    f.write_text(f"{uid} Something else entirely.\n")
    with pytest.raises(DataError, match=r"formatted.txt:1: words of .* differ from its transcript"):
        read_librispeech(tmp_path / "corpus", corpus.SPLITS)


def test_without_formatted_text_the_reader_falls_back_to_the_transcript(tmp_path):
    write_old_corpus(tmp_path)
    utts = read_librispeech(tmp_path / "corpus", "train")
    assert all(u.formatted is None and u.target("formatted") == u.text for u in utts)
    with pytest.raises(ValueError, match="unknown text format"):
        utts[0].target("cased")


def test_a_manifest_carries_the_formatted_text(tmp_path):
    p = tmp_path / "a.flac"
    sf.write(p, noise_audio(0.3), 16000)
    utts = [Utterance("a", p, "HELLO WORLD", 0.3, formatted="Hello, world."), Utterance("b", p, "HI THERE", 0.3)]
    back = read_manifest(write_manifest(utts, tmp_path / "m.jsonl"))
    assert [u.formatted for u in back] == ["Hello, world.", None]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio_filepath": "a.flac", "duration": 0.3, "text": "A",
                                                    "formatted": 3}) + "\n")
    with pytest.raises(DataError, match="'formatted' must be a string"):
        read_manifest(tmp_path / "bad.jsonl")


def test_an_older_corpus_gets_its_formatted_text_from_its_plan(tmp_path):
    _, written = write_old_corpus(tmp_path)
    root = tmp_path / "corpus"
    r = add_formatted_text(root, check_only=True)
    assert (r.chapters, r.utterances, r.written) == (len(written), 7, 0) and not list(root.rglob("*.formatted.txt"))
    r = add_formatted_text(root)
    assert r.written == len(written)
    assert {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*.formatted.txt")} == written
    with pytest.raises(corpus.SynthError, match="exists"):
        add_formatted_text(root)
    assert add_formatted_text(root, overwrite=True).written == len(written)
    # a transcript the plan does not give: these settings did not make the corpus, and nothing is written
    for f in root.rglob("*.formatted.txt"):
        f.unlink()
    trans = sorted(root.rglob("*.trans.txt"))[-1]
    uid = trans.read_text().split()[0]
    trans.write_text(trans.read_text().replace(trans.read_text().splitlines()[0], f"{uid} SOME OTHER WORDS"))
    with pytest.raises(corpus.SynthError, match="did not make the corpus; nothing written"):
        add_formatted_text(root)
    assert not list(root.rglob("*.formatted.txt"))


def test_the_tool_says_what_is_wrong_in_one_line(tmp_path, capsys):
    import importlib.util

    tool_file = Path(__file__).resolve().parents[2] / "tools" / "corpus" / "add_formatted_text.py"
    spec = importlib.util.spec_from_file_location("aft", tool_file)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)  # type: ignore[union-attr]
    assert tool.main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"add_formatted_text: error: {tmp_path / 'nowhere'}: no such corpus folder"
    write_old_corpus(tmp_path)
    assert tool.main([str(tmp_path / "corpus"), "--check"]) == 0
    assert "7 utterances in" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def formatted_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmt")
    utts = []
    for i, text in enumerate(SENTENCES * 2):
        p = root / f"u{i}.flac"
        sf.write(p, noise_audio(0.5 + 0.1 * (i % 3), seed=i), 16000)
        utts.append(Utterance(f"u{i}", p, normalize_text(text).upper(), 0.5 + 0.1 * (i % 3), formatted=text))
    return root, write_manifest(utts, root / "train.jsonl"), utts


def test_the_dataset_gives_the_targets_asked_for(formatted_manifest):
    from asr_stream.training.data import UtteranceDataset

    _, _, utts = formatted_manifest
    assert UtteranceDataset(utts, targets="formatted")[2][1] == SENTENCES[2]
    assert UtteranceDataset(utts)[2][1] == normalize_text(SENTENCES[2]).upper()


def test_a_formatted_model_trains_with_context_lists_of_its_own_spelling(formatted_manifest):
    """Context lists for formatted targets are drawn from the formatted text: the words as written (case kept, no
    marks), never the upper-case transcript's."""
    from asr_stream.training.datamodule import SpeechDataModule

    _, manifest, _ = formatted_manifest
    dm = SpeechDataModule(train=[str(manifest)], max_batch_seconds=4.0, num_workers=0, targets="formatted",
                          context={"prob": 1.0, "distractor_only_prob": 0.0, "rare_rank": 5, "distractors": [1, 3]})
    dm.setup("fit")
    written = {w.strip(".,;!?") for t in SENTENCES for w in t.split()}
    lists = [ctx for b in dm.train_dataloader() for ctx in b.contexts]
    assert len(lists) == 2 * len(SENTENCES) and all(lists)
    assert all(w in written for ctx in lists for w in ctx), lists  # "dog" and "Bob", not "DOG" nor "dog."
    assert any(w[0].isupper() for ctx in lists for w in ctx)  # case kept where the text has it


def test_formatted_targets_need_formatted_text(tmp_path):
    from asr_stream.training.datamodule import SpeechDataModule

    p = tmp_path / "a.flac"
    sf.write(p, noise_audio(0.3), 16000)
    m = write_manifest([Utterance("a", p, "HELLO WORLD", 0.3)], tmp_path / "m.jsonl")
    dm = SpeechDataModule(train=[str(m)], num_workers=0, targets="formatted")
    with pytest.raises(ValueError, match="no formatted text for 'a'"):
        dm.setup("fit")
    SpeechDataModule(train=[str(m)], num_workers=0).setup("fit")  # plain targets: fine
    with pytest.raises(ValueError, match="data.targets must be one of plain, formatted"):
        SpeechDataModule(train=[str(m)], num_workers=0, targets="cased")


def test_prepare_trains_the_tokenizer_on_formatted_text(formatted_manifest, tmp_path):
    from asr_stream.decoder import TextCodec
    from asr_stream.training.prepare import prepare

    _, manifest, _ = formatted_manifest
    prepare([str(manifest)], str(tmp_path / "prep"), vocab_size=120, stats_utterances=2, text_format="formatted")
    codec = TextCodec.load(tmp_path / "prep" / "tokenizer")
    for text in SENTENCES:
        ids = codec.encode(text)
        assert codec.decode(ids) == text and codec.tok.unk_token_id not in ids
        assert sum(codec.boundaries(ids)) == len(text.split())
    prepare([str(manifest)], str(tmp_path / "plain"), vocab_size=120, stats_utterances=2)
    plain = TextCodec.load(tmp_path / "plain" / "tokenizer")
    assert plain.decode(plain.encode(SENTENCES[0])) != SENTENCES[0]  # an upper-case tokenizer cannot write it


def test_a_formatted_models_context_keeps_its_case(formatted_manifest, tmp_path):
    """A context list is tokenised as the model writes: as given for a cased (formatted) tokenizer, upper case for an
    upper-case one."""
    from asr_stream.context import context_ids
    from asr_stream.decoder import TextCodec
    from asr_stream.training.prepare import prepare

    _, manifest, _ = formatted_manifest
    for fmt, want in (("formatted", "Bob"), ("plain", "BOB")):
        prepare([str(manifest)], str(tmp_path / fmt), vocab_size=120, stats_utterances=2, text_format=fmt)
        codec = TextCodec.load(tmp_path / fmt / "tokenizer")
        ids = context_ids(codec, ["Bob", "sea shore"])
        assert codec.decode(ids[: ids.index(codec.eos_id)]) == want


def test_a_feature_cache_of_other_targets_is_refused(tmp_path):
    """The cache holds the transcripts: one made for formatted targets is refused by a plain training and the other
    way round (a cache written before targets were recorded is a plain one)."""
    from asr_stream.training.features import META, check_cache

    plain = {"train": ["x"], "seed": 0, "dtype": "float32"}
    for have, want in ((plain, {**plain, "targets": "formatted"}), ({**plain, "targets": "formatted"}, plain)):
        (tmp_path / META).write_text(json.dumps({**have, "epochs": 1}))
        with pytest.raises(ValueError, match="'targets' differs"):
            check_cache(tmp_path, want)
    (tmp_path / META).write_text(json.dumps({**plain, "epochs": 1}))
    check_cache(tmp_path, plain)


def test_one_switch_trains_a_formatted_model(formatted_manifest, tmp_path, capsys):
    """model.model.text_format: formatted gives the data module formatted targets (linked), and the exported model
    records its text format: a few steps of a tiny model through the training command."""
    from asr_stream.decoder import train_bpe
    from asr_stream.model import SpeechLLM
    from asr_stream.training.cli import TrainCLI, main
    from asr_stream.training.datamodule import SpeechDataModule
    from asr_stream.training.module import SpeechLLMModule

    _, manifest, _ = formatted_manifest
    train_bpe(SENTENCES * 3, 120).save(tmp_path / "tok")
    model = asdict(replace(test_sized(160), text_format="formatted"))
    model["train_k"] = list(model["train_k"])
    conf = {"trainer": {"accelerator": "cpu", "max_steps": 2, "logger": False, "default_root_dir": str(tmp_path),
                        "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False},
            "model": {"model": model, "tokenizer": str(tmp_path / "tok"), "warmup_steps": 1, "decay_steps": 4,
                      "export_dir": str(tmp_path / "model")},
            "data": {"train": [str(manifest)], "num_workers": 0, "max_batch_seconds": 2.0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    cli = TrainCLI(SpeechLLMModule, SpeechDataModule, run=False, args=["--config", str(tmp_path / "c.yaml")])
    assert cli.datamodule.targets == "formatted"
    main(["fit", "--config", str(tmp_path / "c.yaml")])
    m = SpeechLLM.load(tmp_path / "model")
    assert m.cfg.text_format == "formatted"
    assert json.loads((tmp_path / "model" / "config.json").read_text())["text_format"] == "formatted"


def upper_twins(new, codec) -> list[tuple[int, int]]:
    """(token of ``new``, token of ``codec``) for every non-special token whose upper case ``codec`` has."""
    old_vocab = codec.tok.get_vocab()
    pieces = new.tok.convert_ids_to_tokens(list(range(len(new))))
    return [(t, old_vocab[p.upper()]) for t, p in enumerate(pieces) if p.upper() in old_vocab and t > 3]


def test_a_formatted_model_starts_from_a_plain_models_decoder(tmp_path, codec):
    """model.init_decoder_from + model.tokenizer: the plain decoder's weights, its embeddings mapped to the new (cased)
    vocabulary token by token: the rows of tokens it knows in upper case, the mean for punctuation."""
    import torch

    from asr_stream.decoder import EOW, base_model, train_bpe
    from asr_stream.model import SpeechLLM
    from asr_stream.training.module import SpeechLLMModule

    torch.manual_seed(0)
    src = SpeechLLM(test_sized(160), codec)
    src.save(tmp_path / "src")
    new = train_bpe(SENTENCES * 3 + ["THE QUICK BROWN FOX"], 150)
    new.save(tmp_path / "tok")
    mod = SpeechLLMModule(model=replace(test_sized(160), text_format="formatted"), init_decoder_from=str(tmp_path / "src"),
                          tokenizer=str(tmp_path / "tok"))
    net = mod.net
    assert net.codec.decode(net.codec.encode(SENTENCES[1])) == SENTENCES[1]
    old_sd, new_sd = base_model(src.llm).state_dict(), base_model(net.llm).state_dict()
    emb = {k for k in new_sd if old_sd[k].shape != new_sd[k].shape}
    assert emb == {"model.embed_tokens.weight", "lm_head.weight"}
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in new_sd if k not in emb)
    pieces = new.tok.convert_ids_to_tokens(list(range(len(new))))
    same = upper_twins(new, codec)
    marks = [t for t, p in enumerate(pieces) if p in (",", ".", "?", "!", "," + EOW, "." + EOW, "?" + EOW, "!" + EOW)]
    assert len(same) > 20 and marks
    for key in emb:
        for t, o in same:
            assert torch.equal(new_sd[key][t], old_sd[key][o])
        for t in marks:
            assert torch.allclose(new_sd[key][t], old_sd[key].mean(0))
        assert torch.equal(new_sd[key][new.eos_id], old_sd[key][codec.eos_id])


def test_a_formatted_model_starts_from_a_whole_plain_model(tmp_path, codec):
    """model.init_from + model.tokenizer of another vocabulary: the plain model's encoder and projector as they are,
    the decoder's embeddings and the CTC head's rows mapped token by token; so on audio, a cased token the plain
    model knew in upper case gets the same CTC score as that upper-case token did."""
    import torch

    from asr_stream.decoder import base_model, train_bpe
    from asr_stream.model import SpeechLLM
    from asr_stream.training.module import SpeechLLMModule

    torch.manual_seed(0)
    cfg = replace(test_sized(160), ctc_weight=0.5)  # with a CTC head (its rows are per token)
    src = SpeechLLM(cfg, codec)
    src.save(tmp_path / "src")
    src = SpeechLLM.load(tmp_path / "src")
    new = train_bpe(SENTENCES * 3 + ["THE QUICK BROWN FOX"], 150)
    new.save(tmp_path / "tok")
    net = SpeechLLMModule(model=replace(cfg, text_format="formatted"), init_from=str(tmp_path / "src"),
                          tokenizer=str(tmp_path / "tok")).net.eval()
    assert net.cfg.text_format == "formatted" and len(net.codec) == len(new) != len(codec)
    for a, b in ((src.encoder, net.encoder), (src.projector, net.projector)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    same = upper_twins(new, codec)
    assert len(same) > 20
    wave = 0.1 * torch.randn(1, 4 * src.encoder.chunk_samples)
    with torch.no_grad():
        enc_old, enc_new = src.encoder(wave), net.encoder(wave)
        torch.testing.assert_close(enc_old, enc_new)
        old_logits, new_logits = src.ctc_head(enc_old), net.ctc_head(enc_new)
    t_new, t_old = zip(*same)
    torch.testing.assert_close(new_logits[..., list(t_new)], old_logits[..., list(t_old)])
    torch.testing.assert_close(new_logits[..., new.eos_id], old_logits[..., codec.eos_id])
    emb_old, emb_new = base_model(src.llm).get_input_embeddings().weight, base_model(net.llm).get_input_embeddings().weight
    assert all(torch.equal(emb_new[t], emb_old[o]) for t, o in same)
    # the same vocabulary: the folder's weights untouched (no mapping)
    again = SpeechLLMModule(model=cfg, init_from=str(tmp_path / "src"), tokenizer=str(tmp_path / "src")).net
    assert again.ctc_head.weight.shape == src.ctc_head.weight.shape and torch.equal(again.ctc_head.weight, src.ctc_head.weight)


def test_the_formatted_recipe_is_the_whisper_recipe_with_formatted_targets():
    """conf/tiny_synthetic_whisper_formatted.yaml differs from conf/tiny_synthetic_whisper.yaml only in what it is
    taught (text_format, its tokenizer) and where it writes: the plain model is its baseline."""
    root = Path(__file__).resolve().parents[2] / "conf"
    plain = yaml.safe_load((root / "tiny_synthetic_whisper.yaml").read_text())
    fmt = yaml.safe_load((root / "tiny_synthetic_whisper_formatted.yaml").read_text())
    assert fmt["model"]["model"].pop("text_format") == "formatted" and "text_format" not in plain["model"]["model"]
    assert fmt["model"].pop("tokenizer") == "exp/synthetic_whisper_formatted/prep/tokenizer"
    assert fmt["model"]["init_decoder_from"] == plain["model"]["init_decoder_from"]
    moved = json.dumps(plain).replace("exp/synthetic_whisper/", "exp/synthetic_whisper_formatted/")
    assert fmt == json.loads(moved)


@pytest.mark.parametrize("variant", ["formatted", "cased"])
def test_the_bundled_models_formatted_fine_tune_differs_from_its_plain_control_only_in_its_targets(variant):
    """conf/tiny_synthetic_{formatted,cased}_ft.yaml against conf/tiny_synthetic_plain_ft.yaml (recipe stage 12): the
    same start (the bundled model), steps, data and seed; only text_format, the tokenizer and the output folders
    differ."""
    root = Path(__file__).resolve().parents[2] / "conf"
    plain = yaml.safe_load((root / "tiny_synthetic_plain_ft.yaml").read_text())
    fmt = yaml.safe_load((root / f"tiny_synthetic_{variant}_ft.yaml").read_text())
    assert fmt["model"]["model"].pop("text_format") == "formatted" and "text_format" not in plain["model"]["model"]
    assert fmt["model"].pop("tokenizer") == f"exp/synthetic_{variant}_ft/prep/tokenizer"
    assert plain["model"].pop("tokenizer") == plain["model"]["init_from"] == "asr_stream/assets/default_model"
    moved = json.dumps(plain).replace("exp/synthetic_plain_ft/", f"exp/synthetic_{variant}_ft/")
    assert fmt == json.loads(moved)


def test_a_formatted_model_needs_a_tokenizer_of_cased_text(tmp_path, codec):
    from asr_stream.model import SpeechLLM
    from asr_stream.training.module import SpeechLLMModule

    SpeechLLM(test_sized(160), codec).save(tmp_path / "src")  # an upper-case tokenizer
    with pytest.raises(ValueError, match="the tokenizer cannot write cased, punctuated text"):
        SpeechLLMModule(model=replace(test_sized(160), text_format="formatted"), init_decoder_from=str(tmp_path / "src"))
    SpeechLLMModule(model=test_sized(160), init_decoder_from=str(tmp_path / "src"))  # plain: fine


def test_a_model_with_the_cased_vocabulary_starts_as_its_plain_model(tmp_path):
    """init_from a plain model with the cased form of its vocabulary (decoder.cased_vocabulary): on the same audio,
    the source embeddings (CTC posteriors included), the CTC loss and, for a lower-case transcript, the decoder's
    logits of every plain word token are the plain model's. Case and marks are all that is new."""
    import torch

    from asr_stream.decoder import cased_vocabulary, train_bpe, vocabulary_rows
    from asr_stream.model import SpeechLLM
    from asr_stream.training.module import SpeechLLMModule

    from ..conftest import noise_audio
    from ..equivalence.test_streaming import forward_logits

    plain_text = [" ".join("".join(c for c in w if c.isalpha() or c == "'") for w in s.split()).upper() for s in SENTENCES]
    plain = train_bpe(plain_text * 3, 70)
    torch.manual_seed(0)
    cfg = test_sized(160, ctc_embed=True)
    SpeechLLM(cfg, plain).save(tmp_path / "src")
    src = SpeechLLM.load(tmp_path / "src")
    cased = cased_vocabulary(plain)
    cased.save(tmp_path / "tok")
    net = SpeechLLMModule(model=replace(cfg, text_format="formatted"), init_from=str(tmp_path / "src"),
                          tokenizer=str(tmp_path / "tok")).net.eval()
    rows, _ = vocabulary_rows(plain, cased)
    wave = noise_audio(2.048, seed=3)  # 12.5 chunks of 160 ms: forward pads, the encoder takes whole chunks
    whole = wave[: len(wave) // src.encoder.chunk_samples * src.encoder.chunk_samples]
    text = SENTENCES[1]  # "She sells sea shells by the sea shore, she says."
    ids, pids = cased.encode(text), plain.encode(plain_text[1])
    assert [rows[c] for c in cased.plain_targets(ids)] == [[p] for p in pids]  # CTC targets: the plain words
    with torch.no_grad():
        x = torch.from_numpy(whole)[None]
        enc_old, enc_new = src.encoder(x), net.encoder(x)
        torch.testing.assert_close(net.project(enc_new), src.project(enc_old))
        frames = [enc_old.shape[1]]
        torch.testing.assert_close(net.ctc_loss(enc_new, frames, [ids]), src.ctc_loss(enc_old, frames, [pids]))
    lower = cased.encode(" ".join(plain_text[1].lower().split()))
    assert [rows[t] for t in lower] == [[p] for p in pids]
    new, old = forward_logits(net, wave, lower), forward_logits(src, wave, pids)
    cols = [t for t, c in enumerate(cased.canonical) if c == t and len(rows[t]) == 1]
    torch.testing.assert_close(new[:, cols], old[:, [rows[t][0] for t in cols]])
