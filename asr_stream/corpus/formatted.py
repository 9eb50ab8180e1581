"""Add the formatted text (case and punctuation) to a synthetic corpus written before it was kept.

A corpus's plan is a function of its settings (``synth_config.json``) and its text source alone
(:mod:`asr_stream.corpus.plan`), and each planned sentence now carries :attr:`Sentence.formatted`. So the formatted
text of an older corpus is derived again, not guessed: plan the corpus from its settings, check that every
transcript line on disk is the plan's (same id, same text; any difference and nothing is written), and write
``<speaker>-<chapter>.formatted.txt`` beside each ``trans.txt``. The audio and the files already there are not
touched; an existing ``formatted.txt`` is refused unless ``overwrite``.

The settings must be the ones the corpus was made with, and the text source (the fortunes files, or the text
file) the same: a different fortunes package gives other sentences, and the check then refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from .plan import SynthConfig, load_extra_train_sentences, load_sentences, plan_corpus
from .synth import write_formatted
from .text import SynthError

# synth_config.json keys that record a run, not a setting of the plan
_NOT_SETTINGS = {"train_voices", "espeak_ng", "test_sets_only", "only_splits"}


def settings_from_json(path: Path, out_dir: Path) -> tuple[SynthConfig, list[str]]:
    """The :class:`SynthConfig` and training voices recorded in a ``synth_config.json``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SynthError(f"{path}: cannot read the corpus settings ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("train_voices"), list):
        raise SynthError(f"{path}: not a synth_config.json (no train_voices list)")
    known = {f.name for f in fields(SynthConfig)}
    unknown = sorted(set(data) - known - _NOT_SETTINGS)
    if unknown:
        raise SynthError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    kw: dict = {}
    for k, v in data.items():
        if k not in known or k in _NOT_SETTINGS:
            continue
        if k in ("text_file", "fortune_dir") and v is not None:
            v = Path(v)
        elif k == "eval_voices":
            v = tuple((name, tuple(voices)) for name, voices in v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return SynthConfig(out_dir=out_dir, **kw), list(data["train_voices"])


@dataclass
class FormattedReport:
    """What :func:`add_formatted_text` found: chapters and utterances matched, files written (0 when checking)."""

    chapters: int = 0
    utterances: int = 0
    written: int = 0


def _trans_lines(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def add_formatted_text(corpus: str | Path, settings: str | Path | None = None, check_only: bool = False,
                       overwrite: bool = False) -> FormattedReport:
    """Write ``formatted.txt`` files into ``corpus`` (see the module docstring); ``settings`` defaults to the
    corpus's own ``synth_config.json``. ``check_only``: verify that the plan matches every transcript and write
    nothing. Raises :class:`SynthError` (one line) on the first mismatch, before anything is written."""
    root = Path(corpus)
    if not root.is_dir():
        raise SynthError(f"{root}: no such corpus folder")
    settings = Path(settings) if settings is not None else root / "synth_config.json"
    if not settings.is_file():
        raise SynthError(f"{settings}: no corpus settings (pass the synth_config.json the corpus was made with)")
    cfg, train_voices = settings_from_json(settings, root)
    plan = plan_corpus(cfg, load_sentences(cfg), train_voices, load_extra_train_sentences(cfg))
    by_chapter: dict[Path, list] = {}
    for p in plan:
        by_chapter.setdefault(p.audio_path(root).parent, []).append(p)
    report, todo = FormattedReport(), []
    for trans in sorted(root.glob("*/*/*/*.trans.txt")):
        items = {p.id: p for p in by_chapter.get(trans.parent, [])}
        lines = _trans_lines(trans)
        for uid, text in lines.items():
            p = items.get(uid)
            if p is None or p.sentence.text != text:
                why = "is not in the plan" if p is None else f"plans {p.sentence.text!r}, the corpus has {text!r}"
                raise SynthError(f"{trans}: '{uid}' {why}: these settings or this text source did not make the "
                                 "corpus; nothing written")
        out = trans.with_name(trans.name[: -len(".trans.txt")] + ".formatted.txt")
        if out.exists() and not overwrite and not check_only:
            raise SynthError(f"{out}: exists (pass overwrite to replace it); nothing written")
        todo.append((out, [items[uid] for uid in sorted(lines)]))
        report.chapters += 1
        report.utterances += len(lines)
    if not todo:
        raise SynthError(f"{root}: no <split>/<speaker>/<chapter>/*.trans.txt files")
    if not check_only:
        for out, items in todo:
            write_formatted(out, items)
            report.written += 1
    return report
