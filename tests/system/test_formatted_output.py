"""What a formatted model's user sees and what is scored: words as written or made plain (--plain), word times that a
mark does not move, the formatted-text scores (formatted WER, punctuation F1) and eval's summary."""

import json
import math

import pytest
import soundfile as sf

from asr_stream.data import Utterance
from asr_stream.evaluation.formatted import formatted_tokens, formatted_wer, punctuation_f1
from asr_stream.evaluation.runner import Setting, evaluate
from asr_stream.streaming import StreamingSession
from asr_stream.transcript import plain_event, plain_text

from ..conftest import noise_audio
from ..equivalence.test_formatted import FORMATTED, LOOSE, fcodec, fmodel  # noqa: F401 - the formatted tokenizer and model
from ..equivalence.test_streaming import stream_logits


def test_plain_text_is_the_normalisation_in_upper_case():
    assert plain_text("Hello, world. Don't you?") == "HELLO WORLD DON'T YOU"
    assert plain_text("?") == ""


@pytest.mark.parametrize("text", [FORMATTED[2], LOOSE])
def test_plain_gives_a_plain_models_words_at_the_same_times(fmodel, fcodec, text):  # noqa: F811
    wave = noise_audio(2.2, seed=21)
    tokens = fcodec.encode(text)
    _, as_written = stream_logits(fmodel, wave, tokens, 1000, k=2)
    _, plain = stream_logits(fmodel, wave, tokens, 1000, k=2, plain=True)
    assert " ".join(w.text for w in as_written.words) == " ".join(text.split())  # as the model wrote it
    assert [w.text for w in plain.words] == plain_text(text).split()  # a mark alone ("?") is no word
    shown = [w for w in as_written.words if plain_text(w.text)]
    assert [w.time_ms for w in plain.words] == [w.time_ms for w in shown]


def test_plain_leaves_a_plain_model_alone(fmodel, fcodec):  # noqa: F811
    """A model trained as plain (text_format plain) is never rewritten, whatever its tokenizer can write."""
    from dataclasses import replace

    import torch

    from asr_stream.model import SpeechLLM

    torch.manual_seed(0)
    m = SpeechLLM(replace(fmodel.cfg, text_format="plain"), fcodec).eval()
    wave = noise_audio(2.0, seed=3)
    tokens = fcodec.encode(FORMATTED[1])
    _, a = stream_logits(m, wave, tokens, 1000, k=2)
    _, b = stream_logits(m, wave, tokens, 1000, k=2, plain=True)
    assert [w.text for w in b.words] == FORMATTED[1].split()
    assert [(w.text, w.time_ms) for w in a.words] == [(w.text, w.time_ms) for w in b.words]


def test_a_final_mark_costs_no_chunk(fmodel, fcodec):  # noqa: F811
    """A word's time is that of its first token: "twice?" is written when "twice" would be."""
    wave = noise_audio(2.2, seed=5)
    with_mark = stream_logits(fmodel, wave, fcodec.encode("Is nothing ever encoded twice?"), 1000, k=1)[1].words
    without = stream_logits(fmodel, wave, fcodec.encode("Is nothing ever encoded twice"), 1000, k=1)[1].words
    assert [w.text for w in with_mark][-1] == "twice?"
    assert [w.time_ms for w in with_mark] == [w.time_ms for w in without]


def test_plain_event_rewrites_a_servers_words():
    partial = {"type": "partial", "words": [{"text": "Hello,", "time_ms": 1.0, "index": 0},
                                            {"text": "?", "time_ms": 2.0, "index": 1}], "lag_ms": 3}
    final = {"type": "final", "index": 0, "text": "Hello, ?", "words": partial["words"], "start_ms": 0.0}
    assert plain_event(partial) == {**partial, "words": [{"text": "HELLO", "time_ms": 1.0, "index": 0}]}
    assert plain_event(final)["text"] == "HELLO" and plain_event({"type": "eof", "text": "a"}) == {"type": "eof", "text": "a"}


# ----------------------------------------------------------------------------------------------------- scores


def test_formatted_tokens_and_wer():
    assert formatted_tokens("\u201cHello,\u201d he said\u2014don\u2019t!") == \
        ["\u201c", "Hello", ",", "\u201d", "he", "said", "don't", "!"]
    # reference: The cat sat . (4 tokens) + Is it ? (3): 7; errors: "the" (case), "," for ".", "is" (case), "?" deleted
    w = formatted_wer(["The cat sat.", "Is it?"], ["the cat sat,", "is it"])
    assert (w["ref_words"], w["substitutions"], w["deletions"], w["insertions"]) == (7, 3, 1, 0)
    assert w["wer"] == pytest.approx(4 / 7)
    assert formatted_wer(["Hello, world."], ["Hello, world."])["wer"] == 0.0


