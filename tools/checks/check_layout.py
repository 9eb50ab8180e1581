"""Layout check of the package: the rules of its house (issue 29), checked on the source without importing it.

    python tools/checks/check_layout.py                # asr_stream, less the findings ALLOWED below; `make test` runs it
    python tools/checks/check_layout.py --strict       # every finding, the allow-list ignored
    python tools/checks/check_layout.py PACKAGE_DIR    # another package (no allow-list)

The rules:

- **circle**: no import circle between the package's modules. Every import counts, at the top of a module or inside
  a function (a lazy import still ties the two modules together), except under ``if TYPE_CHECKING:``.
  ``from . import x`` is an import of the module ``x`` when there is one, else of the package's ``__init__``;
  ``from .a import b`` is an import of ``a`` (the ``__init__`` of the packages above it runs first, but is not
  counted: a package's ``__init__`` only gathers names for its users). One line per group of modules that reach
  each other (a strongly connected component), with one shortest circle through it.
- **cli**: no module below the command line imports it. The command line is every module with a part named
  ``cli`` or ``__main__`` in its dotted name (``asr_stream.cli``, ``asr_stream.training.cli``).
- **private**: no ``_private`` name of one module used in another: ``from .m import _x``, or ``m._x`` after
  ``from . import m`` / ``import pkg.m as m``. Dunder names are public.
- **long**: no module over 600 lines.

Each finding is one line, ``FILE:LINE: RULE: what``; the exit status is 1 when there is any. ``ALLOWED`` names the
findings that later slices of issue 29 remove, each with its reason and slice; an entry no longer found is itself a
finding (so the list only shrinks).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "asr_stream"
MAX_LINES = 600

#: Findings on asr_stream that a later slice of issue 29 removes: finding key -> why it stays, and which slice
#: removes it. Nothing else belongs here.
ALLOWED: dict[str, str] = {}  # empty since the cli/ package slice split cli.py


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``key`` is what :data:`ALLOWED` names, the rest is the line printed."""

    rule: str  # circle, cli, private, long, allowed
    key: str
    where: str  # FILE:LINE, relative to the package's parent folder
    text: str

    def line(self) -> str:
        return f"{self.where}: {self.rule}: {self.text}"


@dataclass(frozen=True)
class _Import:
    src: str
    dst: str
    line: int


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``package`` (a package's ``__init__.py`` is named
    as the package)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if "__pycache__" not in parts:
            out[".".join(parts)] = path
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (imports there are for annotations only)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            if (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
                    isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"):
                for stmt in node.body:
                    skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for an expression made of names and attributes, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def scan(name: str, path: Path, known: dict[str, Path]) -> tuple[list[_Import], list[tuple[int, str, str]]]:
    """The imports of module ``name`` that land in the package, and its uses of other modules' private names as
    (line, module, name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    imports: list[_Import] = []
    private: list[tuple[int, str, str]] = []
    bound: dict[str, str] = {}  # local name -> a package module it stands for

    def longest_module(dotted: str) -> tuple[str, list[str]] | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                return ".".join(parts[:i]), parts[i:]
        return None

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = longest_module(alias.name)
                if hit is None:
                    continue
                imports.append(_Import(name, hit[0], node.lineno))
                if alias.asname:
                    bound[alias.asname] = hit[0]
                else:  # `import pkg.a.b` binds `pkg`; attribute chains are resolved below
                    top = alias.name.split(".")[0]
                    if top in known:
                        bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                if node.level - 1 > len(here):
                    continue
                base = ".".join(base_parts + (node.module.split(".") if node.module else []))
            else:
                base = node.module or ""
            if base not in known:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    imports.append(_Import(name, sub, node.lineno))
                    bound[alias.asname or alias.name] = sub
                else:
                    imports.append(_Import(name, base, node.lineno))
                    if _is_private(alias.name) and base != name:
                        private.append((node.lineno, base, alias.name))
    for node in ast.walk(tree):  # m._x where m stands for another package module
        if id(node) in skip or not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        dotted = _dotted(node.value)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        if head not in bound:
            continue
        target = bound[head] + ("." + rest if rest else "")
        if target in known and target != name:
            private.append((node.lineno, target, node.attr))
    return [i for i in imports if i.dst != name], private


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _shortest_circle(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest path start -> ... -> start inside ``members`` (breadth-first)."""
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ()) & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]  # unreachable for a real component


