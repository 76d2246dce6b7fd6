"""Print pins for buildlm and its ``dev`` extra, as installed in this environment: constraints.txt.

Walks the installed metadata from ``buildlm[dev]`` down (every requirement whose environment
marker holds here, extras included) and prints ``name==version`` for each package reached, so
the file holds exactly what the package needs, not whatever else the environment has. Local
version labels are dropped (``torch 2.13.0+cpu`` is pinned as ``torch==2.13.0``), so the same
file serves the CPU and the CUDA builds of torch. torch itself is left out: the README's first
install step chooses it (the CPU wheel, or the CUDA build a GPU needs, any torch>=2.4), and a
pin here would make pip replace a GPU user's newer build.

    python scripts/freeze_constraints.py > constraints.txt      (scripts/refresh-constraints.sh)
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare environment: pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """{canonical name: installed version} of ``root[extras]`` and everything it requires."""
    found: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    done: set[tuple[str, str]] = set()
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is required but not installed; install buildlm[dev] first") from None
        key = _key(dist.metadata["Name"])
        found[key] = dist.version
        for extra in ("", *wanted):
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": extra}):
                    if req.marker is None and extra:  # a base requirement, seen with extra ""
                        continue
                    todo.append((req.name, tuple(sorted(req.extras))))
    return found


def main() -> None:
    pins = closure("buildlm", ("dev",))
    pins.pop("buildlm", None)
    pins.pop("torch", None)  # chosen by the install's first step (CPU or CUDA build)
    print("# Versions the test suite passed with: pip install -e \".[dev]\" -c constraints.txt")
    print(f"# Resolved on Python {platform.python_version()}, {sys.platform} {platform.machine()}.")
    print("# Regenerate on purpose with scripts/refresh-constraints.sh; do not edit by hand.")
    for key in sorted(pins):
        print(f"{key}=={pins[key].split('+')[0]}")


if __name__ == "__main__":
    main()
