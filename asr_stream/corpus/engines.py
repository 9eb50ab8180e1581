"""Speech engines for the synthetic corpus: espeak-ng, Flite's built-in voices and Festival's voices.

A voice is named ``engine:name``: ``espeak:en-us+f3``, ``flite:awb``, ``festival:ked_diphone``. A bare name
(``en-us+f3``) is an espeak-ng voice, and espeak-ng voices are stored under their bare names
(:func:`canonical_voice`), so a corpus made with espeak-ng alone keeps its speaker ids and bytes.

Every engine's :meth:`Engine.speak` returns 16 kHz mono float32 samples and, where the engine reports them,
the (start, end) seconds of each space-separated word of the text (None when it does not, or when its words
do not line up with the text's). The same input gives the same samples (tested per engine):

* **espeak-ng**: :mod:`asr_stream.corpus.espeak` (the library, one forked child per call) and
  :func:`asr_stream.corpus.espeak.word_spans` for the word timings.
* **Flite** (``apt-get install flite``; voices kal (8 kHz), kal16, awb, rms, slt): ``libflite`` through ctypes,
  in this process. Word spans are the voice's own segment times: a word runs from the end of the segment
  before its first phone to the end of its last phone (pauses are their own segments, so they are left out).
  The clustergen voices (awb, rms, slt) draw excitation noise from the C ``rand()``; it is reset with
  ``srand(1)`` before each utterance, as a new ``flite`` process starts, so the samples are the command
  line's, sample for sample, whatever else ran in the process. Rate: the voice's ``duration_stretch`` times
  ``175 / rate``; pitch: :func:`pitch_factor` times the diphone voices' ``int_f0_target_mean``, or as the
  clustergen voices' ``f0_shift`` (rms ignores it: its pitch never varies).
* **Festival** (``festival`` + ``festvox-kallpc16k``, ``festvox-kdlpc16k``, ``festvox-us-slt-hts``): one
  ``festival --pipe`` process per utterance, given a Scheme script that synthesises, saves the wave and prints
  each word's segment times (the same features as for Flite). Rate: ``Duration_Stretch = 175 / rate``;
  pitch: ``target_f0_mean`` of ``int_lr_params`` (the diphone voices) times :func:`pitch_factor`; the HTS voice
  (slt, evaluation-only) ignores both rate and pitch. About 0.2-0.4 s per utterance for start-up.

**Evaluation-only speakers.** ``kal`` and ``slt`` are the test speakers never trained on, in every engine
that has them (Flite's kal, kal16 and slt; Festival's kal_diphone and cmu_us_slt_arctic_hts).
:func:`check_training_voices` raises if any of their voices is put into train or dev.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from typing import Protocol, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE  # noqa: F401  (what every engine's speak() returns)


#: Speakers that are evaluation-only in every engine (never in train or dev).
EVAL_ONLY_SPEAKERS: frozenset[str] = frozenset({"kal", "slt"})

#: Flite's built-in English voices (``flite -lv``; awb_time is a limited-domain clock voice, left out).
FLITE_VOICES: tuple[str, ...] = ("kal", "kal16", "awb", "rms", "slt")
#: Festival's English voices in Debian (packages festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts in main;
#: festvox-rablpc16k (rab, British male) and festvox-don (don, British male, a small old diphone set) in contrib).
FESTIVAL_VOICES: tuple[str, ...] = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts", "rab_diphone", "don_diphone")

#: The speaker behind each non-espeak voice (several voices share one: kal is in Flite twice and in Festival).
_SPEAKER = {
    "flite:kal": "kal", "flite:kal16": "kal", "flite:awb": "awb", "flite:rms": "rms", "flite:slt": "slt",
    "festival:kal_diphone": "kal", "festival:ked_diphone": "ked", "festival:cmu_us_slt_arctic_hts": "slt",
    "festival:rab_diphone": "rab", "festival:don_diphone": "don",
}
_FEMALE = {"slt"}

#: Non-espeak voices a training pool may use (every one whose speaker is not evaluation-only).
TRAIN_VOICES_OTHER_ENGINES: tuple[str, ...] = ("flite:awb", "flite:rms", "festival:ked_diphone", "festival:rab_diphone",
                                                "festival:don_diphone")
#: The unseen-speaker test splits: split name -> voices (round-robin over the test sentences).
UNSEEN_SPEAKER_SPLITS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("test-kal", ("flite:kal16", "flite:kal", "festival:kal_diphone")),
    ("test-slt", ("flite:slt", "festival:cmu_us_slt_arctic_hts")),
)

DEFAULT_RATE = 175  # words per minute: espeak-ng's default, the reference for every engine's rate
DEFAULT_PITCH = 50  # espeak-ng's 0-99 scale

Spans = list[tuple[float, float]]


class EngineError(RuntimeError):
    """An engine or voice is missing or failed. One-line message."""


class Engine(Protocol):
    """What the corpus needs from a speech engine."""

    name: str

    def has_voice(self, voice: str) -> bool:
        """Whether ``voice`` (the name without the engine prefix) can be used here."""
        ...

    def speak(self, text: str, voice: str, rate: int = DEFAULT_RATE, pitch: int = DEFAULT_PITCH
              ) -> tuple[np.ndarray, Spans | None]:
        """16 kHz float32 samples of ``text`` and each space-separated word's (start, end) seconds, or None."""
        ...


