"""Build the course website: the README, every lesson with its outputs, the architecture map and
an API reference, as static HTML (Sphinx, MyST-NB and the Furo theme).

    python docs/build_site.py                   # -> build/site/index.html
    python -m http.server -d build/site 8000    # then open http://127.0.0.1:8000

What it does, in order:

1. **Execute the lessons.** Every ``tutorials/NN_*.ipynb`` is run top to bottom in a fresh
   kernel, from the ``tutorials`` folder, with the worked answers from
   ``tutorials/solutions/<stem>.py`` in its exercise cells (the way
   ``tests/tutorials/test_notebooks.py`` runs it), so every check passes and every figure
   exists. The stored notebooks are never touched: the executed copies go to the build folder.
   Lessons run in parallel (``--jobs``), and an executed copy is kept under a key made of the
   content of everything that can change its outputs (the notebook, its solutions, the checks,
   the diagrams and the package's source), so an unchanged lesson is not run again.
2. **Stage the pages.** The README, ``docs/architecture.md``, the executed lessons (each with a
   note that it shows the worked answers and a link to the notebook as shipped), one API page
   per package (``autodoc`` directives; the text comes from the docstrings) and the front page,
   whose navigation lists the lessons by stage, found from the file names: a new
   ``tutorials/14_*.ipynb`` appears without editing anything here.
3. **Render** with ``sphinx-build`` into ``--out``.

Needs the ``docs`` extra: ``pip install -e ".[docs]"`` (the ``dev`` extra includes it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
LESSON = re.compile(r"^(?P<stage>\d\d)_[a-z0-9_]+\.ipynb$")
SECTION = re.compile(r"^# %% exercise: (?P<name>[a-z][a-z0-9_]*)\s*$", flags=re.MULTILINE)
EXERCISE_LINE = re.compile(r"^# exercise: (?P<name>[a-z][a-z0-9_]*)\s*$")
CELL_TIMEOUT_S = 300
# Executed lessons, by content key (the default of --work, plus "executed"). The notebook tests
# (tests/tutorials/test_notebooks.py) store the runs they make here too, through keep_executed.
CACHE = ROOT / "build" / "site-work" / "executed"
# Bump when the way lessons are executed changes, so cached copies are not reused.
EXECUTION_VERSION = "1"

# The course in two parts; a stage's part is the last one that starts at or before it.
PARTS = [(1, "Part 1: GPT-2 from scratch"), (10, "Part 2: beyond GPT-2")]

# API pages, in the order of the layers (docs/architecture.md, "The packages, in layers").
API_PACKAGES = [
    ("buildlm.tokenizer", "Tokenizers"),
    ("buildlm.data", "Data"),
    ("buildlm.model", "The model"),
    ("buildlm.checkpoint_format", "Checkpoints"),
    ("buildlm.hub", "Hugging Face folders"),
    ("buildlm.infer", "Generating text"),
    ("buildlm.viz", "Pictures"),
    ("buildlm.eval", "Evaluation"),
    ("buildlm.train", "Training"),
    ("buildlm.finetune", "Fine-tuning"),
    ("buildlm.serve", "Serving"),
]


def lessons() -> list[Path]:
    """The lessons, in stage order: ``tutorials/NN_name.ipynb``."""
    return sorted(p for p in TUTORIALS.glob("*.ipynb") if LESSON.match(p.name))


def stage(path: Path) -> int:
    return int(path.name[:2])


# --- 1. executing the lessons -------------------------------------------------------------


def solutions(path: Path) -> dict[str, str]:
    """Exercise name -> the worked answer's code, from ``tutorials/solutions/<stem>.py``."""
    file = TUTORIALS / "solutions" / f"{path.stem}.py"
    if not file.exists():
        raise SystemExit(f"{path.name}: no solutions file {file}; add it (one section per exercise)")
    text = file.read_text(encoding="utf-8")
    marks = list(SECTION.finditer(text))
    out = {}
    for mark, after in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : after.start() if after else len(text)].strip("\n")
        out[mark["name"]] = f"# exercise: {mark['name']}\n{body}\n"
    return out


