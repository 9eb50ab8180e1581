import numpy as np
import pytest
import soundfile as sf

from asr_stream.audio import SAMPLE_RATE, AudioError, load_audio, to_mono_16k


def tone(rate: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x


@pytest.mark.parametrize(
    "ext,subtype,rate,channels",
    [
        ("wav", "PCM_16", 16000, 1),
        ("wav", "PCM_U8", 8000, 1),
        ("wav", "PCM_24", 48000, 2),
        ("wav", "FLOAT", 22050, 1),
        ("wav", "PCM_16", 44100, 6),
        ("flac", "PCM_16", 32000, 2),
        ("flac", "PCM_24", 16000, 1),
        ("ogg", "VORBIS", 24000, 1),
    ],
)
def test_formats_load_as_16k_mono(tmp_path, ext, subtype, rate, channels):
    p = tmp_path / f"x.{ext}"
    sf.write(p, tone(rate, channels=channels), rate, subtype=subtype)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - SAMPLE_RATE // 2) <= 2
    # the 440 Hz tone survives resampling and down-mixing: it is the strongest bin
    spec = np.abs(np.fft.rfft(x[1000:7000]))
    assert abs(np.argmax(spec) * SAMPLE_RATE / 6000 - 440) < 10
    expected_amp = 0.5 * np.mean([(c + 1) / channels for c in range(channels)]) if channels > 1 else 0.5
    assert abs(np.abs(x[2000:6000]).max() - expected_amp) < 0.05


def test_int_arrays_are_scaled():
    x = to_mono_16k((np.ones(1600) * 16384).astype(np.int16), 16000)
    assert np.allclose(x, 0.5)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_bytes(b"RIFF\x00\x00garbage that is not audio at all"), p)[1], "cannot decode audio"),
        (lambda p: (p.write_text("just text"), p)[1], "cannot decode audio"),
        (lambda p: (sf.write(p, np.zeros(0), 16000), p)[1], "audio is empty"),
        (lambda p: (sf.write(p, np.full(800, np.nan), 16000, subtype="FLOAT"), p)[1], "no finite samples"),
        (lambda p: (sf.write(p, np.r_[np.zeros(10), np.inf], 16000, subtype="FLOAT"), p)[1], "NaN/inf"),
        (lambda p: (sf.write(p, np.zeros(100), 4000), p)[1], "outside the supported"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
    ],
    ids=["missing", "corrupt", "text", "empty", "all-nan", "some-inf", "rate", "directory"],
)
def test_bad_input_one_line_error(tmp_path, make, message):
    p = make(tmp_path / "bad.wav")
    with pytest.raises(AudioError) as e:
        load_audio(p)
    msg = str(e.value)
    assert message in msg and str(p) in msg and "\n" not in msg


def test_zero_channels():
    with pytest.raises(AudioError, match="zero channels"):
        to_mono_16k(np.zeros((100, 0), np.float32), 16000, "x.wav")
