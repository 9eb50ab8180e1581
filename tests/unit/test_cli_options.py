"""The options several commands share are declared once (asr_stream.cli.options) and reach each command whole: the
same flag has the same words everywhere unless a command's docstring says more, and the parsed flags arrive as one
options object."""

from __future__ import annotations

import argparse
import warnings

import pytest

from asr_stream.cli.options import EndpointOptions, EvalStreamOptions, StreamOptions, flat_call
from asr_stream.cli.parser import build_parser, parse


def _helps() -> dict[tuple[str, str], str]:
    """(command, dest) -> the flag's help text, for every command."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {(command, a.dest): a.help for command, p in sub.choices.items() for a in p._actions}


def test_a_shared_option_says_the_same_words_in_every_command() -> None:
    helps = _helps()
    for dest in ("model", "phi", "chunk_ms", "device", "encoder_dtype", "policy_args"):
        said = {c: helps[c, dest] for c in ("transcribe", "mic", "serve", "eval") if (c, dest) in helps}
        assert len(said) == 4 and len(set(said.values())) == 1, (dest, said)
    for dest in ("max_segment_s", "vad"):
        assert len({helps[c, dest] for c in ("transcribe", "mic", "serve")}) == 1, dest


def test_a_command_docstring_says_more_of_a_field_for_that_command() -> None:
    """serve's --k is the default of its streams (a client may ask for its own); mic's --min-silence-ms restarts
    the session. The other commands keep the field's own help."""
    helps = _helps()
    assert helps["transcribe", "k"].startswith("wait-k in chunks")
    assert helps["serve", "k"].startswith("default wait-k in chunks") and "a client may ask" in helps["serve", "k"]
    assert "(the session restarts, text goes on)" in helps["mic", "min_silence_ms"]
    assert "restarts" not in helps["transcribe", "min_silence_ms"]


def test_the_parsed_flags_arrive_as_one_options_object() -> None:
    command, fn, kwargs = parse(["transcribe", "a.wav", "--k", "2", "--policy", "ctc", "--policy-args", "threshold=0.3",
                                 "--min-silence-ms", "500", "--vad", "silero", "--reencode", "kv"])
    assert command == "transcribe" and fn.__name__ == "transcribe"
    assert kwargs["options"] == StreamOptions(k=2, policy="ctc", policy_args=["threshold=0.3"])
    assert kwargs["endpoint"] == EndpointOptions(min_silence_ms=500.0, vad="silero")
    assert kwargs["reencode"] == "kv" and kwargs["files"] == ["a.wav"]
    assert not {"k", "policy", "vad", "min_silence_ms"} & set(kwargs)  # only inside their objects


def test_eval_takes_the_evaluation_modes_and_sweep_only_the_fields_it_offers() -> None:
    _, _, kwargs = parse(["eval", "--data", "m.jsonl", "--mode", "batch-kv", "--device", "cuda"])
    assert kwargs["options"] == EvalStreamOptions(mode="batch-kv", device="cuda")
    _, _, kwargs = parse(["sweep", "--data", "m.jsonl", "--output", "o", "--model", "m", "--ks", "1", "2",
                          "--chunk-ms", "160", "320", "--encoder-dtype", "bfloat16"])
    assert kwargs["options"] == StreamOptions(model="m", encoder_dtype="bfloat16")  # k, chunk_ms: the grid's axes
    assert kwargs["ks"] == [1, 2] and kwargs["chunk_ms"] == [160, 320]
    with pytest.raises(SystemExit):  # sweep offers no --policy-args (its axis is --policy-grid)
        parse(["sweep", "--data", "m.jsonl", "--output", "o", "--policy-args", "threshold=0.5"])


def test_flat_keyword_arguments_are_gathered_into_the_options_objects() -> None:
    def cmd(data: str, options: StreamOptions = StreamOptions(), endpoint: EndpointOptions = EndpointOptions(),
            limit: int = 0):
        return data, options, endpoint, limit

    assert flat_call(cmd, "d", model="m", k=2, vad="silero", limit=3) == (
        "d", StreamOptions(model="m", k=2), EndpointOptions(vad="silero"), 3)
    with pytest.raises(TypeError):  # a name no parameter or field has
        flat_call(cmd, "d", kk=2)


def test_the_deprecated_eval_cmd_warns_and_takes_the_old_keywords(monkeypatch) -> None:
    import asr_stream.cli.evaluation as moved
    from asr_stream.evaluation import commands

    seen = []
    monkeypatch.setattr(moved, "eval_cmd", lambda data, options=EvalStreamOptions(), output=None, limit=None,
                        segment="auto", baseline=None: seen.append((data, options, output)) or "summary")
    moved.eval_cmd.__annotations__ = {"options": EvalStreamOptions}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert commands.eval_cmd("m.jsonl", model="dir", k=2, mode="batch-kv", output="out") == "summary"
    assert seen == [("m.jsonl", EvalStreamOptions(model="dir", k=2, mode="batch-kv"), "out")]
    assert [x.category for x in w] == [DeprecationWarning] and "asr_stream.cli.evaluation.eval_cmd" in str(w[0].message)
