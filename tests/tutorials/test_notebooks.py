"""The tutorials are part of the product: every notebook in ``tutorials/`` must run top to bottom.

The notebooks are found when the tests are collected, so a new stage's notebook is picked up
without touching this file. For each one:

- it is stored clean (no outputs, no execution counts), so the repository holds the lesson and
  not one run of it, and diffs stay readable;
- the learner builds, the package checks: every exercise cell is a *stub* (tagged ``exercise``,
  first line ``# exercise: NAME``, only signatures, docstrings and ``raise NotImplementedError``),
  followed by cells tagged ``check`` that compare the learner's piece with buildlm's own (and
  with ``transformers``/``tiktoken`` where one exists);
- the worked solutions live in ``tutorials/solutions/<notebook stem>.py``, one section per
  exercise (``# %% exercise: NAME``); a learner loads one into the cell with
  ``%load -s SYMBOLS solutions/<stem>.py``, where SYMBOLS names the exercise's functions or
  classes, comma-separated (IPython's ``-s`` picks symbols, not sections), or
  ``%load solutions/<stem>.py`` for all of them;
- it executes twice in a fresh kernel, from the ``tutorials`` folder: *as shipped*, where every
  check cell fails with ``NotImplementedError`` (so no check can pass by accident) and no other
  cell fails, and *with the solutions injected* into the exercise cells, where every cell passes.

The kernel is started with this interpreter (``sys.executable``), the one that has ``buildlm``
installed, through a kernel spec written to a temporary folder: the machine's own ``python3``
kernel spec may name whichever ``python`` comes first on ``PATH``.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
NAME = re.compile(r"^(?P<stage>\d\d)_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
CELL_TIMEOUT_S = 120
SOLUTIONS = TUTORIALS / "solutions"
EXERCISE_LINE = re.compile(r"^# exercise: (?P<name>[a-z][a-z0-9_]*)\s*$")
SECTION = re.compile(r"^# %% exercise: (?P<name>[a-z][a-z0-9_]*)\s*$", flags=re.MULTILINE)
KERNEL_NAME = "python3"

notebook_params = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def test_notebooks_are_named_by_a_unique_stage_number():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"
    stages: dict[str, str] = {}
    for path in NOTEBOOKS:
        match = NAME.match(path.name)
        assert match, f"{path.name}: name tutorials NN_lowercase_words.ipynb, e.g. 01_tensors.ipynb"
        stage = match["stage"]
        assert stage not in stages, f"{path.name} and {stages[stage]} share stage number {stage}"
        stages[stage] = path.name
    # The learning path: part 1's nine stages, then part 2's (10 to 13), one notebook each.
    numbers = sorted(int(stage) for stage in stages)
    assert numbers[:9] == list(range(1, 10)) and numbers[-1] <= 13, sorted(stages)


@notebook_params
def test_notebook_is_stored_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), f"{path.name}: cell {i} has stored outputs; clear them"
        assert cell.get("execution_count") is None, (
            f"{path.name}: cell {i} has an execution count; clear outputs before saving"
        )


@pytest.fixture(scope="session")
def kernel_spec_manager(tmp_path_factory) -> KernelSpecManager:
    """A kernel spec named ``python3`` that runs ipykernel under this very interpreter."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python 3 ({sys.executable})",
                "language": "python",
                "env": {
                    # Headless, and figures land in the outputs even where a notebook forgets
                    # `%matplotlib inline` (the course website shows these runs).
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    # The tutorials' tensors are tiny. On a shared, loaded machine a second
                    # OpenMP thread mostly waits (stage 5 took 32 s with two threads, 12 s with one).
                    "OMP_NUM_THREADS": "1",
                },
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(kernels)])




def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def exercises(nb: nbformat.NotebookNode) -> dict[str, int]:
    """Exercise name -> index of its stub cell."""
    found: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "exercise" in _tags(cell):
            first = cell.source.splitlines()[0] if cell.source else ""
            match = EXERCISE_LINE.match(first)
            assert match, f"cell {i}: an exercise cell starts with '# exercise: NAME', got {first!r}"
            assert match["name"] not in found, f"exercise {match['name']!r} appears twice"
            found[match["name"]] = i
    return found


def solutions(path: Path) -> dict[str, str]:
    """Exercise name -> the solution's code, from ``tutorials/solutions/<stem>.py``."""
    file = SOLUTIONS / f"{path.stem}.py"
    assert file.exists(), f"{path.name}: no solutions file {file.relative_to(TUTORIALS)}"
    text = file.read_text()
    marks = list(SECTION.finditer(text))
    assert marks, f"{file.name}: no '# %% exercise: NAME' section"
    out = {}
    for mark, after in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : after.start() if after else len(text)].strip("\n")
        out[mark["name"]] = f"# exercise: {mark['name']}\n{body}\n"
    return out


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
        and isinstance(node.value.value, str)  # fmt: skip