def split_voice(voice: str) -> tuple[str, str]:
    """(engine, name) of a voice name; a bare name is espeak-ng's."""
    engine, sep, name = voice.partition(":")
    if not sep:
        return "espeak", voice
    if engine not in ("espeak", "flite", "festival") or not name:
        raise EngineError(f"bad voice {voice!r}: expected espeak:NAME, flite:NAME, festival:NAME or an espeak-ng name")
    return engine, name


def canonical_voice(voice: str) -> str:
    """The stored name: espeak-ng voices bare (``en-us+f3``), others ``engine:name``."""
    engine, name = split_voice(voice)
    return name if engine == "espeak" else f"{engine}:{name}"


def speaker_of(voice: str) -> str:
    """The speaker a voice is: ``kal`` for every kal voice, ``slt`` for both slt voices, else the voice."""
    v = canonical_voice(voice)
    return _SPEAKER.get(v, v)


def is_female(voice: str) -> bool | None:
    """True/False for Flite and Festival voices; None for espeak-ng (decided by its variant elsewhere)."""
    v = canonical_voice(voice)
    return speaker_of(v) in _FEMALE if v in _SPEAKER else None


def check_training_voices(voices: Sequence[str], what: str = "training") -> None:
    """Raise :class:`EngineError` if any voice is an evaluation-only speaker (kal, slt)."""
    bad = [v for v in voices if speaker_of(v) in EVAL_ONLY_SPEAKERS]
    if bad:
        raise EngineError(f"{', '.join(bad)}: speaker(s) {', '.join(sorted({speaker_of(v) for v in bad}))} are "
                          f"evaluation-only and must not be {what} voices")


def pitch_factor(pitch: int) -> float:
    """F0 multiplier for espeak-ng's 0-99 pitch scale on the other engines: 50 -> 1, +-50 -> +-half an octave."""
    return float(2.0 ** ((pitch - DEFAULT_PITCH) / 100.0))


def _to_16k(samples: np.ndarray, sample_rate: int, where: str) -> np.ndarray:
    from ..audio.io import to_mono_16k

    return to_mono_16k(samples, sample_rate, where)


def match_words(text: str, names: Sequence[str], spans: Spans) -> Spans | None:
    """``spans`` if the engine's words ``names`` are the text's words one for one (apostrophes and case
    aside), else None: an engine that split or expanded a word gives no trustworthy timing for the text."""
    words = [re.sub(r"[^a-z]", "", w.lower()) for w in text.split()]
    got = [re.sub(r"[^a-z]", "", n.lower()) for n in names]
    if words != got or len(spans) != len(words):
        return None
    return [(float(a), float(max(a, b))) for a, b in spans]


