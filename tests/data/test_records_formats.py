"""Fine-tuning examples read the same from JSONL, JSON, CSV, TSV and Parquet, compressed or not,
and datasets with other field names are read through a mapping (``--fields``)."""

import csv
import gzip
import json

import pytest

from buildlm.data.records import read_records

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")

ROWS = [
    {"question": "What is 2 + 3?", "answer": "5"},
    {"question": 'Say "hi", politely.', "answer": "Hello,\nfriend."},
    {"question": "Écris un mot", "answer": "été"},
]


def write_formats(folder) -> list:
    jsonl = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    (folder / "a.jsonl").write_bytes(jsonl)
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (folder / "a.json").write_text(json.dumps(ROWS))
    with open(folder / "a.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["question", "answer"])
        writer.writeheader()
        writer.writerows(ROWS)
    (folder / "a.csv.zst").write_bytes(zstandard.ZstdCompressor().compress((folder / "a.csv").read_bytes()))
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, folder / "a.parquet")
    (folder / "a.parquet.gz").write_bytes(gzip.compress((folder / "a.parquet").read_bytes()))
    names = ["a.jsonl", "a.jsonl.gz", "a.json", "a.csv", "a.csv.zst", "a.parquet", "a.parquet.gz"]
    return [folder / n for n in names]


def test_every_format_reads_the_same_examples(tmp_path):
    for path in write_formats(tmp_path):
        records = read_records(path)
        assert [r.data for r in records] == ROWS, path.name
        assert records[0].where.startswith(f"{path}:")
    assert read_records(tmp_path / "a.parquet")[2].where == f"{tmp_path / 'a.parquet'}:row 3"
    assert read_records(tmp_path / "a.jsonl.gz")[1].where == f"{tmp_path / 'a.jsonl.gz'}:2"


def test_field_names_are_mapped_for_the_task(tmp_path):
    from buildlm.data.instruct import render

    path = write_formats(tmp_path)[5]
    records = read_records(path)
    with pytest.raises(ValueError, match=r"a.parquet:row 1: .*'instruction'.*"
                                         r"pass --fields '\{\"instruction\": \"NAME\"\}'"):  # fmt: skip
        render(records[0], "alpaca")
    mapped = read_records(path, {"instruction": "question", "output": "answer"})
    rendered = render(mapped[1], "alpaca")
    assert rendered.answer == "Hello,\nfriend." and 'Say "hi", politely.' in rendered.prompt[0][0]


def test_load_splits_passes_the_mapping(tmp_path):
    from buildlm.finetune.run import FinetuneData, load_splits

    path = write_formats(tmp_path)[1]
    spec = FinetuneData(data=str(path), val_fraction=0.0, test_fraction=0.0, fields={"output": "answer"})
    splits = load_splits(spec, "instruct")
    assert sorted(r.data["output"] for r in splits["train"]) == sorted(r["answer"] for r in ROWS)


def test_a_local_hf_dataset_reads_like_the_file(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "qa"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "train-00000-of-00001.parquet")
    records = read_records(f"hf:{folder}", {"instruction": "question"})
    assert [r.data["question"] for r in records] == [r["question"] for r in ROWS]
    assert records[0].data["instruction"] == ROWS[0]["question"]
    assert records[2].where == f"hf:{folder}[train]:row 3"
