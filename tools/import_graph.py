"""The package's import structure: which part imports which, the cycles between parts, and the biggest modules.

    python tools/import_graph.py [--root pipeline] [--depth 2] [--top 10]

A part is a module path cut to ``--depth`` names (``pipeline.train``, ``pipeline.metrics``). Every ``import`` and
``from ... import`` of the package is counted, those inside functions too (the imports a module makes only when
it needs them are still a dependency). Printed before and after a restructuring to compare them.

Hand-written: the standard library's ``ast`` reads the imports; a graph package would add a dependency for
twenty lines.
"""
from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, package: str) -> set[str]:
    """The modules of ``package`` that the file imports (relative imports resolved)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = here[:len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m == package or m.startswith(package + ".")}


def cut(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def part_edges(package: str = "pipeline", depth: int = 2) -> tuple[dict[str, Path], Counter]:
    """The package's modules (name -> file) and how many imports go from one part to another."""
    files = {module_name(p, REPO): p for p in sorted((REPO / package).rglob("*.py"))}
    edges: Counter = Counter()
    for name, path in files.items():
        for target in imports_of(path, name, package):
            while target not in files and "." in target:  # `from pkg import name`: the module is pkg
                target = target.rsplit(".", 1)[0]
            a, b = cut(name, depth), cut(target, depth)
            if a != b and target in files:
                edges[(a, b)] += 1
    return files, edges


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="pipeline")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    files, edges = part_edges(args.root, args.depth)
    parts = sorted({cut(n, args.depth) for n in files})
    print(f"{len(files)} modules in {len(parts)} parts, {sum(p.read_text().count(chr(10)) for p in files.values())} "
          f"lines; {len(edges)} part-to-part imports")
    for part in parts:
        out = sorted(b for a, b in edges if a == part)
        print(f"  {part:28s} -> {', '.join(out) if out else '(nothing)'}")
    cycles = sorted({tuple(sorted((a, b))) for a, b in edges if (b, a) in edges})
    print("two-way imports between parts:", ", ".join(f"{a} <-> {b}" for a, b in cycles) or "none")
    sizes = sorted(((p.read_text().count("\n"), n) for n, p in files.items()), reverse=True)[:args.top]
    print("biggest modules:", ", ".join(f"{n} {lines}" for lines, n in sizes))


if __name__ == "__main__":
    main()
