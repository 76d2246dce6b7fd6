"""Bundled corpora, usable offline: the texts every stage of the learning path trains on.

The package ships them gzip-compressed in ``buildlm/data/assets``:

- ``shakespeare``: 42 works of Shakespeare (Project Gutenberg, public domain), about 5 MB;
- ``the-verdict``: Edith Wharton's short story "The Verdict" (1908), 20,479 bytes, the classic
  first corpus of the from-scratch books.

A name given where a file is expected (``buildlm prepare --input shakespeare``) resolves here.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

_ASSETS = resources.files("buildlm.data") / "assets"


def list_corpora() -> list[str]:
    """Names of the bundled corpora."""
    return ["shakespeare", "the-verdict"]


def corpus_documents(name: str) -> dict[str, str]:
    """The corpus as ``{document name: text}`` (one entry per work for Shakespeare)."""
    if name == "shakespeare":
        folder = _ASSETS / "shakespeare"
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".txt.gz")), key=lambda f: f.name)
        return {f.name.removesuffix(".txt.gz"): _read_gz(f) for f in files}
    if name == "the-verdict":
        return {"the-verdict": _read_gz(_ASSETS / "the-verdict.txt.gz")}
    raise ValueError(f"unknown corpus {name!r}; bundled corpora are {list_corpora()} (or pass a file path)")


def load_corpus(name: str) -> str:
    """The whole corpus as one string (Shakespeare's works joined in file-name order)."""
    return "".join(corpus_documents(name).values())


def is_corpus_name(value: str | Path) -> bool:
    """True when ``value`` names a bundled corpus rather than a file."""
    return isinstance(value, str) and value in list_corpora() and not Path(value).exists()


def _read_gz(path) -> str:
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8", newline="") as f:
        return f.read()
