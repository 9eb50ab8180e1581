"""The tiny twin's config mirrors the real LibriSpeech config, and tools/training/run_config.py moves a run's paths."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..conftest import import_script

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / name).read_text())


def _run_config():
    return import_script("tools/training", "run_config")


def test_tiny_twin_config_has_the_real_structure():
    real, tiny = _load("phi3_librispeech.yaml"), _load("phi3_librispeech_tiny.yaml")
    r, t = real["model"]["model"], tiny["model"]["model"]
    assert set(r) == set(t)
    for key in ("prompt", "ctc_weight", "train_mode", "train_k", "phi"):
        assert t[key] == r[key], key
    for key in ("kind", "chunk_ms", "hf_left_context_ms", "freeze"):
        assert t["encoder"][key] == r["encoder"][key], key
    for key in ("lora_r", "lora_alpha", "freeze", "dtype"):
        assert t["decoder"][key] == r["decoder"][key], key
    assert t["projector"]["stack"] == r["projector"]["stack"]
    assert tiny["trainer"]["precision"] == real["trainer"]["precision"] == "bf16-mixed"
    classes = lambda cfg, key: [c["class_path"] for c in cfg["trainer"][key]]  # noqa: E731
    assert classes(tiny, "callbacks") == classes(real, "callbacks")
    assert set(classes(tiny, "logger")) <= set(classes(real, "logger"))
    assert set(tiny["data"]) == set(real["data"]) and set(tiny["model"]) >= set(real["model"]) - {"decay_steps"}


def test_whisper_config_is_the_hubert_config_with_whisper_s_encoder():
    """conf/phi3_librispeech_whisper.yaml offers Whisper beside HuBERT: every setting but the encoder's kind and
    checkpoint is the HuBERT config's (chunk, context, frozen included), so results compare encoder to encoder."""
    hubert, whisper = _load("phi3_librispeech.yaml"), _load("phi3_librispeech_whisper.yaml")
    h_enc, w_enc = hubert["model"]["model"].pop("encoder"), whisper["model"]["model"].pop("encoder")
    assert whisper == hubert
    assert w_enc == {**h_enc, "kind": "whisper", "hf_name_or_path": "openai/whisper-small"}


def test_run_config_moves_every_output_into_the_run(tmp_path):
    rc = _run_config()
    out = tmp_path / "phi256" / "config.yaml"
    assert rc.main([str(ROOT / "conf/phi3_librispeech.yaml"), str(out), "--run", str(tmp_path / "phi256"),
                    "--phi", "256", "--train", "a.jsonl", "b.jsonl", "--val", "d.jsonl",
                    "--set", "model.model.decoder.name_or_path=/models/phi3", "--set", "trainer.max_steps=10"]) == 0
    cfg = yaml.safe_load(out.read_text())
    run = str(tmp_path / "phi256")
    assert [lg["init_args"]["save_dir"] for lg in cfg["trainer"]["logger"]] == [run + "/logs"] * 2
    assert cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"] == run + "/ckpt"
    assert cfg["model"]["export_dir"] == run + "/model" and cfg["model"]["model"]["phi"] == 256.0
    assert cfg["data"]["train"] == ["a.jsonl", "b.jsonl"] and cfg["data"]["val"] == ["d.jsonl"]
    assert cfg["model"]["model"]["decoder"]["name_or_path"] == "/models/phi3" and cfg["trainer"]["max_steps"] == 10
    # everything else is the input config's
    real = _load("phi3_librispeech.yaml")
    assert cfg["model"]["model"]["encoder"] == real["model"]["model"]["encoder"]
    assert cfg["trainer"]["strategy"] == real["trainer"]["strategy"]


def test_run_config_refuses_unknown_keys_and_overwriting_its_input(tmp_path, capsys):
    rc = _run_config()
    src = tmp_path / "c.yaml"
    src.write_text((ROOT / "conf/phi3_librispeech_tiny.yaml").read_text())
    before = src.read_text()
    assert rc.main([str(src), str(tmp_path / "o.yaml"), "--run", "r", "--set", "model.model.decodr.dtype=x"]) == 2
    assert rc.main([str(src), str(src), "--run", "r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "decodr" in err[0] and "overwrite" in err[1]
    assert src.read_text() == before and not (tmp_path / "o.yaml").exists()
