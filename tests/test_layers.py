"""The package's modules form layers: each imports only from the layers below it.

Every ``import asr.x`` / ``from asr.x import ...`` / ``from asr import x`` counts,
including imports inside functions (a cycle hidden in a function is still a cycle:
it decides what can be understood, tested and moved on its own). docs/design.md
describes the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asr"

# Lowest first. A module of a subpackage (asr/synthetic/voices.py) belongs to its
# subpackage's layer; modules inside one subpackage may import each other (without
# cycles), never a higher layer.
LAYERS: list[set[str]] = [
    {"text", "audio", "metrics", "ctc", "gru", "atomic", "malloc", "configs"},
    {"features", "augment", "model", "manifest", "lm"},
    {"decoding", "layouts", "runtime"},
    {"inference"},
    {"data", "streaming", "finetune", "export_stream"},
    {"datamodule", "task", "posteriors", "plots", "probe", "export"},
    {"transcribe", "evaluate", "tune", "librispeech", "synthetic"},
    {"formats", "train"},
    {"ocr", "serve"},
    {"cli"},
]
# The package's entry points: they import what they expose.
ENTRY = {"__init__", "__main__"}


def unit(module: str) -> str:
    """``asr.synthetic.voices`` -> ``synthetic``; ``asr.ctc`` -> ``ctc``."""
    return module.split(".")[1]


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]  # asr/synthetic/__init__.py -> asr.synthetic
        out[".".join(parts)] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """The asr modules ``path`` imports anywhere in it (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "asr"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "asr":
                # a name imported from a module may be a module (from asr import
                # ctc): resolve() keeps the longest prefix that is one
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


def resolve(names: set[str], known: set[str]) -> set[str]:
    """Imported names -> the modules they are or are in: ``asr.decoding.Word`` ->
    ``asr.decoding`` (the longest prefix that is a known module)."""
    out = set()
    for target in names:
        parts = target.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            out.add(".".join(parts))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {
        name: resolve(imports(path, name), set(mods)) - {name}
        for name, path in mods.items()
    }


def layer_of(u: str) -> int:
    for i, layer in enumerate(LAYERS):
        if u in layer:
            return i
    raise AssertionError(f"asr.{u} is in no layer: add it to LAYERS (and docs)")


def test_every_module_has_a_layer():
    for name in graph():
        if unit(name) not in ENTRY:
            layer_of(unit(name))


def test_each_module_imports_only_lower_layers():
    bad = []
    for name, deps in graph().items():
        if unit(name) in ENTRY:
            continue
        mine = layer_of(unit(name))
        for dep in deps:
            if unit(dep) == unit(name):
                continue  # inside one subpackage (cycles checked below)
            theirs = layer_of(unit(dep))
            if theirs >= mine:
                bad.append(f"{name} (layer {mine}) imports {dep} (layer {theirs})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def find_cycle(deps: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(deps.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(deps):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    from asr.lm import load_lm\n", {"asr.lm"}),
        ("from asr import ctc, text\n", {"asr.ctc", "asr.text"}),
        ("import asr.decoding as d\n", {"asr.decoding"}),
        ("from . import voices\n", {"asr.synthetic.voices"}),
        ("from .plan import Plan\n", {"asr.synthetic.plan"}),
    ],
)
def test_imports_are_found_everywhere(tmp_path, source, expected):
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"asr", "asr.lm", "asr.ctc", "asr.text", "asr.decoding"}
    known |= {"asr.synthetic", "asr.synthetic.voices", "asr.synthetic.plan"}
    assert resolve(imports(path, "asr.synthetic.mod"), known) == expected


def test_no_module_is_over_800_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 800
    }
    assert not long, f"modules over 800 lines: {long}"