# ----------------------------------------------------------------------------------------------------- Flite


class _FliteWave(ctypes.Structure):  # cst_wave (flite 2.x cst_wave.h)
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class _FliteVoice(ctypes.Structure):  # cst_voice (flite 2.x cst_voice.h)
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p),
                ("utt_init", ctypes.c_void_p)]


_WORD_START = b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"  # end of the segment before the first phone
_WORD_END = b"R:SylStructure.daughtern.daughtern.R:Segment.end"


class FliteEngine:
    """libflite through ctypes (see the module doc). One instance per process: :func:`get_engine`."""

    name = "flite"

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("flite") or "libflite.so.1", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            raise EngineError("cannot load libflite (apt-get install flite)") from None
        c = ctypes
        for fn, res, args in (
            ("flite_synth_text", c.c_void_p, [c.c_char_p, c.c_void_p]),
            ("utt_wave", c.POINTER(_FliteWave), [c.c_void_p]),
            ("utt_relation", c.c_void_p, [c.c_void_p, c.c_char_p]),
            ("relation_head", c.c_void_p, [c.c_void_p]),
            ("item_next", c.c_void_p, [c.c_void_p]),
            ("ffeature_float", c.c_float, [c.c_void_p, c.c_char_p]),
            ("ffeature_string", c.c_char_p, [c.c_void_p, c.c_char_p]),
            ("feat_set_float", None, [c.c_void_p, c.c_char_p, c.c_float]),
            ("get_param_float", c.c_float, [c.c_void_p, c.c_char_p, c.c_float]),
            ("delete_utterance", None, [c.c_void_p]),
        ):
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        lib.flite_init()
        self._lib = lib
        # name -> (cst_voice*, its int_f0_target_mean or 0 if it has none, its duration_stretch), as registered
        self._voices: dict[str, tuple[ctypes._Pointer, float, float]] = {}
        self._lock = threading.Lock()
        self._srand = ctypes.CDLL(None).srand  # the C library's, which libflite's rand() uses
        self._srand.argtypes = [ctypes.c_uint]

    def _voice(self, name: str):
        if name not in self._voices:
            if name not in FLITE_VOICES:
                raise EngineError(f"flite has no voice {name!r} (voices: {', '.join(FLITE_VOICES)})")
            try:
                vlib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1", mode=ctypes.RTLD_GLOBAL)
            except OSError:
                raise EngineError(f"cannot load flite voice {name} (apt-get install flite)") from None
            reg = getattr(vlib, f"register_cmu_us_{name}")
            reg.restype, reg.argtypes = ctypes.POINTER(_FliteVoice), [ctypes.c_char_p]
            v = reg(None)
            if not v:
                raise EngineError(f"flite voice {name} failed to register")
            f0 = float(self._lib.get_param_float(v.contents.features, b"int_f0_target_mean", 0.0))
            stretch = float(self._lib.get_param_float(v.contents.features, b"duration_stretch", 1.0))
            self._voices[name] = (v, f0, stretch)
        return self._voices[name]

    def has_voice(self, voice: str) -> bool:
        try:
            with self._lock:
                self._voice(voice)
        except EngineError:
            return False
        return True

    def speak(self, text: str, voice: str, rate: int = DEFAULT_RATE, pitch: int = DEFAULT_PITCH
              ) -> tuple[np.ndarray, Spans | None]:
        lib = self._lib
        with self._lock:
            v, f0, stretch = self._voice(voice)
            # Set every call: the features live on the shared voice and would otherwise carry over. Relative to
            # the voice's own values (kal's duration_stretch is 1.1), so rate 175 / pitch 50 is the command line's.
            lib.feat_set_float(v.contents.features, b"duration_stretch", stretch * DEFAULT_RATE / float(rate))
            if f0 > 0:  # the diphone voices (kal, kal16)
                lib.feat_set_float(v.contents.features, b"int_f0_target_mean", f0 * pitch_factor(pitch))
            else:  # the clustergen voices (awb, rms, slt) scale their predicted F0 by f0_shift
                lib.feat_set_float(v.contents.features, b"f0_shift", pitch_factor(pitch))
            self._srand(1)  # as a new flite process (clustergen excitation noise; see the module doc)
            utt = lib.flite_synth_text(text.encode("utf-8"), v)
            if not utt:
                raise EngineError(f"flite -voice {voice}: synthesis failed for {text[:40]!r}")
            try:
                w = lib.utt_wave(utt)
                if not w or w.contents.num_samples <= 0:
                    raise EngineError(f"flite -voice {voice}: no audio for {text[:40]!r}")
                wc = w.contents
                pcm = np.ctypeslib.as_array(wc.samples, (wc.num_samples * wc.num_channels,)).copy()
                sr, ch = int(wc.sample_rate), int(wc.num_channels)
                names, spans = [], []
                item = lib.relation_head(lib.utt_relation(utt, b"Word"))
                while item:
                    names.append(lib.ffeature_string(item, b"name").decode("utf-8", "replace"))
                    spans.append((float(lib.ffeature_float(item, _WORD_START)), float(lib.ffeature_float(item, _WORD_END))))
                    item = lib.item_next(item)
            finally:
                lib.delete_utterance(utt)
        audio = _to_16k(pcm.reshape(-1, ch) if ch > 1 else pcm, sr, f"flite -voice {voice}")
        return audio, match_words(text, names, spans)


