"""One result schema for ``transcribe --json`` and ``client --json`` (issue 29): the fields of
asr_stream.transcript.RESULT_FIELDS, with the same names, units and types, in both; client's older keys still there."""

from __future__ import annotations

import json

import soundfile as sf

from asr_stream.server import Server, ServerConfig
from asr_stream.transcript import RESULT_FIELDS, SEGMENT_FIELDS

from .test_serve import ENDPOINT, alone, cfg, model, running, waves  # noqa: F401


def shape(v):
    """The JSON types of ``v``, nested (lists by their first item)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__


def test_transcribe_and_client_write_the_same_fields(model, cfg, tmp_path, capsys):
    """The same file through `transcribe --json` (the model, saved) and `client --json` (the model, served): every file
    entry has RESULT_FIELDS with the same types, each segment SEGMENT_FIELDS, each word text and time_ms; the
    client's values are the served stream's (its lone session's segments, its audio seconds); its older keys (url,
    finals, audio_ms) are still written."""
    from asr_stream.cli import main

    w = waves()[1]
    sf.write(tmp_path / "a.wav", w, 16000, subtype="FLOAT")
    model_dir = model.save(tmp_path / "model")
    main(["transcribe", str(tmp_path / "a.wav"), "--model", str(model_dir), "--k", "2", "--json", str(tmp_path / "t.json")])
    with running(Server(model, cfg, ENDPOINT, ServerConfig(max_clients=1))) as url:
        main(["client", str(tmp_path / "a.wav"), "--url", url, "--json", str(tmp_path / "c.json")])
    capsys.readouterr()
    t, c = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("t", "c"))
    (tf,), (cf,) = t["files"], c["files"]
    assert tf["segments"] and cf["segments"] and tf["words"] and cf["words"]
    for f in (tf, cf):
        assert set(RESULT_FIELDS) <= set(f) and all(set(SEGMENT_FIELDS) <= set(s) for s in f["segments"])
    common = lambda f: {k: shape(f[k]) for k in RESULT_FIELDS}  # noqa: E731
    seg = lambda f: [{k: shape(s[k]) for k in SEGMENT_FIELDS} for s in f["segments"]][:1]  # noqa: E731
    word = lambda f: [{k: shape(x[k]) for k in ("text", "time_ms")} for x in f["words"]][:1]  # noqa: E731
    assert (common(tf) | {"segments": seg(tf), "words": word(tf)}) == (common(cf) | {"segments": seg(cf), "words": word(cf)})
    assert set(t) >= {"settings", "files", "failed"} and set(c) >= {"settings", "files", "failed"}
    ref = alone(model, cfg, w)
    assert cf["segments"] == [{k: s.as_dict()[k] for k in SEGMENT_FIELDS} for s in ref.segments]
    assert cf["audio_s"] == tf["audio_s"] == len(w) / 16000 and cf["text"] == ref.text and cf["complete"] is True
    assert c["url"] == url and cf["audio_ms"] == len(w) / 16 and [e["type"] for e in cf["finals"]] == ["final"] * len(ref.segments)
