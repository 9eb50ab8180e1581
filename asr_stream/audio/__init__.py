"""Audio in: files and live sources to 16 kHz mono float32, and log-mel features."""

from .io import SAMPLE_RATE, AudioError, load_audio, to_mono_16k

__all__ = ["SAMPLE_RATE", "AudioError", "load_audio", "to_mono_16k"]