def test_punctuation_f1_by_hand():
    refs = ["Hello, world. How are you?", "Yes, it is.", "No marks here"]
    hyps = ["Hello world. How are you.", "Yes, it, is.", "No, marks here"]
    f = punctuation_f1(refs, hyps)
    # ",": 1 TP (Yes,), 2 FP (it, / No,), 1 FN (Hello,); ".": 2 TP, 1 FP (you.); "?": 1 FN
    assert {c: (v["tp"], v["fp"], v["fn"]) for c, v in f["classes"].items()} == {",": (1, 2, 1), ".": (2, 1, 0),
                                                                                  "?": (0, 0, 1)}
    assert (f["tp"], f["fp"], f["fn"]) == (3, 3, 2)
    assert f["f1"] == pytest.approx(6 / (6 + 3 + 2))
    # a mark on a deleted reference word is missed; one on an inserted word is extra; case does not matter
    g = punctuation_f1(["Stop here, please."], ["STOP, please."])
    assert (g["tp"], g["fp"], g["fn"]) == (1, 1, 1)
    # a substituted word keeps its place: its marks are compared with the reference word's
    h = punctuation_f1(["The cat, sat."], ["The bat, sat."])
    assert (h["tp"], h["fp"], h["fn"]) == (2, 0, 0)
    assert math.isnan(punctuation_f1(["no marks"], ["none here"])["f1"])


# ------------------------------------------------------------------------------------------------------- eval


class ForcedSession(StreamingSession):
    """Writes LOOSE whatever it hears (teacher forcing), so that the scores are known."""

    def __init__(self, model, cfg=None, **kw):
        super().__init__(model, cfg, **kw)
        self.teacher_force(model.codec.encode(LOOSE))


@pytest.fixture
def formatted_corpus(tmp_path):
    utts = []
    for i, ref in enumerate(["Hello, world. Is nothing ever encoded twice?", "Hello world, is nothing ever encoded twice."]):
        p = tmp_path / f"u{i}.flac"
        sf.write(p, noise_audio(2.2, seed=i), 16000)
        utts.append(Utterance(f"u{i}", p, plain_text(ref), 2.2, formatted=ref))
    return utts


def test_eval_reports_formatted_scores_and_latencies_over_normalised_words(fmodel, formatted_corpus, tmp_path,
                                                                            monkeypatch):  # noqa: F811
    import asr_stream.streaming as streaming

    monkeypatch.setattr(streaming, "StreamingSession", ForcedSession)
    s = evaluate(fmodel, formatted_corpus, Setting("group", 2, 0.0), tmp_path / "cell", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "cell" / "records.jsonl").read_text().splitlines()]
    hyp = "Hello , world . Is nothing ever encoded twice ?"
    assert [r["hypothesis"] for r in recs] == [hyp, hyp]
    assert s["wer"] == 0.0  # normalised: the same words
    assert all(len(r["words"]) == 8 and r["lat_hyp_len"] == 7 for r in recs)  # "?" alone: no word to time
    refs = [u.formatted for u in formatted_corpus]
    assert s["formatted_wer"] == formatted_wer(refs, [hyp, hyp])["wer"] > 0
    assert s["punct_f1"] == punctuation_f1(refs, [hyp, hyp])["f1"]
    assert s["punct_f1_ci"][0] <= s["punct_f1"] <= s["punct_f1_ci"][1]  # the bootstrap interval over utterances
    assert set(s["punct_classes"]) == {",", ".", "?"}
    assert json.loads((tmp_path / "cell" / "summary.json").read_text())["punct_f1"] == s["punct_f1"]
    # an undefined score (a class with no mark written: precision 0/0, NaN) is null in summary.json, which stays
    # standard JSON (NaN is not); the returned summary keeps the float
    import asr_stream.evaluation.formatted as fmt

    real = fmt.punctuation_f1
    monkeypatch.setattr(fmt, "punctuation_f1", lambda r, h: {**real(r, h), "precision": float("nan")})
    n = evaluate(fmodel, formatted_corpus, Setting("group", 2, 0.0), tmp_path / "nan", progress=False)
    assert n["punct_precision"] != n["punct_precision"]

    def strict(name):
        raise ValueError(f"summary.json holds {name}")
    assert json.loads((tmp_path / "nan" / "summary.json").read_text(), parse_constant=strict)["punct_precision"] is None
    monkeypatch.setattr(fmt, "punctuation_f1", real)
    # --plain: plain words, no formatted figures, the same WER and latencies
    p = evaluate(fmodel, formatted_corpus, Setting("group", 2, 0.0, plain=True), tmp_path / "plain", progress=False)
    assert "formatted_wer" not in p and p["wer"] == 0.0 and p["LAAL"] == s["LAAL"] and p["AL"] == s["AL"]
    assert p["name"].endswith("-plain")