def with_solutions(path: Path):
    """The notebook with every exercise stub replaced by its worked answer."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    answers = solutions(path)
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type == "code" and "exercise" in tags:
            first = cell.source.splitlines()[0] if cell.source else ""
            match = EXERCISE_LINE.match(first)
            if not match or match["name"] not in answers:
                raise SystemExit(f"{path.name}: exercise cell {first!r} has no worked answer")
            cell.source = answers[match["name"]]
    return nb


def content_key(path: Path) -> str:
    """A hash of everything that can change the lesson's outputs (see the module docstring)."""
    h = hashlib.sha256(f"{EXECUTION_VERSION} {sys.version}".encode())
    files = [path, TUTORIALS / "solutions" / f"{path.stem}.py"]
    for folder in (TUTORIALS / "checks", TUTORIALS / "diagrams", ROOT / "src" / "buildlm"):
        files += sorted(
            p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    for file in files:
        h.update(str(file.relative_to(ROOT)).encode())
        h.update(file.read_bytes() if file.exists() else b"<missing>")
    return h.hexdigest()[:20]


def cached_copy(path: Path, cache: Path = CACHE) -> Path:
    """Where the executed copy of the lesson ``path``, as it is now, is kept."""
    return cache / f"{path.stem}-{content_key(path)}.ipynb"


def keep_executed(nb, dst: Path) -> None:
    """Store ``nb``, a lesson executed with its worked answers where no cell failed, as ``dst``
    (its ``cached_copy``, taken *before* it ran), written whole or not at all, so the next site
    build does not run it again."""
    import nbformat

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".{os.getpid()}.partial")
    nbformat.write(nb, str(tmp))
    tmp.replace(dst)


def kernel_dir(tmp: Path) -> Path:
    """A kernel spec named ``python3`` that runs this interpreter (the one with buildlm)."""
    spec = tmp / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    env = {
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # figures into the outputs
        "OMP_NUM_THREADS": "1",  # tiny tensors: a second thread mostly waits
        # This checkout's buildlm, whichever one is installed.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python", "env": env})
    )
    return spec.parent


def execute_one(src: Path, dst: Path, kernels: Path) -> None:
    """Run one lesson with its solutions; write the executed copy to ``dst`` (a child process)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = with_solutions(src)
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    client = NotebookClient(
        nb,
        km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs),
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        raise SystemExit(f"{src.name}: a cell failed with the worked answers in place:\n{err}") from None
    keep_executed(nb, dst)


def execute_lessons(paths: list[Path], cache: Path, jobs: int) -> dict[Path, Path]:
    """Lesson -> its executed copy in ``cache``, running those not cached, ``jobs`` at a time."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {p: cached_copy(p, cache) for p in paths}
    todo = [p for p in paths if not out[p].exists()]
    if not todo:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        kernels = kernel_dir(Path(tmp))
        running: list[tuple[Path, subprocess.Popen, float]] = []
        failed = []
        while todo or running:
            while todo and len(running) < jobs:
                p = todo.pop(0)
                cmd = [sys.executable, __file__, "_execute", str(p), str(out[p]), str(kernels)]
                running.append((p, subprocess.Popen(cmd), time.perf_counter()))
            time.sleep(0.2)
            for item in list(running):
                p, proc, start = item
                if proc.poll() is not None:
                    running.remove(item)
                    took = time.perf_counter() - start
                    print(f"executed {p.name} in {took:.0f} s" + (" (FAILED)" if proc.returncode else ""))
                    if proc.returncode:
                        failed.append(p.name)
        if failed:
            raise SystemExit(f"lessons failed to execute with their solutions: {failed}")
    return out


# --- 2. staging the pages -------------------------------------------------------------------


