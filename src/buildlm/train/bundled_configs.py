"""The YAML settings files that ship inside the package, found by name.

``buildlm train --config verdict-tiny`` and ``buildlm finetune classify --config classify`` work
from any folder, also after ``pip install buildlm``: the files live in ``buildlm/configs/``
(``*.yaml`` for pretraining, ``finetune/*.yaml`` for fine-tuning) and are installed with the
package. A ``--config`` value is looked up in this order:

1. a file that exists (a path of the user's own, relative to the current folder or absolute);
2. a bundled name: ``verdict-tiny``, ``verdict-tiny.yaml``, ``finetune/classify``, and, for
   ``buildlm finetune``, the short ``classify``; the repository spelling ``configs/verdict-tiny.yaml``
   also finds the bundled file when no such file exists here;
3. otherwise one error line that lists the bundled names.

This module only rewrites the command line; reading the YAML stays with jsonargparse.
"""

from __future__ import annotations

from pathlib import Path

from buildlm.errors import undecodable_file

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# The run `buildlm train` makes when given no arguments (`buildlm.train.cli`).
NO_ARGUMENT_CONFIG = "shakespeare-small"


def bundled_names(subdir: str = "") -> list[str]:
    """The bundled config names in ``subdir`` (``""``: pretraining, ``"finetune"``), without ``.yaml``."""
    return sorted(p.stem for p in (CONFIG_DIR / subdir).glob("*.yaml"))


def resolve_config(value: str, subdir: str = "") -> str:
    """The file ``--config value`` means: ``value`` itself if it exists, else a bundled file."""
    if "\n" in value or value.lstrip().startswith("{"):
        return value  # settings given inline (jsonargparse reads them)
    if Path(value).expanduser().is_file():
        try:  # jsonargparse's own decode error names no file
            Path(value).expanduser().read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise undecodable_file(value, err) from None
        return value  # a file of the user's
    name = value.removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    candidates = [CONFIG_DIR / f"{name}.yaml"]
    if subdir:
        candidates.append(CONFIG_DIR / subdir / f"{name}.yaml")
    for path in candidates:
        # only files inside the bundled folder: a name is not a way to walk the disk
        if path.is_file() and CONFIG_DIR in path.resolve().parents:
            return str(path)
    names = ", ".join(bundled_names(subdir))
    raise FileNotFoundError(
        f"--config {value!r} is neither a file nor a bundled config; give a YAML path "
        f"or one of: {names}"
    )


def resolve_config_args(argv: list[str], subdir: str = "") -> list[str]:
    """``argv`` with every ``--config X`` / ``--config=X`` value turned into a file path."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv):
            out += [arg, resolve_config(argv[i + 1], subdir)]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + resolve_config(arg.split("=", 1)[1], subdir)
        out.append(arg)
        i += 1
    return out