def test_eval_of_a_plain_model_has_no_formatted_scores(make_model, formatted_corpus, tmp_path):
    s = evaluate(make_model(160), formatted_corpus[:1], Setting("group", 2, 0.0), tmp_path / "cell", progress=False)
    assert "formatted_wer" not in s and "punct_f1" not in s
    settings = json.loads((tmp_path / "cell" / "settings.json").read_text())
    assert "plain" not in settings["stream"]  # folders written before --plain existed still resume


# ------------------------------------------------------------------------------------------------ command line


def test_transcribe_writes_the_models_text_or_plain_text(fmodel, tmp_path, capsys):  # noqa: F811
    from .test_output_files import run

    d = fmodel.save(tmp_path / "fmt")
    wav = tmp_path / "a.wav"
    sf.write(wav, noise_audio(2.5, seed=1), 16000)
    got = {}
    for name, extra in (("as_written", []), ("plain", ["--plain"])):
        code, out, err = run(["transcribe", str(wav), "--model", str(d), "--json", str(tmp_path / f"{name}.json"),
                              *extra], capsys)
        assert code == 0, err
        got[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert got["as_written"]["settings"]["text_format"] == "formatted"
    assert got["plain"]["settings"]["text_format"] == "plain"
    written = [w["text"] for w in got["as_written"]["files"][0]["words"]]
    assert any(w != plain_text(w) for w in written)  # this random model writes lower case or marks
    assert [w["text"] for w in got["plain"]["files"][0]["words"]] == [t for w in written if (t := plain_text(w))]


def test_eval_command_prints_the_formatted_scores_unless_plain(fmodel, formatted_corpus, tmp_path, capsys):  # noqa: F811
    from asr_stream.data import write_manifest

    from .test_output_files import run

    d = fmodel.save(tmp_path / "fmt")
    manifest = write_manifest(formatted_corpus, tmp_path / "m.jsonl")
    code, out, err = run(["eval", "--data", str(manifest), "--model", str(d), "--output", str(tmp_path / "a")], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert f"{100 * s['formatted_wer']:.2f}" in out  # the table's column (its title may wrap)
    assert f"WER with case and punctuation {100 * s['formatted_wer']:.2f} %" in out
    assert f"punctuation F1 {s['punct_f1']:.3f}" in out
    code, out, err = run(["eval", "--data", str(manifest), "--model", str(d), "--plain", "--output", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert "formatted" not in out and "formatted_wer" not in json.loads((tmp_path / "b" / "summary.json").read_text())


def test_the_server_sends_the_models_text_and_clients_can_make_it_plain(fmodel, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A formatted model's server sends its words as written and says so in ``ready``; ``serve --plain`` sends plain
    words; ``client --plain`` and ``mic --url --plain`` make a formatted server's words plain on the client."""
    from asr_stream.audio.sources import FAKE_MIC_ENV
    from asr_stream.cli import main
    from asr_stream.client import blocks_of, stream
    from asr_stream.server import Server, ServerConfig
    from asr_stream.streaming.defaults import stream_config_for

    from .test_serve import ENDPOINT, alone, run, running

    wave = noise_audio(2.0, seed=1)
    path = tmp_path / "w.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    cfg = stream_config_for(fmodel, mode="group", k=2)
    ref = alone(fmodel, cfg, wave)
    assert ref.text != plain_text(ref.text)  # this random model writes lower case or marks
    with running(Server(fmodel, cfg, ENDPOINT, ServerConfig(max_clients=2))) as url:
        res = run(stream(url, blocks_of(wave, 100)))
        assert res.events[0]["text_format"] == "formatted" and res.text == ref.text
        main(["client", str(path), "--url", url, "--plain", "--json", str(tmp_path / "c.json")])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {plain_text(ref.text)}"
        saved = json.loads((tmp_path / "c.json").read_text())["files"][0]
        assert saved["text"] == plain_text(ref.text) and " ".join(f["text"] for f in saved["finals"]) == plain_text(ref.text)
        monkeypatch.setenv(FAKE_MIC_ENV, str(path))
        main(["mic", "--url", url, "--plain"])
        assert capsys.readouterr().out.splitlines()[-1] == f"final: {plain_text(ref.text)}"
    plain_cfg = stream_config_for(fmodel, mode="group", k=2, plain=True)
    with running(Server(fmodel, plain_cfg, ENDPOINT, ServerConfig(max_clients=2))) as url:
        res = run(stream(url, blocks_of(wave, 100)))
        assert res.events[0]["text_format"] == "plain" and res.text == plain_text(ref.text)
        assert [w["time_ms"] for w in res.words] == [w.time_ms for w in ref.words if plain_text(w.text)]
