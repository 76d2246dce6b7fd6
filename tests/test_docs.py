"""docs/architecture.md stays in step with the code: the paths it names exist, and it names every
subpackage and every command."""

import re
from pathlib import Path

from buildlm.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "src" / "buildlm"


def _mentioned_paths() -> set[str]:
    return set(re.findall(r"src/buildlm/[\w./-]*[\w/]", DOC.read_text(encoding="utf-8")))


def test_every_path_in_the_map_exists():
    paths = _mentioned_paths()
    assert len(paths) > 50, "the map names the files of every stage"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    for p in paths:
        if p.endswith("/"):
            assert (ROOT / p).is_dir(), f"{p} is named as a folder but is not one"


def test_every_subpackage_and_module_folder_is_on_the_map():
    paths = _mentioned_paths()
    packages = sorted(d.name for d in PACKAGE.iterdir() if (d / "__init__.py").is_file())
    assert "model" in packages and "viz" in packages
    unmentioned = [name for name in packages if f"src/buildlm/{name}/" not in paths]
    assert not unmentioned, f"docs/architecture.md does not mention: {unmentioned}"


def test_every_command_is_on_the_map():
    text = DOC.read_text(encoding="utf-8")
    for name, (module, _) in COMMANDS.items():
        assert f"`buildlm {name}" in text, f"docs/architecture.md does not list `buildlm {name}`"
        path = "src/" + module.replace(".", "/") + ".py"
        assert path in text, f"docs/architecture.md does not name {path} (`buildlm {name}`)"


def test_every_package_init_lists_its_files():
    """Each package's ``__init__`` docstring names every file of the package and its one job."""
    import ast

    missing = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        for path in sorted(init.parent.glob("*.py")):
            listed = path.name in doc or f"`{path.stem}`" in doc  # ``name.py`` or `name`
            if path.name != "__init__.py" and not listed:
                missing.append(f"{init.relative_to(ROOT)} does not list {path.name}")
    assert not missing, "\n".join(missing)


DOTTED = re.compile(r"\bbuildlm(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
FROM_IMPORT = re.compile(r"from (buildlm(?:\.[A-Za-z_][A-Za-z0-9_]*)*) import \(?([A-Za-z0-9_, \n]+)\)?")


def _documented_names() -> set[str]:
    """Every dotted ``buildlm.x.y`` and every ``from buildlm.x import a, b`` in the README and docs."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    names: set[str] = set()
    for path in texts:
        text = path.read_text(encoding="utf-8")
        names.update(m.group(0) for m in DOTTED.finditer(text))
        for m in FROM_IMPORT.finditer(text):
            for name in m.group(2).replace("\n", " ").split(","):
                if name.strip():
                    names.add(f"{m.group(1)}.{name.strip().split()[0]}")
    return names


def _resolve(dotted: str) -> object:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_name_the_docs_mention_imports():
    names = _documented_names()
    assert {"buildlm.load", "buildlm.infer.Engine"} <= names  # the scan itself finds the docs' names
    broken = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as err:
            broken.append(f"{name}: {err}")
    assert not broken, "names in README.md or docs/ that do not import:\n" + "\n".join(broken)


def test_the_drift_check_names_test_files_that_exist():
    """scripts/drift-check.sh runs a list of test files; a moved test must not drop out of it."""
    script = (ROOT / "scripts" / "drift-check.sh").read_text(encoding="utf-8")
    named = re.findall(r"\btests/[\w/]+\.py\b", script)
    assert len(named) >= 5, named
    missing = [path for path in named if not (ROOT / path).is_file()]
    assert not missing, f"scripts/drift-check.sh names test files that do not exist: {missing}"
