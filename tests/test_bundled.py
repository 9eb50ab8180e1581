"""The bundled default model and sample: present, small, loadable, and used by the CLI by default."""

import subprocess
import sys

import asr_stream
from asr_stream.audio import load_audio
from asr_stream.evaluation.wer import normalize_text
from asr_stream.model import SpeechLLM
from asr_stream.streaming import StreamingSession

SAMPLE = asr_stream.DEFAULT_MODEL_DIR.parent / "sample.wav"


def test_bundled_model_is_small_and_loads():
    d = asr_stream.default_model_dir()
    assert sum(f.stat().st_size for f in d.iterdir()) <= 30 * 2**20
    model = SpeechLLM.load(d)
    assert model.cfg.train_mode == "group" and model.chunk_ms == 320


def cli_final_text(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "asr_stream", "transcribe", str(SAMPLE), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    finals = [line for line in r.stdout.splitlines() if line.startswith("final: ")]
    assert len(finals) == 1
    return finals[0][len("final: "):]


def test_transcribe_cli_uses_the_bundled_model_and_matches_the_library():
    model = SpeechLLM.load(asr_stream.default_model_dir())
    s = StreamingSession(model, k=3)
    wave = load_audio(SAMPLE)
    for i in range(0, len(wave), 1600):
        s.push(wave[i : i + 1600])
    s.finish()
    assert s.text  # the model writes something for speech
    assert cli_final_text() == s.text


def test_bundled_sample_gives_the_expected_text():
    expected = (SAMPLE.with_suffix(".txt")).read_text().strip()
    assert normalize_text(cli_final_text()) == normalize_text(expected)
