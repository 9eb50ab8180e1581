"""libespeak-ng through ctypes: the espeak-ng command line's audio, plus where each word starts.

The synthetic corpus needs word timings (for latency against a reference), and the ``espeak-ng`` command
line does not print them. The library it is built on reports a word event, with the position in the text
and the time in the audio, for every word it speaks. :class:`Espeak` calls that library the way the command
line does (voice by name, else by language; then rate and pitch; synchronous output with
``espeakCHARS_AUTO | espeakENDPAUSE``), so the samples are the command line's, sample for sample
(``tests/unit/test_synth_corpus.py`` checks it against ``espeak-ng -w``), and the events come with them.

One synthesis per forked child. The library carries state from one synthesis to the next (a repeated call
with the same text and settings comes out a few samples longer or shorter), so a long-lived engine would
make an utterance depend on the ones before it, and a corpus on how its work was divided. Instead the parent
initialises the library once and never speaks; each call forks a child that speaks once from that fresh
state (as a new ``espeak-ng`` process would, without loading the voice data again), sends the samples and
events back through a pipe and exits. Forking keeps the cost near that of one synthesis.

The child also resets the C library's ``rand()`` state (``srand(1)``, the state every new process starts
in). libespeak-ng 1.51 draws the breath noise of the breathy variants (``+f2``, ``+f3``: ``breath`` in
their voice files) from ``rand()``, and a forked child inherits the parent's ``rand()`` state: without the
reset, a single ``rand()`` call anywhere in the parent process (any library, at any time) changed those
voices' samples (up to 1,380 of 32,768 for ``en-us+f3``), while the command line always starts from
``srand(1)``. That made the corpus depend on what else ran in the process, and the tests flaky.

:func:`word_spans` turns a :class:`Speech`'s word events into each word's (start, end) seconds, and
:func:`voice_exists` asks the ``espeak-ng`` command line whether it has a voice (the library falls back silently).

Reference for the C API: ``speak_lib.h`` of espeak-ng (``espeak_Initialize``, ``espeak_SetSynthCallback``,
``espeak_SetVoiceByName``, ``espeak_SetVoiceByProperties``, ``espeak_SetParameter``, ``espeak_Synth``,
``espeak_EVENT``) and its ``espeak-ng.c`` command line for the order of the calls.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_AUTO = 0
_ENDPAUSE = 0x1000  # the command line passes it: a pause after the last clause
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1  # espeak_EVENT_TYPE
_EE_OK = 0


class EspeakError(RuntimeError):
    """libespeak-ng is missing or failed. One-line message."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Speech:
    """What one call produced: int16 ``samples`` at ``sample_rate`` Hz, and ``word_starts``: for each word
    event, (0-based character offset of the word in the text given, start time in seconds)."""

    samples: np.ndarray
    sample_rate: int
    word_starts: tuple[tuple[int, float], ...]


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_HEADER = struct.Struct("<iiii")  # status (0 ok), sample rate, samples, word events


