"""The tutorials are part of the product: every notebook in ``tutorials/`` must run top to bottom.

The notebooks are found when the tests are collected, so a new stage's notebook is picked up
without touching this file. For each one:

- it is stored clean (no outputs, no execution counts), so the repository holds the lesson and
  not one run of it, and diffs stay readable;
- it ends with an "Exercises" section whose checks are real ``assert`` statements;
- it executes without an error in a fresh kernel, cell by cell, from the ``tutorials`` folder.

The kernel is started with this interpreter (``sys.executable``), the one that has ``buildlm``
installed, through a kernel spec written to a temporary folder: the machine's own ``python3``
kernel spec may name whichever ``python`` comes first on ``PATH``.
"""

from __future__ import annotations

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
from nbclient.exceptions import CellExecutionError

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
NAME = re.compile(r"^(?P<stage>\d\d)_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
CELL_TIMEOUT_S = 120
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
    # The learning path has nine stages, one notebook each.
    assert sorted(stages) == [f"{n:02d}" for n in range(1, 10)], sorted(stages)


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


@notebook_params
def test_notebook_has_exercises_with_checks(path):
    nb = _read(path)
    headings = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        and re.search(r"^#+\s*Exercises\b", cell.source, flags=re.MULTILINE)
    ]
    assert headings, f'{path.name}: no markdown heading "Exercises"'
    after = [cell.source for cell in nb.cells[headings[0] + 1 :] if cell.cell_type == "code"]
    assert any(re.search(r"^\s*assert\b", src, flags=re.MULTILINE) for src in after), (
        f"{path.name}: the Exercises section has no code cell with an assert"
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
                    # Headless: a notebook that forgets `%matplotlib inline` needs no display.
                    "MPLBACKEND": "Agg",
                    # The tutorials' tensors are tiny. On a shared, loaded machine a second
                    # OpenMP thread mostly waits (stage 5 took 32 s with two threads, 12 s with one).
                    "OMP_NUM_THREADS": "1",
                },
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.mark.slow
@notebook_params
def test_notebook_executes(path, kernel_spec_manager):
    nb = _read(path)
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    start = time.perf_counter()
    try:
        client.execute(cleanup_kc=True)
    except CellExecutionError as err:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # drop the traceback's terminal colours
        pytest.fail(f"{path.name}: a cell raised an error\n{plain}", pytrace=False)
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
