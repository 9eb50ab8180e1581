"""The system packages the tests use, each checked here and installed by a make target named in the Makefile.

A test that needs a system program, voice, library or data package says so with ``@needs("festival:rab_diphone")``
(or ``pytest.param(..., marks=needs(...))``), never with its own ``skipif``: ``tests/unit/test_sysdeps.py`` fails when a
test module checks for a system package itself, or when a requirement's Debian packages are in none of the Makefile's
lists. The make target that installs each package is read from the Makefile (``APT_PKGS`` -> ``make sysdeps``,
``CORPUS_PKGS`` -> ``make corpus-sysdeps``), so the skip reason names the command that fixes it.

Under ``make test`` (which runs ``make sysdeps`` first and sets ``ASR_STREAM_STRICT_SYSDEPS=1``) a missing package
that ``make test`` itself installs is a failure, not a skip: the test run would otherwise pass while quietly testing
less than it claims. Packages of other targets (``corpus-sysdeps``: the Debian contrib voices and
pocketsphinx-testdata) are skipped with their target.
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
STRICT_ENV = "ASR_STREAM_STRICT_SYSDEPS"
#: Makefile variable -> the make target that installs its packages.
MAKE_LISTS = {"APT_PKGS": "sysdeps", "CORPUS_PKGS": "corpus-sysdeps"}


@dataclass(frozen=True)
class Requirement:
    """Something a test needs from the system: the Debian packages that provide it and how to tell it is there."""

    name: str
    packages: tuple[str, ...]
    present: Callable[[], bool]


def _voice(voice: str) -> Callable[[], bool]:
    def check() -> bool:
        from asr_stream.corpus import engines

        return engines.voice_works(voice)

    return check


def _fortunes() -> bool:
    from asr_stream.corpus.text import FORTUNE_DIR

    return (FORTUNE_DIR / "fortunes").is_file()


def _which(*programs: str) -> Callable[[], bool]:
    return lambda: any(shutil.which(p) for p in programs)


def _file(path: str) -> Callable[[], bool]:
    """A package that installs data rather than a program: one of its files is there."""
    return lambda: Path(path).is_file()


_REQS = [
    Requirement("espeak-ng", ("espeak-ng",), _which("espeak-ng")),
    Requirement("fortunes", ("fortunes", "fortunes-min"), _fortunes),
    Requirement("chromium", ("chromium",), _which("chromium", "chromium-browser")),
    Requirement("openssl", ("openssl",), _which("openssl")),  # a self-signed certificate for the TLS test of serve
    Requirement("haproxy", ("haproxy",), _which("haproxy", "/usr/sbin/haproxy")),  # replicas of serve behind a balancer
    Requirement("portaudio", ("libportaudio2",),
                lambda: importlib.util.find_spec("sounddevice") is not None and ctypes.util.find_library("portaudio") is not None),
    # Flite's voices are built into the flite package
    *(Requirement(f"flite:{v}", ("flite",), _voice(f"flite:{v}")) for v in ("kal", "kal16", "awb", "rms", "slt")),
    Requirement("festival:kal_diphone", ("festival", "festvox-kallpc16k"), _voice("festival:kal_diphone")),
    Requirement("festival:ked_diphone", ("festival", "festvox-kdlpc16k"), _voice("festival:ked_diphone")),
    Requirement("festival:cmu_us_slt_arctic_hts", ("festival", "festvox-us-slt-hts"), _voice("festival:cmu_us_slt_arctic_hts")),
    Requirement("festival:rab_diphone", ("festival", "festvox-rablpc16k"), _voice("festival:rab_diphone")),
    Requirement("festival:don_diphone", ("festival", "festvox-don"), _voice("festival:don_diphone")),
    # CMU PocketSphinx's test recordings (asr_stream/data/human.py reads them)
    Requirement("pocketsphinx-testdata", ("pocketsphinx-testdata",),
                _file("/usr/share/pocketsphinx/test/data/librivox/transcription")),
    *(Requirement(f"mb-{v}", ("espeak-ng", "mbrola", f"mbrola-{v}"), _voice(f"mb-{v}")) for v in ("us1", "us2", "us3", "en1")),
]
REQUIREMENTS: dict[str, Requirement] = {r.name: r for r in _REQS}


def makefile_lists(text: str | None = None) -> dict[str, tuple[str, ...]]:
    """The package lists of the Makefile (``VAR := a b \\`` continued lines), by variable name."""
    text = MAKEFILE.read_text() if text is None else text
    joined = re.sub(r"\\\n", " ", text)
    out = {}
    for var in MAKE_LISTS:
        m = re.search(rf"^{var}\s*:?=(.*)$", joined, re.M)
        out[var] = tuple(m.group(1).split()) if m else ()
    return out


def make_test_targets(text: str | None = None) -> tuple[str, ...]:
    """The prerequisites of the Makefile's ``test`` rule (the targets ``make test`` runs first)."""
    text = MAKEFILE.read_text() if text is None else text
    m = re.search(r"^test:([^\n]*)$", text, re.M)
    return tuple(m.group(1).split()) if m else ()


@functools.lru_cache(maxsize=None)
def target_of(package: str) -> str | None:
    """The make target that installs a Debian package, or None when no list has it."""
    for var, packages in makefile_lists().items():
        if package in packages:
            return MAKE_LISTS[var]
    return None


def install_hint(req: Requirement) -> str:
    """``make TARGET`` for the packages of ``req`` (the target of the package the fewest targets install first)."""
    targets = [target_of(p) for p in req.packages]
    missing = [p for p, t in zip(req.packages, targets) if t is None]
    if missing:
        return f"no make target installs {', '.join(missing)} (tests/sysdeps.py)"
    # the most specific target: corpus-sysdeps runs sysdeps too
    target = "corpus-sysdeps" if "corpus-sysdeps" in targets else targets[0]
    return f"make {target} installs {' '.join(req.packages)}"


@functools.lru_cache(maxsize=None)
def _present(name: str) -> bool:
    return REQUIREMENTS[name].present()


def needs(*names: str) -> pytest.MarkDecorator:
    """Mark a test as needing these system requirements (names of :data:`REQUIREMENTS`); see the module doc."""
    unknown = [n for n in names if n not in REQUIREMENTS]
    if unknown:
        raise KeyError(f"unknown system requirement(s) {unknown}: add them to tests/sysdeps.py")
    return pytest.mark.sysdeps(*names)


def check_item(item: pytest.Item) -> None:
    """Skip (or, under ``make test``, fail) a test whose ``sysdeps`` requirements are missing."""
    names = [n for mark in item.iter_markers("sysdeps") for n in mark.args]
    strict = os.environ.get(STRICT_ENV) == "1"
    for name in names:
        if _present(name):
            continue
        req = REQUIREMENTS[name]
        hint = install_hint(req)
        targets = {target_of(p) for p in req.packages}
        if strict and targets <= set(make_test_targets()):
            pytest.fail(f"{name} is missing although `make test` runs the target that installs it ({hint})",
                        pytrace=False)
        pytest.skip(f"{name} is not installed ({hint})")
