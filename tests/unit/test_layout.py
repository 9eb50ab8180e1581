"""The layout check of `make test` (tools/checks/check_layout.py): on a small made-up package it finds each kind of
broken rule, and the real package passes it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layout():
    spec = importlib.util.spec_from_file_location("check_layout_tool", REPO / "tools" / "checks" / "check_layout.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_finds_a_circle_a_private_import_a_cli_import_and_a_long_module(layout, tmp_path: Path, capsys) -> None:
    pkg = _package(tmp_path, {
        # a circle through a lazy `from . import x` (the way the three circles of issue 29 were made)
        "a.py": "from .b import helper\n\n\ndef _inner():\n    return 1\n",
        "b.py": "def helper():\n    from . import a\n    return a\n",
        # private names of another module: imported by name, and used through the module
        "c.py": "from .a import _inner\n",
        "d.py": "from . import a\n\n\ndef f():\n    return a._inner() + a.__name__.count('x')\n",
        # below the command line, importing it
        "cli.py": "import sys\n",
        "low.py": "def run():\n    from .cli import sys\n",
        "long.py": "x = 1\n" * 601,
        # not findings: an annotation-only import back, exactly 600 lines, a package import of its own submodule
        "sub/__init__.py": "from .e import E\n",
        "sub/e.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import E\n\nE = 1\n",
        "ok.py": "y = 2\n" * 600,
    })
    assert layout.main([str(pkg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "pkg/a.py:1: circle: import circle pkg.a (line 1) -> pkg.b (line 2) -> pkg.a",
        "pkg/low.py:2: cli: pkg.low imports the command line (pkg.cli)",
        "pkg/c.py:1: private: pkg.c uses pkg.a._inner, a private name of another module",
        "pkg/d.py:5: private: pkg.d uses pkg.a._inner, a private name of another module",
        "pkg/long.py:601: long: 601 lines (over 600)",
    ]


def test_a_circle_of_three_names_every_module_and_one_shortest_path(layout, tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"x.py": "import pkg.y\nimport pkg.z\n", "y.py": "from pkg import z\n",
                              "z.py": "from . import x\n"})
    [f] = layout.check(pkg)
    assert f.rule == "circle" and f.key == "circle:pkg.x,pkg.y,pkg.z"
    assert f.text == "import circle pkg.x (line 2) -> pkg.z (line 1) -> pkg.x; 3 modules reach each other: pkg.x, pkg.y, pkg.z"


def test_an_allow_list_entry_no_longer_found_is_a_finding(layout, tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"long.py": "x = 1\n" * 601})
    found = layout.check(pkg)
    left, held = layout.apply_allowed(found, {"long:pkg/long.py": "split later", "long:pkg/gone.py": "split later"})
    assert [f.key for f in held] == ["long:pkg/long.py"]
    assert [(f.rule, f.key) for f in left] == [("allowed", "long:pkg/gone.py")]


def test_the_package_passes_and_the_allow_list_holds_only_long_modules(layout, capsys) -> None:
    assert layout.main([]) == 0, capsys.readouterr().out
    assert all(k.startswith("long:") for k in layout.ALLOWED), "circles, CLI and private imports are not allowed"
    assert all("slice" in why for why in layout.ALLOWED.values()), "each entry says which slice removes it"


def test_the_package_passes_strictly(layout, capsys) -> None:
    """No finding at all, the allow-list ignored: cli.py, the last long module, is the cli/ package now."""
    assert layout.main(["--strict"]) == 0, capsys.readouterr().out


def test_nothing_at_run_time_imports_the_corpus_tooling(layout) -> None:
    """Synthesis and test-set writers live in asr_stream/corpus/; the runtime (training's augmentation included:
    its noise comes from audio/noise.py) imports none of them. Only corpus/ itself and the deprecated names left in
    data/ for old imports reach them."""
    package = REPO / "asr_stream"
    known = layout.modules(package)
    writers = {m for m in known if m.startswith("asr_stream.corpus")}
    shims = {f"asr_stream.data.{m}" for m in ("synth", "engines", "espeak", "robust", "longform")}
    writers |= shims
    users = {(imp.src, imp.dst) for name, path in known.items() for imp in layout.scan(name, path, known)[0]
             if imp.dst in writers and not imp.src.startswith("asr_stream.corpus") and imp.src not in shims}
    assert users == set()


def test_the_sample_rate_is_defined_once() -> None:
    """asr_stream.audio.io.SAMPLE_RATE is the package's one sample rate: no other module defines one (SAMPLE_RATE,
    SR), and the number 16000 is written nowhere else (the serving modules, another slice of issue 29, excepted)."""
    import ast

    package = REPO / "asr_stream"
    definitions, literals = [], []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("SAMPLE_RATE", "SR")
                                                    for t in node.targets):
                definitions.append(rel)
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 16000:
                literals.append(rel)
    assert definitions == ["asr_stream/audio/io.py"]
    serving = {"asr_stream/serving/client.py", "asr_stream/server.py"}  # client/serve: their own slice
    assert sorted(set(literals) - serving) == ["asr_stream/audio/io.py", "asr_stream/audio/vad.py"]


def test_the_moved_serving_modules_keep_their_old_names() -> None:
    """asr_stream.client and asr_stream.fairness moved into asr_stream.serving: the old names are the same module
    objects (a monkeypatch through one is seen through the other), each with a DeprecationWarning naming the new one."""
    import subprocess
    import sys

    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    import asr_stream.client as a, asr_stream.fairness as b\n"
            "import asr_stream.serving.client as c, asr_stream.serving.fairness as d\n"
            "print(a is c, b is d, [str(x.message) for x in w if x.category is DeprecationWarning])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ("True True ['asr_stream.client is deprecated: import asr_stream.serving.client', "
                                  "'asr_stream.fairness is deprecated: import asr_stream.serving.fairness']")