def title(nb) -> str:
    """The lesson's first heading, e.g. ``Stage 5 — The GPT architecture``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled lesson"


def note(path: Path) -> str:
    """The box at the top of each lesson page: worked answers shown; where to try it."""
    return (
        ":::{admonition} This page shows the worked answers\n:class: tip\n\n"
        f"The lesson was run when this site was built, with the worked answers from "
        f"`tutorials/solutions/{path.stem}.py` in its exercise cells, so every check passes and "
        f"every figure is drawn. To build the pieces yourself, open the notebook as shipped, "
        f"{{download}}`tutorials/{path.name} <_shipped/{path.name}>`, in Jupyter "
        f"(`jupyter lab tutorials/` in the repository): its exercise cells hold stubs for you "
        f"to fill in, and the check after each one tells you what differs.\n:::\n"
    )


def autodoc(directive: str, name: str, *options: str) -> list[str]:
    """An autodoc directive in a Markdown page: autodoc writes reStructuredText, so the directive
    goes in an ``eval-rst`` block (a bare MyST directive would show that text as Markdown)."""
    return ["```{eval-rst}", f".. {directive}:: {name}", *(f"   {o}" for o in options), "```", ""]


def api_page(module: str, heading: str) -> str:
    """One package's API page: its docstring, then its public names (``__all__``) or, where the
    package exports none, each of its modules."""
    import importlib
    import pkgutil

    mod = importlib.import_module(module)
    lines = [f"# {heading}: `{module}`", ""]
    if hasattr(mod, "__all__") or not hasattr(mod, "__path__"):
        lines += autodoc("automodule", module)
    else:
        lines += autodoc("automodule", module, ":no-members:")
        for info in pkgutil.iter_modules(mod.__path__):
            if not info.name.startswith("_"):
                lines += [f"## `{module}.{info.name}`", "",
                          *autodoc("automodule", f"{module}.{info.name}")]  # fmt: skip
    return "\n".join(lines)


def stage_pages(src: Path, executed: dict[Path, Path]) -> None:
    import nbformat

    (src / "_static").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "site" / "conf.py", src / "conf.py")
    (src / "_static" / "favicon.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
        '<rect width="16" height="16" rx="3" fill="#3b6fb6"/>'
        '<text x="8" y="12" font-size="10" text-anchor="middle" fill="#fff">b</text></svg>\n'
    )
    shutil.copy(ROOT / "README.md", src / "readme.md")
    shutil.copy(ROOT / "docs" / "architecture.md", src / "architecture.md")

    lessons_dir = src / "lessons"
    (lessons_dir / "_shipped").mkdir(parents=True)
    parts: dict[str, list[str]] = {}
    for path, done in executed.items():
        shutil.copy(path, lessons_dir / "_shipped" / path.name)
        nb = nbformat.read(str(done), as_version=4)
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(note(path)))
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, str(lessons_dir / path.name))
        part = [name for first, name in PARTS if first <= stage(path)][-1]
        parts.setdefault(part, []).append(f"{title(nb)} <lessons/{path.stem}>")

    api = src / "api"
    api.mkdir()
    names = []
    for module, heading in API_PACKAGES:
        stem = module.split(".")[-1]
        (api / f"{stem}.md").write_text(api_page(module, heading))
        names.append(stem)
    (api / "index.md").write_text(
        "# API reference\n\nGenerated from the docstrings, one page per package, in the order of "
        "the layers (each imports only the ones above it). The way in is `buildlm.load`:\n\n"
        + "\n".join(autodoc("autofunction", "buildlm.load"))
        + "\n```{toctree}\n:maxdepth: 1\n\n" + "\n".join(names) + "\n```\n"
    )

    toctrees = []
    for part, entries in parts.items():
        toctrees.append(
            f"```{{toctree}}\n:caption: {part}\n:maxdepth: 1\n\n" + "\n".join(entries) + "\n```\n"
        )
    (src / "index.md").write_text(
        "# buildlm: the course\n\n"
        "Build a large language model from scratch, block by block, then really use it. "
        "The lessons follow the stages of the learning path; each one is a Jupyter notebook in "
        "`tutorials/` where you write the pieces and checks compare them with buildlm's own and "
        "with `transformers`. Here every lesson is shown run, with the worked answers, its outputs "
        "and its figures.\n\n"
        "```{toctree}\n:caption: Start here\n:maxdepth: 1\n\nThe README <readme>\n"
        "Architecture map <architecture>\n```\n\n"
        + "\n".join(toctrees)
        + "\n```{toctree}\n:caption: Reference\n:maxdepth: 1\n\nAPI reference <api/index>\n```\n"
    )


# --- 3. rendering ---------------------------------------------------------------------------


def build(out: Path, work: Path, cache: Path, jobs: int) -> dict[str, float]:
    """Build the site into ``out``; returns timings and size."""
    import importlib.util

    missing = [m for m in ("sphinx", "myst_nb", "furo") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"the site needs {missing}: pip install -e '.[docs]' -c constraints.txt")
    start = time.perf_counter()
    paths = lessons()
    if not paths:
        raise SystemExit(f"no lessons found in {TUTORIALS} (tutorials/NN_name.ipynb)")
    executed = execute_lessons(paths, cache, jobs)
    t_exec = time.perf_counter() - start
    src = work / "src"
    if src.exists():
        shutil.rmtree(src)
    stage_pages(src, executed)
    if out.exists():
        if not (out / ".buildinfo").exists():
            raise SystemExit(f"{out} exists and is not a site built here; choose another --out")
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", str(jobs),
           "-d", str(work / "doctrees"), str(src), str(out)]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run(cmd, check=True, env=env)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"lessons": len(paths), "execute_s": t_exec,
            "total_s": time.perf_counter() - start, "size_mb": size / 1e6}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_execute":  # the child process of execute_lessons
        execute_one(Path(argv[1]), Path(argv[2]), Path(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site",
                        help="where the HTML goes (default build/site)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "site-work",
                        help="staging folder and executed-lesson cache (default build/site-work)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="lessons executed at once (default: the number of CPUs)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    work = args.work.resolve()
    stats = build(args.out.resolve(), work, work / "executed", args.jobs)
    print(f"site: {stats['lessons']} lessons, executed in {stats['execute_s']:.0f} s, "
          f"built in {stats['total_s']:.0f} s, {stats['size_mb']:.1f} MB -> {args.out}/index.html")  # fmt: skip
    print(f"serve it: python -m http.server -d {args.out} 8000  (http://127.0.0.1:8000)")


if __name__ == "__main__":
    main()
