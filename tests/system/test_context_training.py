"""Training with context lists: the draws (asr_stream.context.ContextSampler), the data module's batches, a
few-step fit through the training command line whose exported model streams with a context, and the refusals."""

import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, replace

import numpy as np
import pytest
import yaml

from asr_stream.context import ContextDraw, ContextSampler, context_ids, context_rng, fit_context
from asr_stream.presets import test_sized

from ..conftest import SENTENCES, noise_audio
from .test_training import make_data, make_module, tiny_setup, trainer  # noqa: F401 - the fixture is used

TEXTS = ["THE CAT SAT ON THE MAT", "THE DOG SAT ON THE LOG", "A ZEBRA ATE THE HAY"] * 3 + ["THE QUOKKA SMILED"]


def test_draws_hold_rare_words_of_the_utterance_and_distractors_not_in_it():
    draw = ContextDraw(prob=0.7, distractor_only_prob=0.3, true_words=(1, 2), distractors=(0, 3), rare_rank=6)
    sampler = ContextSampler(draw, TEXTS)
    common = sampler.common
    assert {"THE", "SAT", "ON"} <= common and "QUOKKA" not in common
    text = "THE QUOKKA SMILED AT THE ZEBRA"
    rare = {w for w in text.split() if w not in common}  # "AT" is in no transcript: rare too
    kinds = Counter()
    for i in range(400):
        ctx = sampler(text, context_rng(0, 0, i))
        assert ctx == sampler(text, context_rng(0, 0, i))  # a function of (seed, epoch, index)
        if not ctx:
            kinds["none"] += 1
            continue
        true = [w for w in ctx if w in text.split()]
        assert set(true) <= rare and len(true) <= 2
        others = [w for w in ctx if w not in text.split()]
        assert all(w not in common for w in others) and len(others) <= 3 and len(set(ctx)) == len(ctx)
        kinds["with words" if true else "distractors only"] += 1
    assert 0.2 < kinds["none"] / 400 < 0.4
    assert kinds["distractors only"] > 40 and kinds["with words"] > 120
    empty = [sampler("", context_rng(0, 0, i)) for i in range(20)]  # non-speech: distractors only, or nothing
    assert any(empty) and all(w not in common for c in empty for w in c)


def test_a_formatted_model_draws_lists_with_case_and_without_marks():
    """Formatted targets ("The quokka, smiled."): the lists keep the words' case, drop the marks at their ends, and
    rarity and "in the text" ignore case (a sentence-initial "The" is as common as "the")."""
    texts = ["The cat sat on the mat.", "the dog sat on the log!", "A zebra ate the hay, Sir."] * 3 + \
            ["The quokka, Zanzibar, smiled."]
    sampler = ContextSampler(ContextDraw(prob=1.0, true_words=(1, 3), distractors=(2, 4), rare_rank=6), texts)
    assert {"THE", "SAT", "ON"} <= sampler.common and "QUOKKA" not in sampler.common
    assert "Zanzibar" in sampler.pool and "Sir" in sampler.pool and all(w.strip(".,!") == w for w in sampler.pool)
    text = "The quokka, Zanzibar, smiled at the zebra."
    seen = set()
    for i in range(100):
        ctx = sampler(text, context_rng(0, 0, i))
        assert ctx and all(w[-1].isalpha() for w in ctx)  # "Zanzibar," is listed as "Zanzibar"
        seen |= set(ctx)
        assert not {w.upper() for w in ctx if w not in text.replace(",", "").replace(".", "").split()} & \
            {w.upper() for w in text.replace(",", "").replace(".", "").split()}  # a distractor is in no case in the text
    assert {"Zanzibar", "quokka"} <= seen and not {"ZANZIBAR", "QUOKKA", "Zanzibar,", "the", "The"} & seen


def test_draw_settings_are_checked_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['probability'\]"):
        ContextDraw.from_dict({"probability": 0.5})
    with pytest.raises(ValueError, match="prob must lie in"):
        ContextDraw.from_dict({"prob": 1.5})
    with pytest.raises(ValueError, match="distractors must be"):
        ContextDraw.from_dict({"distractors": [5, 2]})
    with pytest.raises(ValueError, match="no distractor words"):
        ContextSampler(ContextDraw(prob=0.5, rare_rank=100), TEXTS)
    bad = tmp_path / "words.txt"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="cannot read it as UTF-8"):
        ContextSampler(ContextDraw(prob=0.5, word_list=str(bad)), TEXTS)
    good = tmp_path / "good.txt"
    good.write_text("Okonkwo\nZanzibar\n\n")
    assert ContextSampler(ContextDraw(prob=0.5, word_list=str(good)), TEXTS).pool == ["Okonkwo", "Zanzibar"]


def test_fit_context_keeps_whole_phrases_under_the_budget(codec):
    full = context_ids(codec, ["QUICK BROWN", "FOX", "LAZY"])
    assert full.count(codec.eos_id) == 3
    part = fit_context(codec, ["QUICK BROWN", "FOX", "LAZY"], len(full) - 1)
    assert part == context_ids(codec, ["QUICK BROWN", "FOX"])
    assert context_ids(codec, ["quick  brown"]) == context_ids(codec, ["QUICK BROWN"])  # written as transcripts are


