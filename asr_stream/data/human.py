"""A test set of real human speech: the recordings in Debian's ``pocketsphinx-testdata`` package that come with a
transcript. Reported on, never trained on.

The package (Debian main, BSD-2 licence, Carnegie Mellon University) installs CMU PocketSphinx's test data under
:data:`DEFAULT_SOURCE`. What :func:`make_human_set` takes from it, each transcript from the package itself:

=============== ===== ==============================================================================================
``librivox``    5     one LibriVox reader, *Sense and Sensibility* ch. 1: ``librivox/{fileids,transcription}``
``cards``       5     playing cards ("ten of clubs"): ``cards/cards.{fileids,transcription}``
``goforward``   1     ``goforward.raw`` (raw 16-bit 16 kHz mono): the words of the first rule of ``goforward.gram``,
                      "go forward ten meters", which is also the hypothesis PocketSphinx's own unit tests require for
                      this file (test_jsgf.c, test_fsg.c)
=============== ===== ==============================================================================================

Left out: ``numbers.raw``, ``something.raw`` and ``tidigits/dhd.2934z.raw`` (the package gives no transcript for
them: ``tidigits/tidigits.lsn`` transcribes the ``.mfc`` files, which are features of other recordings, not audio).

The transcription files are in Sphinx format, one ``<s> words </s> (FILEID)`` line per line of the fileids file, in
the same order. Transcripts are upper-cased as LibriSpeech's, the words kept as spoken ("MISTER", the reader's
repeated "A" in "A MORE A AMIABLE"); ``<s>``, ``</s>`` and ``<sil>`` are dropped.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.io import SAMPLE_RATE
from .corpus import DataError, Utterance, write_manifest

PACKAGE = "pocketsphinx-testdata"
DEFAULT_SOURCE = Path("/usr/share/pocketsphinx/test/data")
#: group -> (fileids file, transcription file), relative to the source folder; the audio is ``<folder>/<id>.wav``.
SPHINX_GROUPS = {"librivox": ("librivox/fileids", "librivox/transcription"),
                 "cards": ("cards/cards.fileids", "cards/cards.transcription")}
LEFT_OUT = ("numbers.raw", "something.raw", "tidigits/dhd.2934z.raw")
NOTICE_MARK = "Real human speech from the Debian package pocketsphinx-testdata"
_MARKERS = {"<s>", "</s>", "<sil>"}
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_LINE = re.compile(r"^(?P<words>.*?)\s*\((?P<id>[^()\s]+)\)\s*$")


@dataclass(frozen=True)
class HumanItem:
    """One recording of the package: ``id`` (``<group>-<fileid>``), its audio file in the source folder, whether
    that file is headerless 16-bit little-endian 16 kHz mono (``raw``), the normalised transcript and the group."""

    id: str
    source_audio: Path
    text: str
    group: str
    raw: bool = False


def normalise_words(words: list[str], where: str) -> str:
    """Sphinx transcript words -> our reference: sentence and silence markers dropped, the rest upper case.
    A token that is not a plain word (letters, inner apostrophes) is a DataError naming ``where``."""
    out = []
    for w in words:
        if w.lower() in _MARKERS:
            continue
        if not _WORD.fullmatch(w):
            raise DataError(f"{where}: unexpected token {w!r} in the transcript")
        out.append(w.upper())
    if not out:
        raise DataError(f"{where}: empty transcript")
    return " ".join(out)


def parse_sphinx_transcription(path: Path) -> list[tuple[str, str]]:
    """``(fileid, transcript)`` of each line ``<s> words </s> (FILEID)`` of a Sphinx transcription file."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        m = _LINE.match(line)
        if not m:
            raise DataError(f"{where}: expected '<s> words </s> (FILEID)'")
        out.append((m["id"], normalise_words(m["words"].split(), where)))
    if not out:
        raise DataError(f"{path}: no transcripts")
    return out


