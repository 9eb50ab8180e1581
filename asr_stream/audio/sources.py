"""Live audio sources: the microphone and a file paced like one (pauses are found by asr_stream.streaming.segment).

Every source yields 16 kHz mono float32 blocks (numpy arrays, any length) for
:meth:`asr_stream.streaming.StreamingSession.push`. Failures a person can cause (no PortAudio, no input
device, an unknown device index) raise :class:`AudioSourceError` with a one-line message.

Testing aid: when the environment variable ``ASR_STREAM_FAKE_MIC`` names an audio file,
:func:`microphone_blocks` ignores the sound card and yields that file paced in real time (then ends), so
the live path can be exercised end to end on machines without audio hardware or PortAudio.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from typing import Callable, Iterator

import numpy as np

from .io import SAMPLE_RATE

log = logging.getLogger(__name__)

FAKE_MIC_ENV = "ASR_STREAM_FAKE_MIC"  # testing aid: path of an audio file to use instead of the microphone
PORTAUDIO_HINT = "install it with `apt-get install libportaudio2` (Debian/Ubuntu) or your system's PortAudio package"


class AudioSourceError(RuntimeError):
    """A live audio source that cannot be used (no PortAudio, no such device, the stream died)."""


def _sounddevice():
    """Import sounddevice, turning 'PortAudio missing' into a one-line AudioSourceError."""
    try:
        import sounddevice as sd
    except OSError as e:  # sounddevice raises OSError('PortAudio library not found') at import
        raise AudioSourceError(f"{str(e).splitlines()[0] if str(e) else 'PortAudio not usable'}: {PORTAUDIO_HINT}") from None
    except ImportError:
        raise AudioSourceError("the microphone needs the sounddevice package: pip install 'asr-stream[mic]'") from None
    return sd


def list_input_devices() -> list[dict]:
    """Devices that can record: ``[{index, name, channels, default_samplerate (Hz)}]`` in PortAudio order.

    Raises AudioSourceError when PortAudio is missing or no device has an input channel.
    """
    return _list_inputs(_sounddevice())


def _list_inputs(sd) -> list[dict]:
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as e:
        raise AudioSourceError(f"cannot list audio devices ({str(e).splitlines()[0]})") from None
    found = [
        {"index": i, "name": d["name"], "channels": int(d["max_input_channels"]),
         "default_samplerate": float(d["default_samplerate"])}
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]
    if not found:
        raise AudioSourceError("no audio input device found (PortAudio sees none): "
                               "connect a microphone or check the ALSA/PulseAudio setup")
    return found


def _resolve_input(sd, device: int | str | None) -> dict:
    """The input device to open, as a list_input_devices() entry."""
    inputs = _list_inputs(sd)
    if device is None:
        try:
            default = int(sd.query_devices(kind="input")["index"])  # PortAudio's default input
        except Exception:  # noqa: BLE001 - no default input (PortAudioError) or an older dict without "index"
            default = -1
        # without a usable default, take the first device that records
        return next((d for d in inputs if d["index"] == default), inputs[0])
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        n = int(device)
        for d in inputs:
            if d["index"] == n:
                return d
        raise AudioSourceError(f"no input device with index {n}; see --list-devices")
    matches = [d for d in inputs if str(device).lower() in d["name"].lower()]
    if not matches:
        raise AudioSourceError(f"no input device named like {device!r}; see --list-devices")
    return matches[0]


def microphone_blocks(device: int | str | None = None, block_ms: int = 100, queue_max: int = 100,
                      samplerate: float | None = None, stall_timeout_s: float = 10.0) -> Iterator[np.ndarray]:
    """Record from an input device and yield 16 kHz mono float32 blocks of about ``block_ms`` ms.

    device: PortAudio index, a substring of the device name, or None for the default input.
    block_ms: audio per callback block, in ms (the latency floor of the live transcript).
    queue_max: blocks buffered between the audio thread and the consumer (default 100 = 10 s at 100 ms).
        When the consumer falls that far behind (transcription slower than real time), new blocks are
        dropped and a warning is logged, so memory stays bounded.
    samplerate: capture rate in Hz; default: the device's native default rate (resampled to 16 kHz here,
        with one soxr stream so that block edges do not click).
    stall_timeout_s: raise AudioSourceError when the device delivers nothing for this many seconds.

    The device is checked when this is called (unknown index -> AudioSourceError); the stream opens on
    the first ``next()`` and closes when the iterator is closed, exhausted or garbage collected.
    """
    if block_ms <= 0:
        raise ValueError(f"block_ms must be > 0, got {block_ms}")
    fake = os.environ.get(FAKE_MIC_ENV)
    if fake:
        from .io import load_audio

        return paced_blocks(load_audio(fake), block_ms=block_ms, realtime=True)
    sd = _sounddevice()
    info = _resolve_input(sd, device)
    rate = float(samplerate or info["default_samplerate"])
    return _record(sd, info, rate, block_ms, queue_max, stall_timeout_s)


def _record(sd, info: dict, rate: float, block_ms: int, queue_max: int, stall_timeout_s: float) -> Iterator[np.ndarray]:
    blocksize = max(1, int(round(rate * block_ms / 1000.0)))
    q: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(1, queue_max))
    stats = {"dropped": 0, "overflows": 0}

    def callback(indata: np.ndarray, frames: int, t, status) -> None:
        # runs on PortAudio's thread: no blocking, no exceptions; copy because indata is reused
        if status.input_overflow:
            stats["overflows"] += 1
        block = indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0].copy()
        try:
            q.put_nowait(block.astype(np.float32, copy=False))
        except queue.Full:
            stats["dropped"] += frames

    stream = None
    for channels in dict.fromkeys([1, info["channels"]]):  # mono first; down-mix if the device is multi-channel only
        try:
            stream = sd.InputStream(device=info["index"], samplerate=rate, channels=channels, dtype="float32",
                                    blocksize=blocksize, callback=callback)
            break
        except (sd.PortAudioError, ValueError) as e:
            err = str(e).splitlines()[0] if str(e) else type(e).__name__
    if stream is None:
        raise AudioSourceError(f"cannot open input device {info['index']} ({info['name']}) at {rate:.0f} Hz: {err}")

    resampler = None
    if int(round(rate)) != SAMPLE_RATE:
        try:
            import soxr  # a librosa dependency; streaming state makes block edges seamless
        except ImportError:
            raise AudioSourceError("resampling the microphone needs the soxr package: pip install soxr") from None
        # HQ matches librosa's res_type='soxr_hq' used for files, so live and file input agree
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    warned = 0
    where = f"input device {info['index']} ({info['name']})"
    with stream:
        last = time.monotonic()
        while True:
            try:
                # a timeout so a dead stream is noticed; Ctrl-C interrupts the wait on POSIX either way
                block = q.get(timeout=0.25)
            except queue.Empty:
                if not stream.active:
                    raise AudioSourceError(f"{where} stopped delivering audio") from None
                if time.monotonic() - last > stall_timeout_s:
                    raise AudioSourceError(f"no audio from {where} for {stall_timeout_s:g} s") from None
                continue
            last = time.monotonic()
            if stats["dropped"] > warned:
                log.warning("transcription is slower than real time: dropped %.1f s of audio so far", stats["dropped"] / rate)
                warned = stats["dropped"] * 2  # warn again only when the loss doubles
            out = resampler.resample_chunk(block) if resampler is not None else block
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)


def paced_blocks(samples: np.ndarray, block_ms: int = 100, realtime: bool = True, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[np.ndarray]:
    """Cut 16 kHz ``samples`` into ``block_ms`` blocks; with ``realtime``, release them like a microphone.

    Block i (samples [i, i+1) * block_ms * 16) is released at i * block_ms ms after the first one, on an
    absolute schedule (seconds from ``clock``), so sleeping never drifts; a consumer that falls behind gets
    the late blocks at once, as from a microphone's buffer. ``clock``/``sleep`` are injectable for tests.
    """
    if block_ms <= 0:
        raise ValueError(f"block_ms must be > 0, got {block_ms}")
    a = np.asarray(samples, dtype=np.float32).reshape(-1)
    step = int(round(block_ms * SAMPLE_RATE / 1000))
    t0 = clock() if realtime else 0.0
    for i, start in enumerate(range(0, a.shape[0], step)):
        if realtime:
            wait = t0 + i * block_ms / 1000.0 - clock()
            if wait > 0:
                sleep(wait)
        yield a[start : start + step]


__all__ = ["AudioSourceError", "FAKE_MIC_ENV", "list_input_devices", "microphone_blocks", "paced_blocks"]