class Espeak:
    """libespeak-ng, initialised in this process; :meth:`speak` forks a child per call (see the module doc).
    Use :func:`engine` for the process's shared instance."""

    def __init__(self, library: str | None = None) -> None:
        name = library or ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise EspeakError(f"cannot load {name} (apt-get install espeak-ng)") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}): is espeak-ng-data installed?")
        self._lib = lib
        self._default_rate = int(rate)
        self._get_rate = getattr(lib, "espeak_ng_GetSampleRate", None)  # MBROLA voices run at 16 kHz
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._words: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._on_output)  # kept referenced: the library holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._libc_srand = ctypes.CDLL(None).srand  # the srand of the C library libespeak-ng's rand() is in
        self._libc_srand.argtypes = [ctypes.c_uint]

    def _on_output(self, wav, n: int, events) -> int:
        if n > 0:  # plain bytes: the forked child touches nothing but ctypes and the pipe
            self._chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._words.append((e.text_position - 1, e.audio_position))
            i += 1
        return 0  # go on

    def _speak_here(self, text: bytes, voice: str, rate: int, pitch: int) -> tuple[int, bytes, list[tuple[int, int]]]:
        lib = self._lib
        self._chunks, self._words = [], []
        self._libc_srand(1)  # rand() as in a new process (breath noise; see the module doc)
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            sel = _Voice(languages=voice.encode())  # what the command line falls back to: a voice for the language
            if lib.espeak_SetVoiceByProperties(ctypes.byref(sel)) != _EE_OK:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        err = lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_AUTO | _ENDPAUSE, None, None)
        if err != _EE_OK:
            raise EspeakError(f"espeak-ng -v {voice}: synthesis failed (error {err})")
        sr = int(self._get_rate()) if self._get_rate is not None else self._default_rate
        return sr, b"".join(self._chunks), self._words

    def speak(self, text: str, voice: str, rate: int = 175, pitch: int = 50, timeout: float = 120.0) -> Speech:
        """Speak ``text`` (as given to ``espeak-ng``) with ``voice`` at ``rate`` words per minute and ``pitch``
        (0-99). Raises :class:`EspeakError` if the voice does not exist, synthesis fails or takes longer than
        ``timeout`` seconds."""
        data = text.encode("utf-8")
        with self._lock:  # one fork at a time: the child must see no other call half done
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError as e:
                os.close(r)
                os.close(w)
                raise EspeakError(f"espeak-ng: cannot start a synthesis process ({e})") from None
            if pid == 0:  # the child: speak once, send, exit without running any of the parent's cleanup
                os.close(r)
                try:
                    null = os.open(os.devnull, os.O_WRONLY)  # the library prints its own errors; ours say more
                    os.dup2(null, 2)
                    try:
                        sr, samples, words = self._speak_here(data, voice, rate, pitch)
                        out = (_HEADER.pack(0, sr, len(samples) // 2, len(words)) + samples
                               + b"".join(struct.pack("<ii", p, ms) for p, ms in words))
                    except BaseException as e:  # noqa: BLE001  (reported to the parent, which raises)
                        msg = str(e).encode()[:500]
                        out = _HEADER.pack(1, 0, len(msg), 0) + msg
                    with os.fdopen(w, "wb") as f:
                        f.write(out)
                finally:
                    os._exit(0)
            os.close(w)
            try:
                got = _read_child(r, pid, timeout, voice)
            finally:
                os.close(r)
            _, status = os.waitpid(pid, 0)
        if len(got) < _HEADER.size or status != 0:
            raise EspeakError(f"espeak-ng -v {voice}: the synthesis process died (status {status})")
        code, sr, n, m = _HEADER.unpack_from(got)
        body = got[_HEADER.size:]
        if code != 0:
            raise EspeakError(body[:n].decode(errors="replace"))
        samples = np.frombuffer(body, dtype=np.int16, count=n).copy()
        words = np.frombuffer(body, dtype=np.int32, count=2 * m, offset=2 * n).reshape(-1, 2)
        return Speech(samples, sr, tuple((int(p), int(ms) / 1000.0) for p, ms in words))


def _read_child(fd: int, pid: int, timeout: float, voice: str) -> bytes:
    """Everything the child writes to ``fd`` until it closes it; kills the child after ``timeout`` seconds."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise EspeakError(f"espeak-ng -v {voice}: synthesis timed out after {timeout:.0f} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return bytes(buf)
        buf += chunk


_ENGINE: Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> Espeak:
    """This process's libespeak-ng engine, made on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = Espeak()
        return _ENGINE


# ------------------------------------------------------------------ the voices the command line lists


def binary() -> str:
    """Path of the ``espeak-ng`` executable; EspeakError if it is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakError("espeak-ng not found on PATH (apt-get install espeak-ng)")
    return exe


@functools.lru_cache(maxsize=1)
def _voice_table() -> tuple[frozenset[str], frozenset[str]]:
    """(base voice names, variant names) that this espeak-ng lists; names lower-case."""
    exe = binary()
    bases: set[str] = set()
    for which in ("--voices", "--voices=mb"):  # the plain listing leaves out the MBROLA voices
        for line in subprocess.run([exe, which], capture_output=True, text=True).stdout.splitlines()[1:]:
            f = line.split()
            if len(f) >= 5:  # Pty Language Age/Gender VoiceName File [Other languages]
                bases.update((f[1].lower(), f[4].rsplit("/", 1)[-1].lower()))
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True).stdout
    variants = {m.lower() for m in re.findall(r"!v/(\S+)", out)}
    return frozenset(bases), frozenset(variants)


def voice_exists(voice: str) -> bool:
    """Whether espeak-ng lists ``voice`` (``base`` or ``base+variant``); EspeakError if it is not installed.

    Needed because espeak-ng silently falls back instead of failing: ``-v no-such-voice`` speaks Norwegian
    ("no") and ``-v en-us+typo`` plain en-us, which would make two "speakers" sound the same.
    """
    base, _, variant = voice.lower().partition("+")
    bases, variants = _voice_table()
    return base in bases and (not variant or variant in variants)


# --------------------------------------------------------------------------- word spans from the events


def word_spans(spoken: str, speech: Speech) -> list[tuple[float, float]] | None:
    """(start, end) in seconds of each space-separated word of ``spoken``, from espeak-ng's word events; None
    when the events do not fit the words (no event for the first word, or events out of order).

    A word starts at its event and ends with its last 10 ms frame louder than -34 dB of the utterance's peak
    before the next event, so pauses (commas, the end; silent or a faint breath, by voice) are left out of
    the words around them. espeak-ng
    speaks some word pairs as one unit with one event ("of the", "does not"); such a unit's time is divided
    between its words in proportion to their letters, so those inner boundaries are estimates. A gap under
    30 ms between one word's end and the next event is not a pause: the next word starts where the last ended.
    """
    bounds, pos = [], 0
    for tok in spoken.split(" "):
        bounds.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    starts: list[float | None] = [None] * len(bounds)
    firsts = [b[0] for b in bounds]
    for char, t in speech.word_starts:
        i = bisect.bisect_right(firsts, char) - 1
        if i >= 0 and char < bounds[i][1] and starts[i] is None:  # a second event inside a word is ignored
            starts[i] = t
    heads = [i for i, t in enumerate(starts) if t is not None]
    if not heads or heads[0] != 0 or any(starts[b] < starts[a] for a, b in zip(heads, heads[1:])):  # type: ignore[operator]
        return None
    sr, x = speech.sample_rate, np.abs(speech.samples.astype(np.int32))
    frame = max(1, sr // 100)
    env = np.maximum.reduceat(x, np.arange(0, len(x), frame)) if len(x) else x
    loud = env >= 0.02 * (env.max() if len(env) else 0)
    spans: list[tuple[float, float]] = []
    for n, h in enumerate(heads):
        t0 = float(starts[h])  # type: ignore[arg-type]
        nxt = heads[n + 1] if n + 1 < len(heads) else len(bounds)
        t1 = float(starts[nxt]) if nxt < len(bounds) else len(x) / sr  # type: ignore[arg-type]
        a, b = int(round(t0 * sr)) // frame, int(round(t1 * sr)) // frame  # frames before the next event
        sound = np.flatnonzero(loud[a:b])
        end = min(t1, (a + int(sound[-1]) + 1) * frame / sr) if sound.size else t0
        letters = [bounds[i][1] - bounds[i][0] for i in range(h, nxt)]  # the unit's words share its time
        edges = np.concatenate([[0], np.cumsum(letters)]) / sum(letters) * (end - t0) + t0
        spans += [(float(edges[i]), float(edges[i + 1])) for i in range(len(letters))]
    for i in range(1, len(spans)):
        if spans[i][0] - spans[i - 1][1] < 0.03:
            spans[i] = (spans[i - 1][1], spans[i][1])
    return spans
