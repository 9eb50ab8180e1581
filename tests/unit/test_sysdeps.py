"""The guard between the tests' system requirements and the Makefile's install lists (tests/sysdeps.py).

It catches the slip that once broke `make test` on a fresh machine while CI stayed green: a test needed two Festival
voices that had moved from `make sysdeps` to `make corpus-sysdeps`, and the machine CI ran on still had them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from asr_stream.corpus import engines

from .. import sysdeps

TESTS = Path(__file__).resolve().parents[1]  # tests/, whose unit/, equivalence/ and system/ hold the modules


def test_every_requirement_is_installed_by_a_make_target() -> None:
    lists = sysdeps.makefile_lists()
    assert all(lists.values()), f"the Makefile lost a package list: {lists}"
    for req in sysdeps.REQUIREMENTS.values():
        homeless = [p for p in req.packages if sysdeps.target_of(p) is None]
        assert not homeless, f"{req.name} needs {homeless}, which no Makefile list ({', '.join(lists)}) installs"


def test_make_test_installs_the_sysdeps_list() -> None:
    assert "sysdeps" in sysdeps.make_test_targets()
    assert "ASR_STREAM_STRICT_SYSDEPS=1" in sysdeps.MAKEFILE.read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]


def test_every_training_and_evaluation_voice_has_a_requirement() -> None:
    voices = set(engines.TRAIN_VOICES_OTHER_ENGINES) | {v for _, vs in engines.UNSEEN_SPEAKER_SPLITS for v in vs}
    assert voices <= set(sysdeps.REQUIREMENTS), sorted(voices - set(sysdeps.REQUIREMENTS))


def _used_requirements() -> set[str]:
    """Every name passed to ``needs(...)`` in the test modules (string literals, and ``needs(v)`` over a voice list)."""
    used = set()
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "needs":
                used |= {a.value for a in node.args if isinstance(a, ast.Constant)}
    return used


def test_no_test_module_checks_for_system_packages_itself() -> None:
    """A skip condition on a program, voice or library must go through ``needs`` so that its package is checked
    against the Makefile above (an ad hoc ``skipif(shutil.which(...))`` is how the last slip hid)."""
    probes = {"which", "voice_works", "find_library"}
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("skipif", "skip")):
                continue
            names = {getattr(n, "attr", getattr(n, "id", None)) for n in ast.walk(node)}
            if names & probes:
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert not offenders, f"use tests/sysdeps.needs(...) instead of an own skip condition at {offenders}"
    assert {"espeak-ng", "chromium", "portaudio", "fortunes", "festival:ked_diphone"} <= _used_requirements()


def test_needs_refuses_an_unknown_requirement() -> None:
    with pytest.raises(KeyError, match="add them to tests/sysdeps.py"):
        sysdeps.needs("festival:nobody")


MAKEFILE = """APT_PKGS := espeak-ng flite \\
\tfestival festvox-kdlpc16k
CORPUS_PKGS := mbrola festvox-rablpc16k
test: sysdeps install
\tpytest
"""


def test_makefile_lists_are_read_across_continued_lines() -> None:
    assert sysdeps.makefile_lists(MAKEFILE) == {"APT_PKGS": ("espeak-ng", "flite", "festival", "festvox-kdlpc16k"),
                                                 "CORPUS_PKGS": ("mbrola", "festvox-rablpc16k")}
    assert sysdeps.make_test_targets(MAKEFILE) == ("sysdeps", "install")


@pytest.mark.parametrize("strict", [False, True])
def test_a_missing_requirement_skips_with_its_target_or_fails_under_make_test(monkeypatch, pytester_like, strict) -> None:
    """Missing rab (corpus-sysdeps) always skips, naming the target; missing ked (sysdeps, which `make test` runs)
    skips, but fails under ``ASR_STREAM_STRICT_SYSDEPS=1``."""
    monkeypatch.setattr(sysdeps, "_present", lambda name: False)
    if strict:
        monkeypatch.setenv(sysdeps.STRICT_ENV, "1")
    else:
        monkeypatch.delenv(sysdeps.STRICT_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"festival:rab_diphone is not installed \(make corpus-sysdeps "):
        sysdeps.check_item(pytester_like("festival:rab_diphone"))
    expected = pytest.fail.Exception if strict else pytest.skip.Exception
    with pytest.raises(expected, match=r"festival:ked_diphone .*make sysdeps installs festival festvox-kdlpc16k"):
        sysdeps.check_item(pytester_like("festival:ked_diphone"))


@pytest.fixture
def pytester_like():
    """A stand-in for a collected test item that carries one ``sysdeps`` mark."""

    class Item:
        def __init__(self, *names: str) -> None:
            self.mark = sysdeps.needs(*names).mark

        def iter_markers(self, name: str):
            return iter([self.mark] if name == self.mark.name else [])

    return Item
