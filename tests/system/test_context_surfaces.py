"""Context lists where users give them: --context / --context-file (transcribe, eval), the serve start message and
the REST endpoint's ``prompt``; bad input; models trained without context; the biasing set tool and B-WER / U-WER /
rare-word recall (asr_stream.evaluation.biasing)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_stream.context import MAX_CONTEXT_FILE_BYTES, parse_context, read_context_file
from asr_stream.data import Utterance, read_manifest, write_manifest
from asr_stream.evaluation.biasing import bias_counts, biasing_summary
from asr_stream.model import SpeechLLM
from asr_stream.presets import test_sized
from asr_stream.serving.protocol import ProtocolError, parse_start
from asr_stream.streaming.defaults import stream_config_for

from ..conftest import noise_audio
from ..sysdeps import needs
from .test_serve import ENDPOINT, alone, as_pairs, raw, run, running, waves
from .test_serve_rest import form, post, wav

CTX = ("QUICK FOX", "ZANZIBAR")


@pytest.fixture(scope="module")
def ctx_model(codec):
    torch.manual_seed(2)
    return SpeechLLM(replace(test_sized(160), context_max_tokens=64), codec).eval()


@pytest.fixture(scope="module")
def ctx_dir(ctx_model, tmp_path_factory):
    return ctx_model.save(tmp_path_factory.mktemp("ctx-model"))


@pytest.fixture(scope="module")
def plain_dir(make_model, tmp_path_factory):
    return make_model(160).save(tmp_path_factory.mktemp("plain-model"))


def cli_error(capsys, args) -> str:
    import asr_stream.cli as cli

    with pytest.raises(SystemExit) as e:
        cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    return err[0]


def test_context_input_is_parsed_and_bad_input_is_one_line(tmp_path):
    assert parse_context(" Zanzibar,Okonkwo ,\n quick   fox ,,") == ("Zanzibar", "Okonkwo", "quick fox")
    with pytest.raises(ValueError, match="--context: no words"):
        parse_context(" , ,\n")
    f = tmp_path / "ctx.txt"
    f.write_text("Zanzibar\nOkonkwo, Quetzalcoatl\n", encoding="utf-8")
    assert read_context_file(f) == ("Zanzibar", "Okonkwo", "Quetzalcoatl")
    cases = {"empty.txt": b"", "blank.txt": b" \n,\n", "latin1.txt": "Z\u00fcrich".encode("latin-1")}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match="no words in the context"):
        read_context_file(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="no words in the context"):
        read_context_file(tmp_path / "blank.txt")
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 1\)"):
        read_context_file(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="no such file"):
        read_context_file(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_bytes(b"a," * (MAX_CONTEXT_FILE_BYTES // 2 + 1))
    with pytest.raises(ValueError, match="more than a context can hold"):
        read_context_file(big)


def test_transcribe_takes_a_context_and_refuses_what_the_model_cannot_read(ctx_dir, plain_dir, tmp_path, capsys):
    import asr_stream.cli as cli

    audio = tmp_path / "a.wav"
    sf.write(audio, noise_audio(1.0, seed=3), 16000)
    ctx_file = tmp_path / "ctx.txt"
    ctx_file.write_text("Okonkwo\n")
    cli.main(["transcribe", str(audio), "--model", str(ctx_dir), "--context", "Quick fox, Zanzibar", "--context-file",
              str(ctx_file), "--json", str(tmp_path / "a.json")])
    capsys.readouterr()
    assert json.loads((tmp_path / "a.json").read_text())["settings"]["context"] == ["Quick fox", "Zanzibar", "Okonkwo"]
    err = cli_error(capsys, ["transcribe", str(audio), "--model", str(plain_dir), "--context", "Zanzibar"])
    assert "trained without context lists" in err
    err = cli_error(capsys, ["transcribe", str(audio), "--model", str(ctx_dir), "--context", ", ".join(["ZANZIBAR"] * 40)])
    assert "the context is too long" in err and "at most 64" in err
    (tmp_path / "empty.txt").write_text("")
    err = cli_error(capsys, ["transcribe", str(audio), "--model", str(ctx_dir), "--context-file", str(tmp_path / "empty.txt")])
    assert "no words in the context" in err


def test_context_plain_and_retries_on_the_same_commands(ctx_dir, ctx_model, tmp_path, capsys):
    """--context with --plain (and the client's --retries): transcribe --json's settings and the server's ready event
    carry both the context list and the text format."""
    import asr_stream.cli as cli
    from asr_stream.server import Server, ServerConfig
    from asr_stream.serving.client import blocks_of, stream_resuming

    audio = tmp_path / "a.wav"
    sf.write(audio, noise_audio(1.0, seed=3), 16000)
    cli.main(["transcribe", str(audio), "--model", str(ctx_dir), "--context", "Zanzibar", "--plain", "--json",
              str(tmp_path / "a.json")])
    capsys.readouterr()
    settings = json.loads((tmp_path / "a.json").read_text())["settings"]
    assert settings["context"] == ["Zanzibar"] and settings["text_format"] == "plain"
    cfg = replace(stream_config_for(ctx_model, mode="group", k=2), plain=True, context=("OKONKWO",))
    w = waves()[1]
    with running(Server(ctx_model, cfg, ENDPOINT, ServerConfig(max_clients=1), "batched")) as url:
        own = run(stream_resuming(url, blocks_of(w, 100), retries=2, context=list(CTX)))
        default = run(stream_resuming(url, blocks_of(w, 100), retries=2))
    assert own.events[0]["context"] == list(CTX) and own.events[0]["text_format"] == "plain"
    assert default.events[0]["context"] == ["OKONKWO"] and default.events[0]["text_format"] == "plain"
    assert as_pairs(own.words) == as_pairs(alone(ctx_model, replace(cfg, context=CTX), w).words)


def test_start_message_context_is_checked():
    base = {"type": "start", "sample_rate": 16000}
    assert parse_start(json.dumps(base))["context"] is None
    assert parse_start(json.dumps({**base, "context": ["Zanzibar", "quick fox"]}))["context"] == ("Zanzibar", "quick fox")
    assert parse_start(json.dumps({**base, "context": "Zanzibar, Okonkwo"}))["context"] == ("Zanzibar", "Okonkwo")
    for bad, why in (([1, 2], "list of strings"), ({"a": 1}, "list of strings"), ("", "no words"), ([], "no words"),
                     ("x," * 20_000, "too long")):
        with pytest.raises(ProtocolError, match=why):
            parse_start(json.dumps({**base, "context": bad}))


@pytest.mark.parametrize("scheduler", ["batched", "per-client"])
def test_each_connection_streams_with_its_own_context(ctx_model, scheduler):
    """Two clients at once, one with a context and one without, then a third in the freed slot without one: each
    transcript is the lone session's with that client's context (a reused slot keeps nothing of the last one's)."""
    from asr_stream.serving.client import blocks_of, stream
    from asr_stream.server import Server, ServerConfig

    cfg = stream_config_for(ctx_model, mode="group", k=2)
    w = waves()[1]
    with_ctx, without = alone(ctx_model, replace(cfg, context=CTX), w), alone(ctx_model, cfg, w)
    assert as_pairs(with_ctx.words) != as_pairs(without.words)  # the context changes this random model's words
    server = Server(ctx_model, cfg, ENDPOINT, ServerConfig(max_clients=2), scheduler)
    with running(server) as url:
        async def both():
            return await asyncio_gather(stream(url, blocks_of(w, 100), context=list(CTX)), stream(url, blocks_of(w, 100)))

        a, b = run(both())
        assert a.events[0]["context"] == list(CTX) and b.events[0]["context"] == []
        assert as_pairs(a.words) == as_pairs(with_ctx.words)
        assert as_pairs(b.words) == as_pairs(without.words)
        c = run(stream(url, blocks_of(w, 100)))
        assert as_pairs(c.words) == as_pairs(without.words)


def asyncio_gather(*coros):
    import asyncio

    return asyncio.gather(*coros)


def test_a_server_whose_model_has_no_context_refuses_a_context(make_model):
    from asr_stream.server import Server, ServerConfig

    model = make_model(160)
    server = Server(model, stream_config_for(model, mode="group", k=2), ENDPOINT, ServerConfig(max_clients=1))
    with running(server) as url:
        evs = run(raw(url, {"type": "start", "sample_rate": 16000, "context": ["Zanzibar"]}))
        assert evs[-1]["type"] == "error" and "context: this model was trained without context lists" in evs[-1]["reason"]
        evs = run(raw(url, {"type": "start", "sample_rate": 16000}, [noise_audio(0.5).tobytes()]))
        assert evs[0]["type"] == "ready" and evs[-1]["type"] == "eof"  # no context: served as before


def test_rest_prompt_is_the_context(ctx_model, make_model):
    from asr_stream.server import Server, ServerConfig

    cfg = stream_config_for(ctx_model, mode="group", k=2)
    x = waves()[1]
    want = alone(ctx_model, replace(cfg, context=CTX), x).text
    assert want != alone(ctx_model, cfg, x).text
    server = Server(ctx_model, cfg, ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        url = url.replace("ws://", "http://")
        status, _, body = post(url, form({"model": "m", "response_format": "json", "prompt": "QUICK FOX, ZANZIBAR"},
                                         ("a.wav", wav(x))))
        assert status == 200 and json.loads(body)["text"] == want
    plain = make_model(160)
    server = Server(plain, stream_config_for(plain, mode="group", k=2), ENDPOINT, ServerConfig(max_clients=2))
    with running(server) as url:
        url = url.replace("ws://", "http://")
        status, _, body = post(url, form({"model": "m", "prompt": "Zanzibar"}, ("a.wav", wav(x[:8000]))))
        err = json.loads(body)["error"]
        assert status == 400 and err["param"] == "prompt" and "trained without context lists" in err["message"]
        status, _, _ = post(url, form({"model": "m", "prompt": "  "}, ("a.wav", wav(x[:8000]))))
        assert status == 200  # a blank prompt is no context


def test_bias_counts_follow_the_literature_rule():
    c = bias_counts("I met Zanzibar at the old station", "okonkwo i met sansibar at the station", ["Zanzibar", "Okonkwo"])
    # ZANZIBAR substituted (biased), OLD deleted (unbiased), OKONKWO inserted: a biased insertion (a list word)
    assert c == {"b_ref": 1, "b_err": 2, "b_hit": 0, "u_ref": 6, "u_err": 1}
    c = bias_counts("the quick fox met Okonkwo", "the quick fox met okonkwo", ["quick fox", "Okonkwo", "Zanzibar"])
    assert c == {"b_ref": 3, "b_err": 0, "b_hit": 3, "u_ref": 2, "u_err": 0}
    rows = [{"reference": "I met Zanzibar", "hypothesis": "I met Zanzibar", "bias_words": ["Zanzibar", "Quokka"]},
            {"reference": "we flew to Okonkwo", "hypothesis": "we flew to", "bias_words": ["Okonkwo"]},
            {"reference": "no list here", "hypothesis": "no list"}]
    s = biasing_summary(rows)
    assert (s["bias_utterances"], s["bias_ref_words"], s["unbiased_ref_words"]) == (2, 2, 5)
    assert (s["b_wer"], s["u_wer"], s["rare_recall"]) == (0.5, 0.0, 0.5)


def test_manifest_context_round_trips_and_is_checked(tmp_path):
    a = tmp_path / "a.flac"
    sf.write(a, noise_audio(0.5), 16000)
    m = write_manifest([Utterance("u", a, "I MET ZANZIBAR", 0.5, context=("Zanzibar", "Okonkwo"))], tmp_path / "m.jsonl")
    assert read_manifest(m)[0].context == ("Zanzibar", "Okonkwo")
    row = json.loads(m.read_text())
    for bad in ("Zanzibar", [], [""], [3]):
        m.write_text(json.dumps({**row, "context": bad}) + "\n")
        with pytest.raises(ValueError, match="'context' must be a non-empty list"):
            read_manifest(m)


def test_eval_gives_the_data_lists_and_reports_biasing(ctx_dir, plain_dir, tmp_path, capsys):
    import asr_stream.cli as cli

    utts = []
    for i, (text, ctx) in enumerate((("I MET ZANZIBAR", ["Zanzibar", "Okonkwo"]), ("THE QUICK FOX", ["Quick fox"]))):
        p = tmp_path / f"u{i}.flac"
        sf.write(p, noise_audio(0.8, seed=i), 16000)
        utts.append(Utterance(f"u{i}", p, text, 0.8, context=tuple(ctx)))
    m = write_manifest(utts, tmp_path / "b.jsonl")
    summary = lambda d: json.loads((tmp_path / d / "summary.json").read_text())  # noqa: E731
    cli.main(["eval", "--data", str(m), "--model", str(ctx_dir), "--k", "2", "--output", str(tmp_path / "e1")])
    out = capsys.readouterr().out
    assert "B-WER" in out and "rare-word recall" in out
    s = summary("e1")
    assert s["bias_utterances"] == 2 and s["bias_ref_words"] == 3 and s["unbiased_ref_words"] == 3
    recs = [json.loads(x) for x in (tmp_path / "e1" / "records.jsonl").read_text().splitlines()]
    assert [r["context"] for r in recs] == [["Zanzibar", "Okonkwo"], ["Quick fox"]]
    assert json.loads((tmp_path / "e1" / "settings.json").read_text())["data_context"] is True
    cli.main(["eval", "--data", str(m), "--model", str(ctx_dir), "--k", "2", "--output", str(tmp_path / "e2"),
              "--no-data-context"])
    recs = [json.loads(x) for x in (tmp_path / "e2" / "records.jsonl").read_text().splitlines()]
    assert all("context" not in r and r["bias_words"] for r in recs) and summary("e2")["bias_utterances"] == 2
    assert [r["hypothesis"] for r in recs] != [json.loads(x)["hypothesis"] for x in
                                               (tmp_path / "e1" / "records.jsonl").read_text().splitlines()]
    cli.main(["eval", "--data", str(m), "--model", str(ctx_dir), "--k", "2", "--context", "Okonkwo", "--output",
              str(tmp_path / "e3")])
    assert summary("e3")["name"].endswith("-context1")
    assert [json.loads(x)["context"] for x in (tmp_path / "e3" / "records.jsonl").read_text().splitlines()] == [["Okonkwo"]] * 2
    with pytest.warns(UserWarning, match="trained without context lists: the data's lists are not given"):
        cli.main(["eval", "--data", str(m), "--model", str(plain_dir), "--k", "2", "--output", str(tmp_path / "e4")])
    assert summary("e4")["bias_utterances"] == 2
    capsys.readouterr()
    err = cli_error(capsys, ["eval", "--data", str(m), "--model", str(plain_dir), "--context", "Zanzibar"])
    assert "trained without context lists" in err


@needs("espeak-ng")
def test_biasing_set_tool_writes_rare_words_with_their_lists(tmp_path):
    from ..conftest import import_script

    tool = import_script("tools/corpus", "make_biasing_set")
    words = tmp_path / "words.txt"
    words.write_text("Zanzibar\nOkonkwo\nQuetzalcoatl\nOuagadougou\nTegucigalpa\nLjubljana\nStation\n")
    train = tmp_path / "train.txt"
    assert tool.main([str(tmp_path / "set"), "--sentences", "2", "--distractors", "3", "--voices", "en-029+f2",
                      "--words", str(words), "--no-fortunes"]) == 0
    utts = read_manifest(tmp_path / "set" / "biasing.jsonl")
    assert len(utts) == 2 and all(u.speaker == "en-029+f2" and u.duration > 0.5 for u in utts)
    for u in utts:
        rare = [w for w in u.context if w.upper() in u.text.split()]
        assert rare and len(u.context) == len(rare) + 3  # its rare words and 3 distractors not in the sentence
    spare = (tmp_path / "set" / "distractors-3.txt").read_text().split()
    assert len(spare) == 3 and not {w.upper() for w in spare} & {w for u in utts for w in u.text.split()}
    # a word of the training text is never rare; refusals are one line
    train.write_text("")
    ex = write_manifest([Utterance("t", utts[0].audio_path, "WE WENT TO ZANZIBAR AND LJUBLJANA", 1.0)], tmp_path / "t.jsonl")
    assert tool.main([str(tmp_path / "set2"), "--sentences", "6", "--distractors", "0", "--voices", "en-029+f2",
                      "--words", str(words), "--no-fortunes", "--exclude", str(ex)]) == 0
    said = {w for u in read_manifest(tmp_path / "set2" / "biasing.jsonl") for w in u.text.split()}
    assert not {"ZANZIBAR", "LJUBLJANA"} & said and {"OKONKWO", "QUETZALCOATL"} <= said
    assert tool.main([str(tmp_path / "set"), "--sentences", "1", "--voices", "en-029+f2", "--no-fortunes"]) == 2  # not empty
    assert tool.main([str(tmp_path / "set3"), "--sentences", "1", "--distractors", "50", "--words", str(words),
                      "--voices", "en-029+f2", "--no-fortunes"]) == 2  # too few rare words for the lists
    assert np.isfinite(utts[0].duration)