def _raises_not_implemented(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Raise) or node.exc is None:
        return False
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def stub_problems(source: str) -> list[str]:
    """Why ``source`` is more than a stub (empty list: it is one).

    A stub holds imports, and functions or classes whose every function body is an optional
    docstring followed by ``raise NotImplementedError``; a class may also hold a docstring and
    annotated names without values (``d_model: int``).
    """
    problems = []

    def function(fn: ast.FunctionDef, where: str) -> None:
        body = fn.body[1:] if fn.body and _is_docstring(fn.body[0]) else fn.body
        if len(body) != 1 or not _raises_not_implemented(body[0]):
            problems.append(f"{where}{fn.name}: the body must be only 'raise NotImplementedError'")

    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _is_docstring(node):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function(node, "")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    function(item, f"{node.name}.")
                elif not (_is_docstring(item) or (isinstance(item, ast.AnnAssign) and item.value is None)):
                    problems.append(f"{node.name}: only methods, a docstring and annotations")
        else:
            problems.append(f"line {node.lineno}: {type(node).__name__} is more than a stub")
    return problems


def test_stub_detection_catches_an_answer():
    """The stub rule itself: a body that does work is caught, a stub is not."""
    stub = 'import torch\n\nclass A:\n    """doc"""\n    x: int\n    def f(self):\n        """c"""\n        raise NotImplementedError\n'
    assert stub_problems(stub) == []
    assert stub_problems("def f(x):\n    return x + 1\n")
    assert stub_problems("def f(x):\n    raise NotImplementedError\ny = f(2)\n")
    assert stub_problems("class A:\n    def f(self):\n        pass\n")


@notebook_params
def test_every_exercise_ships_as_a_stub_with_a_check_and_a_solution(path):
    nb = _read(path)
    found = exercises(nb)
    assert found, f"{path.name}: no exercise cell (tag 'exercise', first line '# exercise: NAME')"
    for name, index in found.items():
        problems = stub_problems(nb.cells[index].source)
        assert not problems, f"{path.name}: exercise {name!r} holds more than a stub: {problems}"
        checks = [c for c in nb.cells[index + 1 :] if "check" in _tags(c)]
        assert checks, f"{path.name}: exercise {name!r} has no check cell after it"
    assert set(solutions(path)) == set(found), (
        f"{path.name}: exercises {sorted(found)} but solutions for {sorted(solutions(path))}"
    )


def _execute(nb: nbformat.NotebookNode, kernel_spec_manager) -> None:
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager)
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, allow_errors=True,
        resources={"metadata": {"path": str(TUTORIALS)}},
    )  # fmt: skip
    client.execute(cleanup_kc=True)


def _error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])))
            return out["ename"], trace
    return None


@pytest.mark.slow
@notebook_params
def test_notebook_as_shipped_fails_only_in_its_checks(path, kernel_spec_manager):
    """The learner's first run: every check says 'not implemented yet', nothing else breaks."""
    nb = _read(path)
    start = time.perf_counter()
    _execute(nb, kernel_spec_manager)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        error = _error(cell)
        if "check" in _tags(cell):
            assert error is not None, f"{path.name}: check cell {i} passed on the stubs:\n{cell.source}"
            assert error[0] == "NotImplementedError", f"{path.name}: check cell {i}:\n{error[1]}"
        else:
            assert error is None, f"{path.name}: cell {i} raised an error\n{error[1]}"
    print(f"{path.name}: as shipped in {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
@notebook_params
def test_notebook_with_solutions_passes_every_check(path, kernel_spec_manager):
    """The learner's finished run: the solutions in place, every cell and check passes."""
    nb = _read(path)
    answers = solutions(path)
    for name, index in exercises(nb).items():
        nb.cells[index].source = answers[name]
    site = _site_build()
    keep_as = site.cached_copy(path) if site else None  # keyed by the content it ran
    start = time.perf_counter()
    _execute(nb, kernel_spec_manager)
    for i, cell in enumerate(nb.cells):
        error = _error(cell) if cell.cell_type == "code" else None
        assert error is None, f"{path.name}: cell {i} raised an error\n{error[1]}"
    print(f"{path.name}: with solutions in {time.perf_counter() - start:.1f} s")
    if site:
        site.keep_executed(nb, keep_as)


def _site_build():
    """``docs/build_site.py``, when this run's lessons are what the course website would show.

    This run is the one the site renders (the worked answers in place, every cell passed), so it
    goes into the site build's cache and ``tests/tutorials/test_site.py``, which runs after this
    file, does not execute the lessons again. Only when the kernel imports this checkout's
    buildlm: the cache is keyed by this checkout's source.
    """
    import importlib.util

    import buildlm

    root = TUTORIALS.parent
    if not Path(buildlm.__file__).resolve().is_relative_to(root / "src"):
        return None
    spec = importlib.util.spec_from_file_location("build_site", root / "docs" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