def _is_cli(name: str) -> bool:
    return any(part in ("cli", "__main__") for part in name.split("."))


def check(package: Path, max_lines: int = MAX_LINES) -> list[Finding]:
    """Every finding on ``package`` (a folder with an ``__init__.py``), the allow-list not applied."""
    if not (package / "__init__.py").is_file():
        raise ValueError(f"{package} is not a package folder (no __init__.py)")
    known = modules(package)
    rel = {n: p.relative_to(package.parent).as_posix() for n, p in known.items()}
    graph: dict[str, set[str]] = {n: set() for n in known}
    first_line: dict[tuple[str, str], int] = {}
    findings: list[Finding] = []
    for name, path in known.items():
        imports, private = scan(name, path, known)
        for imp in imports:
            graph[name].add(imp.dst)
            first_line.setdefault((imp.src, imp.dst), imp.line)
            if _is_cli(imp.dst) and not _is_cli(name):
                findings.append(Finding("cli", f"cli:{name}->{imp.dst}", f"{rel[name]}:{imp.line}",
                                        f"{name} imports the command line ({imp.dst})"))
        for line, mod, attr in private:
            findings.append(Finding("private", f"private:{name}->{mod}.{attr}", f"{rel[name]}:{line}",
                                    f"{name} uses {mod}.{attr}, a private name of another module"))
        n_lines = len(path.read_text().splitlines())
        if n_lines > max_lines:
            findings.append(Finding("long", f"long:{rel[name]}", f"{rel[name]}:{n_lines}",
                                    f"{n_lines} lines (over {max_lines})"))
    for comp in _components(graph):
        circle = _shortest_circle(comp[0], set(comp), graph)
        steps = " -> ".join(f"{a} (line {first_line[(a, b)]})" for a, b in zip(circle, circle[1:])) + f" -> {circle[-1]}"
        more = f"; {len(comp)} modules reach each other: {', '.join(comp)}" if len(comp) > len(circle) - 1 else ""
        findings.append(Finding("circle", "circle:" + ",".join(comp), f"{rel[comp[0]]}:{first_line[(circle[0], circle[1])]}",
                                f"import circle {steps}{more}"))
    order = {"circle": 0, "cli": 1, "private": 2, "long": 3}
    return sorted(set(findings), key=lambda f: (order[f.rule], f.where, f.key))


def apply_allowed(findings: list[Finding], allowed: dict[str, str]) -> tuple[list[Finding], list[Finding]]:
    """(findings left, findings allowed); an allow-list entry that matches nothing is a finding of its own."""
    left = [f for f in findings if f.key not in allowed]
    held = [f for f in findings if f.key in allowed]
    found = {f.key for f in findings}
    left += [Finding("allowed", k, "tools/checks/check_layout.py",
                     f"ALLOWED names {k!r}, which is no longer found: remove the entry")
             for k in allowed if k not in found]
    return left, held


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", nargs="?", type=Path, default=PACKAGE, help="the package folder (default: asr_stream)")
    ap.add_argument("--strict", action="store_true", help="ignore the allow-list: print every finding")
    args = ap.parse_args(argv)
    package = args.package.resolve()
    try:
        findings = check(package)
    except (ValueError, SyntaxError, OSError) as e:  # not a package, a module that does not parse, unreadable
        where = f"{e.filename}:{e.lineno}: " if isinstance(e, SyntaxError) else ""
        print(f"check_layout: error: {where}{e.msg if isinstance(e, SyntaxError) else e}", file=sys.stderr)
        return 2
    allowed = ALLOWED if package == PACKAGE and not args.strict else {}
    left, held = apply_allowed(findings, allowed)
    for f in left:
        print(f.line())
    note = f"; {len(held)} allowed until a later slice of issue 29 (--strict lists them)" if held else ""
    print(f"check_layout: {package.name}: {len(left)} finding(s){note}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