# -------------------------------------------------------------------------------------------------- Festival

_FESTIVAL_SCRIPT = """
(voice_{voice})
(Parameter.set 'Duration_Stretch {stretch:.6f})
(if (and (boundp 'int_lr_params) (assoc 'target_f0_mean int_lr_params))
    (set! int_lr_params (cons (list 'target_f0_mean (* {pitch:.6f} (car (cdr (assoc 'target_f0_mean int_lr_params)))))
                              int_lr_params)))
(set! asr_utt (Utterance Text "{text}"))
(utt.synth asr_utt)
(utt.save.wave asr_utt "{wav}" 'riff)
(mapcar (lambda (w) (format t "ASRWORD %s %f %f\\n" (item.name w)
          (item.feat w "R:SylStructure.daughter1.daughter1.R:Segment.p.end")
          (item.feat w "R:SylStructure.daughtern.daughtern.R:Segment.end")))
        (utt.relation.items asr_utt 'Word))
(format t "ASRDONE\\n")
"""


@functools.lru_cache(maxsize=1)
def _festival_voice_list() -> frozenset[str]:
    exe = shutil.which("festival")
    if exe is None:
        return frozenset()
    r = subprocess.run([exe, "--pipe"], input="(print (voice.list))\n", capture_output=True, text=True, timeout=60)
    return frozenset(re.findall(r"[A-Za-z0-9_]+", r.stdout))


class FestivalEngine:
    """``festival --pipe`` per utterance (see the module doc)."""

    name = "festival"

    def has_voice(self, voice: str) -> bool:
        return voice in FESTIVAL_VOICES and voice in _festival_voice_list()

    def speak(self, text: str, voice: str, rate: int = DEFAULT_RATE, pitch: int = DEFAULT_PITCH,
              timeout: float = 120.0) -> tuple[np.ndarray, Spans | None]:
        import soundfile as sf

        if shutil.which("festival") is None:
            raise EngineError("festival not found on PATH (apt-get install festival)")
        if not self.has_voice(voice):
            raise EngineError(f"festival has no voice {voice!r} (voices here: {', '.join(sorted(v for v in FESTIVAL_VOICES if v in _festival_voice_list())) or 'none'})")
        if '"' in text or "\\" in text:
            raise EngineError(f"festival: text must not contain quotes or backslashes: {text[:40]!r}")
        with tempfile.TemporaryDirectory(prefix="asr-festival-") as d:
            wav = os.path.join(d, "out.wav")
            script = _FESTIVAL_SCRIPT.format(voice=voice, stretch=DEFAULT_RATE / float(rate), pitch=pitch_factor(pitch),
                                             text=text, wav=wav)
            try:
                r = subprocess.run(["festival", "--pipe"], input=script, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise EngineError(f"festival voice {voice}: synthesis timed out after {timeout:.0f} s") from None
            if "ASRDONE" not in r.stdout or not os.path.exists(wav):
                msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
                raise EngineError(f"festival voice {voice}: synthesis failed ({msg[-1] if msg else 'no output'})")
            pcm, sr = sf.read(wav, dtype="int16")
        if pcm.size == 0:
            raise EngineError(f"festival voice {voice}: no audio for {text[:40]!r}")
        names, spans = [], []
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) == 4 and f[0] == "ASRWORD":
                names.append(f[1])
                spans.append((float(f[2]), float(f[3])))
        return _to_16k(pcm, sr, f"festival voice {voice}"), match_words(text, names, spans)