def test_data_module_batches_carry_context_lists(tiny_setup):  # noqa: F811
    from asr_stream.training.datamodule import SpeechDataModule

    _, manifest = tiny_setup
    dm = SpeechDataModule(train=[str(manifest)], max_batch_seconds=4.0, num_workers=0, seed=0,
                          context={"prob": 1.0, "distractor_only_prob": 0.0, "rare_rank": 5, "distractors": [1, 2]})
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert batches and all(b.contexts is not None and len(b.contexts) == len(b.texts) for b in batches)
    for b in batches:
        for text, ctx in zip(b.texts, b.contexts):
            assert ctx and any(w in text.split() for w in ctx) and any(w not in text.split() for w in ctx)
    plain = SpeechDataModule(train=[str(manifest)], max_batch_seconds=4.0, num_workers=0, seed=0)
    plain.setup("fit")
    first = next(iter(plain.train_dataloader()))
    assert first.contexts is None
    # the context draws leave the audio draws alone
    assert (next(iter(dm.train_dataloader())).wave - first.wave).abs().max() == 0


def test_per_batch_lists_come_for_a_whole_batch_or_none(tiny_setup):  # noqa: F811
    from asr_stream.training.datamodule import SpeechDataModule

    _, manifest = tiny_setup
    draw = {"prob": 0.5, "distractor_only_prob": 0.0, "rare_rank": 5, "distractors": [1, 2]}
    kinds = {}
    for per_batch in (False, True):
        dm = SpeechDataModule(train=[str(manifest)] * 6, max_batch_seconds=8.0, num_workers=0, seed=0,
                              context={**draw, "per_batch": per_batch})
        dm.setup("fit")
        kinds[per_batch] = [tuple(bool(c) for c in b.contexts) for b in dm.train_dataloader()]
    whole = [set(k) for k in kinds[True]]
    assert all(len(k) == 1 for k in whole)  # all lists or none in a batch
    assert {True} in whole and {False} in whole  # both kinds of batch
    assert any(len(set(k)) == 2 for k in kinds[False])  # per utterance (the default), batches mix them


def test_training_batches_take_the_lists_as_ids_and_a_model_without_context_refuses_them(tiny_setup):  # noqa: F811
    from asr_stream.training.data import Collated
    from asr_stream.training.module import SpeechLLMModule

    root, _ = tiny_setup
    lists = [("ZEBRA", "QUICK FOX"), ()]
    b = Collated(np.zeros((2, 1600), np.float32), np.array([1600, 1600]), ["A SMALL MODEL", "FAST TESTS"], contexts=lists)
    m = SpeechLLMModule(model=replace(test_sized(160), context_max_tokens=12), tokenizer=str(root / "tok"))
    batch = m._batch(b)
    assert batch.context == [fit_context(m.net.codec, lists[0], 12), []]
    assert batch.context[0] == context_ids(m.net.codec, lists[0])[: len(batch.context[0])] and batch.context[0]
    with pytest.raises(ValueError, match="context_max_tokens is 0"):
        make_module(root)._batch(b)


@pytest.mark.timeout(300)
def test_a_few_steps_through_the_training_command_line_give_a_model_that_streams_with_a_context(tiny_setup, tmp_path):  # noqa: F811
    from asr_stream.model import SpeechLLM
    from asr_stream.streaming import StreamingSession

    root, manifest = tiny_setup
    cfg = replace(test_sized(160), context_max_tokens=48)
    conf = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 3, "logger": False, "enable_progress_bar": False,
                    "enable_checkpointing": False, "use_distributed_sampler": False, "default_root_dir": str(tmp_path)},
        "model": {"model": {**asdict(cfg), "train_k": list(cfg.train_k)}, "tokenizer": str(root / "tok"), "lr": 3e-3,
                  "warmup_steps": 1, "export_dir": str(tmp_path / "model")},
        "data": {"train": [str(manifest)], "max_batch_seconds": 1.5, "num_workers": 0,
                 "context": {"prob": 1.0, "rare_rank": 5, "distractors": [1, 30]}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    r = subprocess.run([sys.executable, "-m", "asr_stream.training", "fit", "--config", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    model = SpeechLLM.load(tmp_path / "model")
    assert model.cfg.context_max_tokens == 48
    s = StreamingSession(model, k=2, context=("ZANZIBAR", "QUICK"))
    s.push(noise_audio(0.5))
    s.finish()
    assert s.state.elements.kind.tolist().count(4) == len(context_ids(model.codec, ("ZANZIBAR", "QUICK")))
    # the same fit without model.context_max_tokens stops with one line
    conf["model"]["model"]["context_max_tokens"] = 0
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    r = subprocess.run([sys.executable, "-m", "asr_stream.training", "fit", "--config", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=280)
    assert r.returncode != 0 and "context_max_tokens is 0" in r.stderr
    assert SENTENCES  # the corpus of tiny_setup


def test_the_context_config_is_its_sibling_plus_the_context_knobs():
    """conf/tiny_synthetic_whisper_context.yaml trains what conf/tiny_synthetic_whisper.yaml trains (its no-context
    baseline), with lists: the same settings but the context knobs and the output folders, and valid knobs."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "conf"
    sib, ctx = (yaml.safe_load((root / n).read_text()) for n in ("tiny_synthetic_whisper.yaml", "tiny_synthetic_whisper_context.yaml"))
    assert ctx["model"]["model"].pop("context_max_tokens") >= 700  # 100 distractors of rare words: ~650 tokens
    draw = ContextDraw.from_dict(ctx["data"].pop("context"))
    assert draw.active and 0 < draw.distractor_only_prob < 1 and draw.distractors[1] >= 100
    text = lambda c: yaml.safe_dump(c).replace("exp/synthetic_whisper_context/", "exp/synthetic_whisper/")  # noqa: E731
    assert text(ctx) == text(sib)
