"""The contextual-biasing test set: sentences with rare names and words that are not in the training text, spoken by
held-out voices, each with a context list of its true rare words plus distractors (``tools/corpus/make_biasing_set.py``).

- **Rare words**: :data:`RARE_WORDS` (place and person names from many languages, and uncommon English words, all
  plain ASCII letters that every engine reads as words), less every word of the ``exclude`` texts (the training
  transcripts: a word the model was trained on is not rare to it) and of the templates; or a word list of one's own.
- **Sentences**: :data:`TEMPLATES` (common words around one or two slots), each slot filled with a rare word; the
  words of a set are drawn without replacement while the pool lasts, so most rare words occur once.
- **Voices**: the held-out speakers (:data:`HELD_OUT_VOICES`: the unseen espeak-ng voice, Flite's kal16 and slt, as
  the test-unseen-voice / test-kal / test-slt splits use), one per sentence in turn; the ones this machine lacks
  are refused in one line.
- **Context lists**: the sentence's rare words plus ``distractors`` other rare words (not in the sentence), shuffled;
  written as the manifest's ``context`` field, which ``eval`` gives the model and scores B-WER / U-WER / rare-word
  recall against (:mod:`asr_stream.evaluation.biasing`). ``distractors-N.txt`` beside it holds N rare words in no
  sentence: the list of the "irrelevant context does no harm" check (``eval --context-file`` on ordinary speech).

Transcripts are upper case like the synthetic corpus's; the lists keep the words' own spelling (the context is
written as the model's transcripts are, :func:`asr_stream.context.context_ids`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .text import SynthError

#: Rare words: names of places, people and things from many languages, and uncommon English words (ASCII letters).
RARE_WORDS: tuple[str, ...] = (
    "Zanzibar", "Okonkwo", "Quetzalcoatl", "Ouagadougou", "Tegucigalpa", "Ljubljana", "Reykjavik", "Yggdrasil",
    "Nebuchadnezzar", "Popocatepetl", "Chimamanda", "Tchaikovsky", "Dostoevsky", "Kilimanjaro", "Kathmandu",
    "Timbuktu", "Antananarivo", "Bujumbura", "Nouakchott", "Ashgabat", "Bishkek", "Dushanbe", "Tbilisi", "Yerevan",
    "Vientiane", "Ulaanbaatar", "Paramaribo", "Kinshasa", "Brazzaville", "Lilongwe", "Windhoek", "Gaborone",
    "Mogadishu", "Djibouti", "Asmara", "Khartoum", "Tripoli", "Marrakesh", "Casablanca", "Samarkand", "Bukhara",
    "Isfahan", "Shiraz", "Tabriz", "Mandalay", "Rangoon", "Chiang", "Surabaya", "Makassar", "Mindanao", "Cebu",
    "Hokkaido", "Sapporo", "Fukuoka", "Nagasaki", "Okinawa", "Busan", "Incheon", "Guangzhou", "Chengdu", "Kunming",
    "Lhasa", "Xinjiang", "Harbin", "Valparaiso", "Arequipa", "Cochabamba", "Asuncion", "Montevideo", "Maracaibo",
    "Cartagena", "Guayaquil", "Oaxaca", "Chihuahua", "Saskatoon", "Winnipeg", "Yellowknife", "Nunavut", "Anchorage",
    "Tallahassee", "Albuquerque", "Tucson", "Sacramento", "Wollongong", "Toowoomba", "Rotorua", "Tauranga",
    "Dunedin", "Akureyri", "Trondheim", "Tampere", "Uppsala", "Gdansk", "Wroclaw", "Bratislava", "Debrecen",
    "Timisoara", "Plovdiv", "Thessaloniki", "Izmir", "Trabzon", "Aleppo", "Mosul", "Basra", "Muscat", "Sanaa",
    "Obafemi", "Adebayo", "Nkechi", "Oluwaseun", "Thandiwe", "Sipho", "Kwame", "Ngozi", "Chukwuemeka", "Wanjiru",
    "Siobhan", "Niamh", "Saoirse", "Eoghan", "Tadhg", "Ffion", "Gwilym", "Iolanthe", "Xiomara", "Yolanda",
    "Anouk", "Bartholomew", "Cosimo", "Dagny", "Evander", "Fenella", "Gideon", "Horatio", "Ignatius", "Jocasta",
    "Leopold", "Marguerite", "Octavian", "Perpetua", "Quillon", "Rosalind", "Seraphina", "Thaddeus", "Ulrika",
    "Wilhelmina", "Zebedee", "axolotl", "quokka", "pangolin", "narwhal", "okapi", "capybara", "tamarin", "wombat",
    "marmoset", "ocelot", "kinkajou", "gharial", "dugong", "saiga", "aardwolf", "bandicoot", "cassowary",
    "chinchilla", "echidna", "fossa", "gerenuk", "ibex", "jerboa", "kakapo", "lemming", "manatee", "numbat",
    "quetzal", "serval", "tapir", "vicuna", "xerus", "zorilla", "obsidian", "tourmaline", "chrysoprase",
    "malachite", "lapis", "carnelian", "peridot", "saffron", "cardamom", "turmeric", "fenugreek", "asafoetida",
    "galangal", "lemongrass", "tamarind", "sumac", "harissa", "chimichurri", "gazpacho", "bouillabaisse", "pierogi",
    "baklava", "tiramisu", "gnocchi", "risotto", "paella", "ratatouille", "shakshuka", "bibimbap", "pho",
    "dulcimer", "theremin", "harpsichord", "bassoon", "ocarina", "sitar", "balalaika", "marimba", "didgeridoo",
)

#: Sentence templates of common words; ``{}`` slots take rare words.
TEMPLATES: tuple[str, ...] = (
    "I met {} at the station yesterday",
    "we flew to {} last summer",
    "have you ever heard of {}",
    "the letter from {} came this morning",
    "my friend {} lives near the river",
    "she told me about {} and {}",
    "they will visit {} next week",
    "he wrote a long story about {}",
    "the old map shows {} in the north",
    "I think {} is a beautiful name",
    "please send this box to {}",
    "the children talked about {} all day",
    "we had dinner with {} and {}",
    "nobody in the room knew {}",
    "the next train goes to {}",
    "a picture of {} hung on the wall",
    "I still remember the day in {}",
    "ask {} about the new plan",
    "the book on {} was very good",
    "you can find {} on the left",
)

#: The held-out speakers, as the corpus's test-unseen-voice, test-kal and test-slt splits have them.
HELD_OUT_VOICES: tuple[str, ...] = ("en-029+f2", "flite:kal16", "flite:slt")


@dataclass(frozen=True)
class BiasingItem:
    """One sentence of the set: its transcript (upper case), what the engine is given, its rare words and list."""

    id: str
    text: str
    spoken: str
    rare: tuple[str, ...]
    context: tuple[str, ...]
    voice: str


def words_of(texts: Iterable[str]) -> set[str]:
    """Every word of ``texts``, upper case (transcripts are)."""
    return {w.upper() for t in texts for w in t.split()}


def rare_pool(exclude: set[str], words: Sequence[str] = RARE_WORDS) -> list[str]:
    """The rare words that are in no excluded text (case-insensitive), in order, without repeats."""
    out = []
    for w in dict.fromkeys(" ".join(w.split()) for w in words):
        if w and w.upper() not in exclude and all(p.upper() not in exclude for p in w.split()):
            out.append(w)
    return out


def plan_biasing_set(n: int, voices: Sequence[str], distractors: int, seed: int, pool: Sequence[str]) -> list[BiasingItem]:
    """``n`` sentences: template i mod T with its slots filled by rare words (drawn without replacement, the pool
    reshuffled when it runs out), voice i mod V, and a context list of its rare words plus ``distractors`` others."""
    if n < 1:
        raise SynthError(f"--sentences must be >= 1, got {n}")
    if distractors < 0:
        raise SynthError(f"--distractors must be >= 0, got {distractors}")
    if len(pool) < distractors + 2:
        raise SynthError(f"only {len(pool)} rare words are left after excluding the training text: too few for lists of "
                         f"{distractors} distractors (give --words or fewer --distractors)")
    if not voices:
        raise SynthError("no voices")
    rng = np.random.default_rng(seed)
    order: list[str] = []
    items = []
    for i in range(n):
        tpl = TEMPLATES[i % len(TEMPLATES)]
        rare = []
        for _ in range(tpl.count("{}")):
            if not order:
                order = [pool[j] for j in rng.permutation(len(pool))]
            w = order.pop()
            while w in rare:  # (only when the pool ran out mid-sentence)
                order.insert(0, w)
                w = order.pop()
            rare.append(w)
        others = [w for w in pool if w not in rare]
        picks = [others[j] for j in rng.choice(len(others), size=distractors, replace=False)] if distractors else []
        ctx = rare + picks
        ctx = [ctx[j] for j in rng.permutation(len(ctx))]
        spoken = tpl.format(*rare)
        text = " ".join(w.upper() for w in spoken.split())
        items.append(BiasingItem(f"biasing-{i:04d}", text, spoken + ".", tuple(rare), tuple(ctx), voices[i % len(voices)]))
    return items


def make_biasing_set(out: str | os.PathLike, n: int = 100, voices: Sequence[str] = HELD_OUT_VOICES,
                     distractors: int = 100, seed: int = 0, exclude: Iterable[str] = (),
                     words: Sequence[str] = RARE_WORDS) -> Path:
    """Write the set into the new folder ``out``: ``audio/<id>.flac``, ``biasing.jsonl`` (with each utterance's
    ``context``) and ``distractors-<N>.txt`` (N rare words in no sentence). Returns the manifest. ``exclude``: texts
    (the training transcripts) whose words are not rare. Refuses a non-empty ``out`` (never overwrites)."""
    import soundfile as sf

    from ..audio.io import SAMPLE_RATE
    from ..data import Utterance, write_manifest
    from .engines import voice_works
    from .synth import speak

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthError(f"{out}: exists and is not an empty folder; choose a new one")
    missing = [v for v in voices if not voice_works(v)]
    if missing:
        raise SynthError(f"voice(s) {', '.join(missing)} do not work here (espeak-ng / flite missing? make sysdeps)")
    pool = rare_pool(words_of(exclude) | words_of(TEMPLATES), words)  # the templates' words are common words
    items = plan_biasing_set(n, list(voices), distractors, seed, pool)
    used = {w for it in items for w in it.rare}
    spare = [w for w in pool if w not in used][:distractors]
    rows = []
    for it in items:
        audio, _ = speak(it.spoken, it.voice)
        p = out / "audio" / f"{it.id}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append(Utterance(it.id, p, it.text, round(len(audio) / SAMPLE_RATE, 4), it.voice, context=it.context))
    (out / f"distractors-{len(spare)}.txt").write_text("".join(w + "\n" for w in spare), encoding="utf-8")
    return write_manifest(rows, out / "biasing.jsonl")


__all__ = ["BiasingItem", "HELD_OUT_VOICES", "RARE_WORDS", "TEMPLATES", "make_biasing_set", "plan_biasing_set",
           "rare_pool", "words_of"]