# --------------------------------------------------------------------------------------------------- espeak


class EspeakEngine:
    """espeak-ng through :mod:`asr_stream.corpus.espeak`, word spans from :func:`asr_stream.corpus.espeak.word_spans`."""

    name = "espeak"

    def has_voice(self, voice: str) -> bool:
        """espeak-ng must list ``voice`` (it falls back silently to another voice otherwise) and speak a short probe
        with sound (MBROLA voices are listed even when their data packages are missing)."""
        from . import espeak

        try:
            if not espeak.voice_exists(voice):
                return False
            audio, _ = self.speak("test", voice)
        except (espeak.EspeakError, EngineError):  # espeak-ng missing, or the probe failed
            return False
        return bool(np.any(audio))

    def speak(self, text: str, voice: str, rate: int = DEFAULT_RATE, pitch: int = DEFAULT_PITCH
              ) -> tuple[np.ndarray, Spans | None]:
        from ..audio.io import AudioError
        from . import espeak

        try:
            speech = espeak.engine().speak(text, voice, rate, pitch)
        except espeak.EspeakError as e:
            raise EngineError(str(e)) from None
        if speech.samples.size == 0:
            raise EngineError(f"espeak-ng -v {voice}: no audio for {text[:40]!r}")
        try:  # int16 -> / 32768, as reading espeak-ng's 16-bit WAV as float does; 22050 Hz (MBROLA 16 kHz)
            audio = _to_16k(speech.samples, speech.sample_rate, f"espeak-ng -v {voice}")
        except (AudioError, RuntimeError) as e:
            raise EngineError(f"espeak-ng -v {voice}: bad output audio ({e})") from None
        return audio, espeak.word_spans(text, speech)


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(name: str) -> Engine:
    """This process's engine ``name`` (espeak, flite, festival), made on first use."""
    with _ENGINES_LOCK:
        if name not in _ENGINES:
            cls = {"espeak": EspeakEngine, "flite": FliteEngine, "festival": FestivalEngine}.get(name)
            if cls is None:
                raise EngineError(f"unknown engine {name!r}")
            _ENGINES[name] = cls()
        return _ENGINES[name]


def voice_works(voice: str) -> bool:
    """Whether ``voice`` (any engine) can be used here; False for a missing engine or voice."""
    try:
        engine, name = split_voice(voice)
        return get_engine(engine).has_voice(name)
    except EngineError:
        return False


def speak(text: str, voice: str, rate: int = DEFAULT_RATE, pitch: int = DEFAULT_PITCH) -> tuple[np.ndarray, Spans | None]:
    """Speak ``text`` with ``voice`` (``engine:name``, or a bare espeak-ng name): 16 kHz float32 samples and
    each space-separated word's (start, end) seconds, or None where the engine gives no usable timing.
    ``rate`` is in words per minute relative to 175 (espeak-ng's scale), ``pitch`` on espeak-ng's 0-99 scale."""
    engine, name = split_voice(voice)
    return get_engine(engine).speak(text, name, rate, pitch)
