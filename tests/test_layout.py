"""The layout's promises, checked on the code itself: small functions, a torch-free config module, no import
cycles, one manifest format constant, an instant --help."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE_DIRS = {"probscale_edge": ROOT / "probscale_edge", "probscale_edge.converters": ROOT / "converters",
                "probscale_edge.runtime": ROOT / "runtime"}


def _modules():
    for pkg, folder in PACKAGE_DIRS.items():
        for p in sorted(folder.rglob("*.py")):
            rel = p.relative_to(folder).with_suffix("")
            parts = [x for x in rel.parts if x != "__init__"]
            name = ".".join([pkg, *parts])
            if any(name.startswith(k + ".") and k != pkg for k in PACKAGE_DIRS if k != pkg) and pkg == "probscale_edge":
                continue
            yield name, p


def test_no_function_longer_than_80_lines_and_build_under_60():
    """Counted as the AST node's span (first line of the `def` to its last line, decorators excluded)."""
    long = []
    for name, p in _modules():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = n.end_lineno - n.lineno + 1
                if span > 80:
                    long.append(f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({span} lines)")
                if name == "probscale_edge.pipeline" and n.name == "build":
                    assert span < 60, span
    assert not long, long


def test_config_and_specs_import_neither_torch_nor_numpy():
    code = ("import sys; import probscale_edge.config, probscale_edge.specs; "
            "bad = [m for m in ('torch', 'numpy', 'transformers', 'onnxruntime') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, (r.stdout, r.stderr[-1000:])


def _imports(name: str, path: Path) -> set[str]:
    """Module-level and function-level imports of package modules (absolute `probscale_edge...` names)."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("probscale_edge"):
            out.add(n.module)
            out.update(f"{n.module}.{a.name}" for a in n.names)
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names if a.name.startswith("probscale_edge"))
    return out


def test_no_import_cycle_among_the_package_modules():
    """Module-level imports only (what runs at import time): a cycle there is a real import cycle."""
    mods = dict(_modules())
    graph = {}
    for name, p in mods.items():
        deps = set()
        for n in ast.parse(p.read_text()).body:  # top level only
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("probscale_edge"):
                cands = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
                deps.update(c for c in cands if c in mods and c != name)
        graph[name] = deps
    # a package's __init__ that registers its submodules (probscale_edge.cli) imports them on purpose
    # after defining what they need; a submodule importing its parent package is then not a cycle
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cyc = stack[stack.index(m):] + [m]
            if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cyc, cyc[1:])):
                cycles.append(cyc)
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in graph.get(m, ()):
            visit(d)
        stack.pop()

    for m in graph:
        visit(m)
    assert not cycles, cycles


def test_one_manifest_format_constant_and_one_writer():
    hits = []
    for _, p in _modules():
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r'"format_version":\s*\d', line) or re.match(r"\s*(MANIFEST_FORMAT|FORMAT_VERSION)\s*=", line):
                hits.append(f"{p.relative_to(ROOT)}:{i}")
            if "manifest.json" in line and ("write_text" in line or "open(" in line and "'w'" in line):
                hits.append(f"{p.relative_to(ROOT)}:{i} writes a manifest")
    assert hits == ["runtime/bundle.py:" + str(_line_of(ROOT / "runtime" / "bundle.py", "FORMAT_VERSION ="))], hits


def _line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith(text))


def test_help_loads_no_heavy_library():
    """What keeps `--help` instant (its time is measured, not asserted: see the layout note)."""
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "build" in r.stdout
    r = subprocess.run([sys.executable, "-c", "import probscale_edge.cli, sys; print('torch' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr[-500:]


def test_every_test_folder_is_collected():
    """pytest skips folders named like build outputs (its norecursedirs: build, dist, venv, ...) without a word;
    a test folder of that name would silently drop out of the suite."""
    import subprocess
    import sys

    folders = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")}
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:warnings"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    collected = {line.split("::")[0].rsplit("/", 1)[0] for line in r.stdout.splitlines() if "::" in line}
    assert folders <= collected, sorted(folders - collected)
