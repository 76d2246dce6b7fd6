"""Reading fine-tuning files: CSV, TSV, JSONL, JSON; every error names the file and line."""

import pytest

from buildlm.data.classify import labelled_texts
from buildlm.data.records import read_records


def test_csv_tsv_and_jsonl_give_the_same_examples(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"Friends, Romans",caesar\nTo be,hamlet\n')
    (tmp_path / "a.tsv").write_text("text\tlabel\nFriends, Romans\tcaesar\nTo be\thamlet\n")
    (tmp_path / "a.jsonl").write_text('{"text": "Friends, Romans", "label": "caesar"}\n{"text": "To be", "label": "hamlet"}\n')
    got = [[(t, y) for t, y, _ in labelled_texts(read_records(tmp_path / f"a.{ext}"))] for ext in ("csv", "tsv", "jsonl")]
    assert got[0] == got[1] == got[2] == [("Friends, Romans", "caesar"), ("To be", "hamlet")]
    assert [w.split(":")[-1] for _, _, w in labelled_texts(read_records(tmp_path / "a.csv"))] == ["2", "3"]


def test_table_and_field_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine,a\ntoo,many,columns\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: 3 columns, the header has 2"):
        read_records(path)
    path.write_text("text,category\nfine,a\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: the example has no 'label' field"):
        labelled_texts(read_records(path))
    path.write_text("text,label\n,a\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: the 'text' field is empty"):
        labelled_texts(read_records(path))
    with pytest.raises(ValueError, match="unknown data format '.txt'"):
        read_records(tmp_path.joinpath("x.txt").write_text("hi") and tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_records(tmp_path / "missing.jsonl")


def test_bundled_plays_are_fixed_and_filterable():
    from buildlm.data.bundled_tasks import load_bundled

    plays = load_bundled("shakespeare-plays")
    assert {k: len(v) for k, v in plays.items()} == {"train": 1891, "val": 236, "test": 236}
    assert {x["label"] for x in plays["train"]} == {"hamlet", "julius_caesar", "macbeth", "romeo_and_juliet"}
    assert all(30 <= len(x["text"]) <= 300 and "[" not in x["text"][:1] for x in plays["train"])
    two = load_bundled("shakespeare-plays:hamlet,macbeth")
    assert two["test"] == [x for x in plays["test"] if x["label"] in ("hamlet", "macbeth")]
    with pytest.raises(ValueError, match="two or more"):
        load_bundled("shakespeare-plays:hamlet")
