"""Documents from a Hugging Face dataset: ``hf:NAME`` (``hf:HuggingFaceFW/fineweb-edu``).

Read through the ``datasets`` library (imported only here, and only when asked for):
``datasets.load_dataset(NAME, subset, split=split, streaming=True)``. Streaming reads rows as
they arrive, so neither the disk nor the memory has to hold the dataset; ``--data.streaming
false`` downloads it first (into the ``datasets`` cache) and memory-maps it.

``NAME`` may also be a local folder or file, and then no network is needed:

- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``state.json`` or
  ``dataset_dict.json`` inside): opened with ``datasets.load_from_disk``;
- a folder of Parquet, Arrow, JSONL or CSV files, or one such file: ``load_dataset`` on it,
  the same code path as a dataset on the Hub.

Without a network a Hub name fails at once with one line that says so and how to go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from buildlm.data.compressed import split_suffix
from buildlm.data.documents import BadRecords, Document, ReadOptions, record_text

PREFIX = "hf:"
_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def is_hf_spec(item: Any) -> bool:
    return isinstance(item, str) and item.startswith(PREFIX)


def is_saved_dataset(folder: Path) -> bool:
    """True for a folder written by ``save_to_disk``."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def open_hf(spec: str, options: ReadOptions) -> Any:
    """The rows of ``hf:NAME`` (a ``datasets`` Dataset or IterableDataset) for ``options.split``."""
    name = spec[len(PREFIX):]
    if not name:
        raise ValueError("empty dataset name after 'hf:'; write hf:OWNER/NAME or hf:/path/to/folder")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"reading {spec!r} needs the datasets package: pip install datasets") from None
    path = Path(name)
    try:
        if path.is_dir() and is_saved_dataset(path):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if options.split not in ds:
                    raise ValueError(
                        f"{spec} has no split {options.split!r} (its splits: {sorted(ds)}); pass "
                        f"{options.flag('split')} NAME"
                    )
                ds = ds[options.split]
            return ds.to_iterable_dataset() if options.streaming else ds
        if path.is_file():
            suffix = split_suffix(path)[0]
            if suffix not in _BUILDERS:
                raise ValueError(f"{spec}: cannot read {suffix or 'this'} files as a dataset; give Parquet, Arrow, JSONL or CSV")
            return datasets.load_dataset(_BUILDERS[suffix], data_files=str(path), split=options.split,
                                         streaming=options.streaming)  # fmt: skip
        return datasets.load_dataset(name, options.subset, split=options.split, streaming=options.streaming)
    except ConnectionError as err:
        raise ValueError(
            f"{spec}: cannot reach the Hugging Face Hub ({_first_line(err)}); connect to the network, "
            f"or download the dataset where there is one and pass its local folder as hf:/path/to/folder"
        ) from None
    except (ValueError, KeyError, FileNotFoundError) as err:
        if isinstance(err, ValueError) and str(err).startswith(spec):
            raise
        raise ValueError(f"{spec}: {_first_line(err)}") from None


def read_hf(spec: str, options: ReadOptions, bad: BadRecords) -> Iterator[Document]:
    """One document per row of the dataset, in its order."""
    ds = open_hf(spec, options)
    label = f"{spec}[{options.split}]"
    for n, row in enumerate(ds, start=1):
        where = f"{label}:row {n}"
        text = record_text(row, where, options, bad)
        if text is not None:
            yield Document(text, where)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
