"""The mutants of ``make mutants`` (tools/checks/mutants.py) still apply to the code: each replaced text occurs exactly
once, so a refactor that moves it is noticed in the default run, not only when someone runs the mutants."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_mutant_applies_once():
    spec = importlib.util.spec_from_file_location("mutants_tool", REPO / "tools" / "checks" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    names = [m.name for m in mod.MUTANTS]
    assert len(names) == len(set(names)) >= 6
    for m in mod.MUTANTS:
        assert m.old != m.new, m.name
        assert (REPO / m.file).read_text().count(m.old) == 1, f"mutant {m.name}: text not found once in {m.file}"
        assert all((REPO / t.split("::")[0]).is_file() for t in m.tests), m.name
