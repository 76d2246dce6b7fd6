"""The layers of the package only point down, and no two files import each other.

buildlm is built in layers (docs/architecture.md, "Rules of the house"): a layer may import the
ones below it, never one above. Every ``import`` and ``from ... import`` in ``src/buildlm`` is read
with `ast`, including those inside functions (a lazy import is still an arrow), and checked
against the order below. A second test looks for import cycles between files, and a third loads a
checkpoint for inference in a fresh interpreter and checks that the training package stayed out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "buildlm"

# Bottom to top. A module may import modules of its own layer or of a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "atomic", "lock", "cli_parser", "device", "precision"),  # shared helpers
    ("tools",),  # the tools a model may call (used by data and by infer)
    ("tokenizer",),
    ("data",),
    ("model",),
    ("checkpoint_format",),
    ("hub",),
    ("infer",),
    ("viz",),
    ("eval",),
    ("train",),
    ("finetune",),
    ("serve",),
    ("cli", "loader", "__init__", "__main__"),  # the commands and the one-line API
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# A command (``cli.py``, ``*_cli.py``) sits at the top of its package and may reach across to the
# libraries beside it (``buildlm tokenizer train --data shakespeare`` reads a bundled corpus), but
# never up into training or serving.
COMMANDS_REACH = RANK["eval"]


def is_command(module: str) -> bool:
    last = module.rpartition(".")[2]
    return last == "cli" or last.endswith("_cli")


def highest_allowed(module: str) -> int:
    own = RANK[layer_of(module)]
    return max(own, COMMANDS_REACH) if is_command(module) else own


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    """``buildlm.infer.engine`` -> ``infer``; ``buildlm`` (the package itself) -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every buildlm module ``path`` imports, at any depth of its code (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from buildlm.train import checkpoint` imports a module; `... import Trainer` a name
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        else:
            continue
        for target in targets:
            if target == "buildlm" or target.startswith("buildlm."):
                while target not in known and "." in target:  # `import buildlm.x.y as z` etc.
                    target = target.rpartition(".")[0]
                found.add(target)
    found.discard(this)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: imports_of(path, known) for name, path in files.items()}


def test_every_package_has_a_layer(graph):
    unplaced = sorted({layer_of(m) for m in graph} - set(RANK))
    assert not unplaced, f"add {unplaced} to LAYERS in tests/test_layers.py (and to the map in docs)"


def test_layers_only_import_downward(graph):
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if RANK[layer_of(target)] > highest_allowed(module)
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    """Tarjan's strongly connected components: a component of two or more files is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"files that import each other (directly or around a loop): {cycles}"


def test_commands_reach_across_but_not_up():
    assert highest_allowed("buildlm.tokenizer.cli") == RANK["eval"]
    assert highest_allowed("buildlm.tokenizer.bpe") == RANK["tokenizer"]
    assert highest_allowed("buildlm.infer.cli") < RANK["train"] < RANK["serve"]


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
    """The walk must see a lazy import: a fake infer file importing train inside a function."""
    fake = tmp_path / "buildlm" / "infer" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from buildlm.train.trainer import Trainer\n    return Trainer\n")
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        found = imports_of(fake, {"buildlm.train.trainer", "buildlm.infer.fake"})
    finally:
        SRC = saved
    assert found == {"buildlm.train.trainer"}


def test_loading_for_inference_does_not_import_training(tmp_path):
    """What a user runs to generate text (`buildlm.load` on a run folder) keeps `train` out."""
    code = (
        "import sys, buildlm\n"
        "loaded = buildlm.load('shakespeare-small')\n"
        "loaded.generate('ROMEO:', max_new_tokens=2, seed=0)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('buildlm.train', 'buildlm.serve', "
        "'buildlm.finetune')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
