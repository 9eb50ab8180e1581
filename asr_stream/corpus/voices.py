"""Voices of the synthetic corpus: the default espeak-ng pool, which of them work here, speaker ids and sex.

A voice is named ``engine:name`` (:mod:`asr_stream.corpus.engines`); a bare name is espeak-ng's. :data:`DEFAULT_VOICES`
(accents x variants) are filtered to those this espeak-ng can run (:func:`available_voices`); MBROLA voices
(:data:`MBROLA_VOICES`) join automatically when their packages (``mbrola-us1`` ...) are installed. Speaker ids are a
hash of the voice name (:func:`speaker_ids`), so a voice keeps its id when the pool changes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from . import engines, espeak
from .engines import voice_works
from .text import SynthError

__all__ = ["DEFAULT_UNSEEN_VOICE", "DEFAULT_VOICES", "MBROLA_VOICES", "available_voices", "check_training_voices",
           "espeak_binary", "sex_of", "speaker_ids", "voice_exists", "voice_works"]

#: Training/dev/test voices, tried in this order; the ones this espeak-ng lacks are skipped.
#: Base accents x a few variants (``+f3`` = female 3, ``+m3`` = male 3 ...), see ``espeak-ng --voices=variant``.
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us", "en-us+f3", "en-us+m3", "en-us+f4",
    "en-gb", "en-gb+f2", "en-gb+m7",
    "en-gb-scotland", "en-gb-scotland+f4",
    "en-gb-x-rp", "en-gb-x-rp+f5",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd+m2",
    "en-us-nyc", "en-us-nyc+f2",
)
#: MBROLA English voices; used when installed (Debian contrib/non-free: mbrola, mbrola-us1 ...).
MBROLA_VOICES: tuple[str, ...] = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
#: Held out of train: an accent (Caribbean) absent from DEFAULT_VOICES, with a female variant.
DEFAULT_UNSEEN_VOICE = "en-029+f2"

_FEMALE_VARIANTS = re.compile(r"\+(f\d|whisperf|steph\d?|linda|annie|anika|alicia|andrea|belinda|aunty)$")
_FEMALE_MBROLA = {"mb-us1"}


def espeak_binary() -> str:
    """Path of the espeak-ng executable; SynthError if it is not installed."""
    try:
        return espeak.binary()
    except espeak.EspeakError as e:
        raise SynthError(str(e)) from None


def voice_exists(voice: str) -> bool:
    """Whether espeak-ng lists ``voice`` (``base`` or ``base+variant``): :func:`asr_stream.corpus.espeak.voice_exists`;
    SynthError if espeak-ng is not installed."""
    try:
        return espeak.voice_exists(voice)
    except espeak.EspeakError as e:
        raise SynthError(str(e)) from None


def available_voices(candidates: Sequence[str] = DEFAULT_VOICES + MBROLA_VOICES) -> list[str]:
    """The voices of ``candidates`` that work here, in the given order."""
    return [v for v in candidates if voice_works(v)]


def speaker_ids(voices: Sequence[str]) -> dict[str, str]:
    """Stable numeric LibriSpeech-style speaker ids (1000-9999) from voice names.

    Ids are a hash of the name, so a voice keeps its id when the pool changes (e.g. MBROLA installed);
    collisions are resolved by probing upwards in sorted-name order.
    """
    out: dict[str, str] = {}
    used: set[int] = set()
    for v in sorted(set(voices)):
        i = int(hashlib.sha1(v.encode()).hexdigest(), 16) % 9000
        while i + 1000 in used:
            i = (i + 1) % 9000
        used.add(i + 1000)
        out[v] = str(i + 1000)
    return out


def sex_of(voice: str) -> str:
    """The sex SPEAKERS.TXT writes for ``voice`` ("F" or "M"): the engine's own word where it has one, else by
    the espeak-ng variant or MBROLA voice name."""
    female = engines.is_female(voice)
    if female is not None:
        return "F" if female else "M"
    return "F" if _FEMALE_VARIANTS.search(voice) or voice in _FEMALE_MBROLA else "M"


def check_training_voices(voices: Sequence[str]) -> None:
    """SynthError if a training (train/dev/seen test) voice is an evaluation-only speaker (kal, slt; every
    engine's voice of them): those speakers are kept for the unseen-speaker test splits."""
    try:
        engines.check_training_voices(voices)
    except engines.EngineError as e:
        raise SynthError(str(e)) from None