def read_sphinx_group(source: Path, group: str, fileids: str, transcription: str) -> list[HumanItem]:
    """The items of one fileids + transcription pair; line i of each must name the same file."""
    ids_path, tr_path = source / fileids, source / transcription
    for p in (ids_path, tr_path):
        if not p.is_file():
            raise DataError(f"{p}: not found")
    ids = [line.strip() for line in ids_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = parse_sphinx_transcription(tr_path)
    if len(ids) != len(lines):
        raise DataError(f"{tr_path}: {len(lines)} transcripts but {len(ids)} file ids in {ids_path}")
    items = []
    for fid, (tid, text) in zip(ids, lines):
        if Path(fid).name != tid:
            raise DataError(f"{tr_path}: transcript of {tid!r} where {ids_path} lists {fid!r}")
        audio = ids_path.parent / f"{fid}.wav"
        if not audio.is_file():
            raise DataError(f"{audio}: not found (listed in {ids_path})")
        items.append(HumanItem(f"{group}-{Path(fid).name}", audio, text, group))
    return items


def first_rule_words(gram: Path) -> str:
    """The words of the first ``public <rule> = words ;`` of a JSGF grammar, which must be plain words only."""
    m = re.search(r"^\s*public\s+<[^>]+>\s*=\s*([^;]*);", gram.read_text(encoding="utf-8"), re.M)
    if not m:
        raise DataError(f"{gram}: no public rule")
    return normalise_words(m[1].split(), f"{gram} (first public rule)")


def package_items(source: Path) -> list[HumanItem]:
    """Every transcribed recording of the package's data folder ``source`` (see the module doc)."""
    items = [it for group, (ids, tr) in SPHINX_GROUPS.items() for it in read_sphinx_group(source, group, ids, tr)]
    raw = source / "goforward.raw"
    if not raw.is_file():
        raise DataError(f"{raw}: not found")
    items.append(HumanItem("goforward", raw, first_rule_words(source / "goforward.gram"), "goforward", raw=True))
    return items


def read_pcm16(item: HumanItem) -> np.ndarray:
    """The recording as int16 samples; it must be 16 kHz mono 16-bit PCM (the copies are then bit-exact)."""
    import soundfile as sf

    try:
        if item.raw:
            x, rate = sf.read(str(item.source_audio), dtype="int16", format="RAW", samplerate=SAMPLE_RATE, channels=1,
                              subtype="PCM_16", endian="LITTLE")
        else:
            info = sf.info(str(item.source_audio))
            if (info.samplerate, info.channels, info.subtype) != (SAMPLE_RATE, 1, "PCM_16"):
                raise DataError(f"{item.source_audio}: expected 16 kHz mono 16-bit PCM, got {info.samplerate} Hz, "
                                f"{info.channels} channel(s), {info.subtype}")
            x, rate = sf.read(str(item.source_audio), dtype="int16")
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise DataError(f"{item.source_audio}: unreadable audio ({str(e).strip().splitlines()[0]})") from None
    if len(x) == 0:
        raise DataError(f"{item.source_audio}: empty audio")
    return x


def package_version(source: Path, doc: Path) -> str:
    """The package's version: dpkg's, for the installed folder; else the first entry of the Debian changelog of
    an unpacked copy (``dpkg-deb -x``)."""
    if source.resolve() == DEFAULT_SOURCE.resolve() and shutil.which("dpkg-query"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    changelog = doc / "changelog.Debian.gz"
    if changelog.is_file():
        with gzip.open(changelog, "rt", encoding="utf-8") as f:
            m = re.match(r"\S+ \(([^)]+)\)", f.readline())
        if m:
            return m[1]
    raise DataError(f"{source}: cannot tell the version of {PACKAGE} "
                    f"(dpkg does not list it and {changelog} is missing)")


@dataclass(frozen=True)
class HumanSet:
    """What :func:`make_human_set` wrote: the manifest of every utterance (``all``) and one per group."""

    manifests: dict[str, Path]
    utterances: tuple[Utterance, ...]
    version: str


def _check_out(source: Path, out: Path, overwrite: bool) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise DataError(f"{out}: must be outside the source folder {source} (and not contain it)")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: exists and is not empty (--overwrite replaces a set this tool wrote)")
        notice = out / "NOTICE"
        if not (notice.is_file() and notice.read_text(encoding="utf-8").startswith(NOTICE_MARK)):
            raise DataError(f"{out}: not a set written by make_human_set (no NOTICE); refusing to replace it")


def make_human_set(out: str | os.PathLike, source: str | os.PathLike = DEFAULT_SOURCE,
                   overwrite: bool = False) -> HumanSet:
    """Write the set into ``out``: ``audio/<id>.flac`` (16 kHz mono, the package's samples unchanged), the
    manifests ``human.jsonl`` (all) and ``<group>.jsonl``, the package's ``copyright`` file and a ``NOTICE``.

    The folder is written beside ``out`` and moved into place at the end. A non-empty ``out`` is refused unless
    ``overwrite`` and it holds a set this function wrote; ``source`` is only read."""
    import soundfile as sf

    source, out = Path(source), Path(out)
    if not source.is_dir():
        if source == DEFAULT_SOURCE:
            raise DataError(f"{source}: not found; the Debian package {PACKAGE} is not installed "
                            f"(`make corpus-sysdeps` installs it)")
        raise DataError(f"{source}: no such folder")
    marker = source / SPHINX_GROUPS["librivox"][1]
    if not marker.is_file() or len(source.resolve().parents) < 3:
        raise DataError(f"{source}: not the data folder of {PACKAGE} (no {marker.relative_to(source)}; "
                        f"installed, it is {DEFAULT_SOURCE})")
    _check_out(source, out, overwrite)
    # <root>/usr/share/pocketsphinx/test/data -> <root>/usr/share/doc/pocketsphinx-testdata
    doc = source.resolve().parents[2] / "doc" / PACKAGE
    copyright_file = doc / "copyright"
    if not copyright_file.is_file():
        raise DataError(f"{copyright_file}: not found (the package's licence must travel with its audio)")
    version = package_version(source, doc)
    items = package_items(source)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the set from other users
        utts = []
        for it in items:
            x = read_pcm16(it)
            rel = Path("audio") / f"{it.id}.flac"
            (tmp / rel).parent.mkdir(exist_ok=True)
            sf.write(str(tmp / rel), x, SAMPLE_RATE, subtype="PCM_16")
            utts.append(Utterance(it.id, tmp / rel, it.text, len(x) / SAMPLE_RATE, it.group))
        names = {"all": "human.jsonl", **{g: f"{g}.jsonl" for g in dict.fromkeys(it.group for it in items)}}
        for group, name in names.items():
            write_manifest([u for u in utts if group in ("all", u.speaker)], tmp / name).chmod(0o644)
        shutil.copyfile(copyright_file, tmp / "copyright")
        seconds = sum(u.duration for u in utts)
        counts = ", ".join(f"{g} {sum(u.speaker == g for u in utts)}" for g in names if g != "all")
        (tmp / "NOTICE").write_text(
            f"{NOTICE_MARK} (version {version}, Debian main), from {source.resolve()}.\n"
            "Licence: BSD-2 (Carnegie Mellon University); the package's copyright file is copied here as `copyright`.\n"
            f"{len(utts)} utterances, {seconds:.2f} s ({counts}), 16 kHz mono FLAC, the package's samples unchanged.\n"
            "A test set: reported on, never trained on.\n"
            f"Left out (no transcript in the package): {', '.join(LEFT_OUT)}.\n"
            "Written by tools/corpus/make_human_set.py (asr_stream/data/human.py).\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = tuple(Utterance(u.id, out / "audio" / u.audio_path.name, u.text, u.duration, u.speaker) for u in utts)
    return HumanSet({g: out / n for g, n in names.items()}, final, version)
