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
