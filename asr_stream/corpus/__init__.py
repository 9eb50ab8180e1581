"""Corpus tooling: synthetic speech corpora and the test sets, written to the layouts :mod:`asr_stream.data` reads.

Nothing at run time (transcribing, serving, training) imports this package; it makes data.

================ ===================================================================================================
``espeak.py``    libespeak-ng through ctypes: the command line's samples, and where each word starts
``engines.py``   the speech engines (espeak-ng, Flite, Festival): ``engine:name`` voices, word spans, held-out
                 speakers
``text.py``      sentences from fortunes or a text file, cleaned for synthesis; :class:`SynthError`
``voices.py``    the default voice pool, which voices work here, speaker ids
``plan.py``      :class:`SynthConfig` and :func:`plan_corpus`: every random choice of a corpus from one seed
``synth.py``     :func:`speak` / :func:`synthesize` one sentence; :func:`synthesize_corpus` and
                 :func:`synthesize_test_sets` write a corpus in LibriSpeech layout
``robust.py``    the robustness test set (silence, gain, 8 kHz, noise, non-speech); its noise from
                 :mod:`asr_stream.audio.noise`
``longform.py``  long-form test recordings: utterances joined with pauses
``biasing.py``   the contextual-biasing test set: rare words not in the training text, held-out voices, context lists
================ ===================================================================================================

The real-speech test set (``pocketsphinx-testdata``) is read by :mod:`asr_stream.data.human`.
"""

from .plan import SPLITS, PlannedUtterance, SynthConfig, load_extra_train_sentences, load_sentences, plan_corpus
from .synth import SynthReport, speak, synthesize, synthesize_corpus, synthesize_test_sets
from .text import (FORTUNE_DIR, Sentence, SynthError, clean_sentence, clean_sentences, fortune_sentences,
                   keep_top_words, split_sentences, text_file_sentences)
from .voices import DEFAULT_UNSEEN_VOICE, DEFAULT_VOICES, MBROLA_VOICES, available_voices, voice_works

__all__ = [
    "DEFAULT_UNSEEN_VOICE",
    "DEFAULT_VOICES",
    "FORTUNE_DIR",
    "MBROLA_VOICES",
    "PlannedUtterance",
    "SPLITS",
    "Sentence",
    "SynthConfig",
    "SynthError",
    "SynthReport",
    "available_voices",
    "clean_sentence",
    "clean_sentences",
    "fortune_sentences",
    "keep_top_words",
    "load_extra_train_sentences",
    "load_sentences",
    "plan_corpus",
    "speak",
    "split_sentences",
    "synthesize",
    "synthesize_corpus",
    "synthesize_test_sets",
    "text_file_sentences",
    "voice_works",
]
