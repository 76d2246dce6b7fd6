"""Every input format gives the token shards of the same documents: txt, JSONL, JSON, CSV, TSV,
Parquet, their gzip / zstd versions, and Hugging Face datasets read from local files."""

import csv
import gzip
import json
import os

import numpy as np
import pytest

from buildlm.data.corpora import corpus_documents
from buildlm.data.documents import ReadOptions
from buildlm.data.shards import EOT, load_manifest, load_split, prepare_shards

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")


def documents() -> list[str]:
    """Documents with what trips writers and readers up: quotes, commas, tabs, Windows line ends,
    non-ASCII text, an empty one (no tokens, no end marker) and one longer than a block."""
    works = corpus_documents("shakespeare")
    return [
        works["sonnets"][:6000],
        'He said, "to be, or not to be",\tand left.\nThe end.\n',
        "",
        "Ligne un\r\nLigne deux, été\r\nTrois.\r\n",
        "日本語のテキスト and English words here.\nSecond line.\n",
        works["macbeth"][:2500],
        "one short line without a break",
    ]


def write_all(folder, docs) -> dict[str, str]:
    """The documents in every format; returns {label: input spec}."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = folder / "txt"
    texts.mkdir()
    for i, doc in enumerate(docs):
        (texts / f"{i:02d}.txt").write_bytes(doc.encode("utf-8"))
    jsonl = "".join(json.dumps({"id": i, "text": d}, ensure_ascii=i % 2 == 0) + "\n" for i, d in enumerate(docs))
    (folder / "d.jsonl").write_text(jsonl, encoding="utf-8")
    (folder / "d.json").write_text(json.dumps([{"text": d} for d in docs], indent=2), encoding="utf-8")
    for name, delimiter in (("d.csv", ","), ("d.tsv", "\t")):
        with open(folder / name, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(["id", "text"])
            writer.writerows(enumerate(docs))
    table = pa.table({"id": list(range(len(docs))), "text": docs})
    pq.write_table(table, folder / "d.parquet", row_group_size=2)
    (folder / "d.jsonl.gz").write_bytes(gzip.compress(jsonl.encode()))
    zstd = zstandard.ZstdCompressor()
    (folder / "d.csv.zst").write_bytes(zstd.compress((folder / "d.csv").read_bytes()))
    (folder / "d.parquet.zst").write_bytes(zstd.compress((folder / "d.parquet").read_bytes()))
    gz = folder / "txt-gz"
    gz.mkdir()
    for i, doc in enumerate(docs):
        (gz / f"{i:02d}.txt.gz").write_bytes(gzip.compress(doc.encode("utf-8")))
    hub = folder / "hub"  # a dataset as the Hub stores it: Parquet files in a folder
    hub.mkdir()
    pq.write_table(table.slice(0, 3), hub / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(3), hub / "train-00001-of-00002.parquet")
    labels = {
        "txt folder": texts, "jsonl": "d.jsonl", "json": "d.json", "csv": "d.csv", "tsv": "d.tsv",
        "parquet": "d.parquet", "jsonl.gz": "d.jsonl.gz", "csv.zst": "d.csv.zst",
        "parquet.zst": "d.parquet.zst", "txt.gz folder": gz, "glob": str(folder / "txt" / "*.txt"),
        "hf: parquet folder": f"hf:{hub}",
    }  # fmt: skip
    return {k: str(v) if str(v).startswith(("hf:", "/")) or os.path.isabs(v) else str(folder / v) for k, v in labels.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    return folder, write_all(folder / "in", documents())


def shards(folder) -> tuple[list[int], list[int]]:
    return load_split(folder, "train").tolist(), load_split(folder, "val").tolist()


def test_every_format_gives_the_same_shards(corpus, small_tokenizer):
    folder, specs = corpus
    reference = prepare_shards([specs["txt folder"]], small_tokenizer, folder / "ref", block_bytes=1000,
                               num_workers=1, progress=False)  # fmt: skip
    expected = shards(folder / "ref")
    assert reference["splits"]["train"]["documents"] == 6  # the empty one has no tokens
    for n, (label, spec) in enumerate(specs.items()):
        out = folder / f"out{n}"
        manifest = prepare_shards([spec], small_tokenizer, out, block_bytes=1000, num_workers=1 + n % 2,
                                  progress=False)  # fmt: skip
        assert shards(out) == expected, label
        assert manifest["splits"] == reference["splits"], label


def test_the_ids_are_those_of_encoding_the_joined_documents(corpus, small_tokenizer):
    folder, specs = corpus
    docs = [d for d in documents() if d]
    whole = small_tokenizer.encode(EOT.join(docs) + EOT, allowed_special={EOT})
    for spec in (specs["jsonl.gz"], specs["parquet"], specs["hf: parquet folder"]):
        prepare_shards([spec], small_tokenizer, folder / "joined", val_fraction=0.0, block_bytes=700,
                       num_workers=2, progress=False, force=True)  # fmt: skip
        assert load_split(folder / "joined", "train").tolist() == whole, spec


def test_a_dataset_saved_by_datasets_reads_like_the_others(corpus, small_tokenizer, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder, specs = corpus
    prepare_shards([specs["csv"]], small_tokenizer, tmp_path / "ref", block_bytes=1000, progress=False)
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": documents()})}).save_to_disk(str(saved))
    for spec, streaming in ((f"hf:{saved}", True), (str(saved), False)):  # a saved folder is recognised
        read = ReadOptions(streaming=streaming)
        prepare_shards([spec], small_tokenizer, tmp_path / "hf", block_bytes=1000, progress=False, read=read, force=True)
        assert shards(tmp_path / "hf") == shards(tmp_path / "ref")
    with pytest.raises(ValueError, match=r"no split 'test' \(its splits: \['train'\]\); pass --data.split"):
        prepare_shards([f"hf:{saved}"], small_tokenizer, tmp_path / "x", read=ReadOptions(split="test"), progress=False)


def test_another_field_chats_and_limits(tmp_path, small_tokenizer):
    rows = [{"body": "First body text.\nMore of it.\n"}, {"body": "Second body.\n"}, {"body": "Third one.\n"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"a.jsonl:1: no 'text' field \(its fields: \['body'\]\); pass --data.field NAME"):
        prepare_shards([str(tmp_path / "a.jsonl")], small_tokenizer, tmp_path / "o", progress=False)
    read = ReadOptions(field="body")
    m = prepare_shards([str(tmp_path / "a.jsonl")], small_tokenizer, tmp_path / "o", val_fraction=0, read=read,
                       max_documents=2, progress=False)  # fmt: skip
    assert m["splits"]["train"]["documents"] == 2
    assert load_split(tmp_path / "o", "train").tolist() == small_tokenizer.encode(
        rows[0]["body"] + EOT + rows[1]["body"] + EOT, allowed_special={EOT})
    first = len(small_tokenizer.encode(rows[0]["body"])) + 1
    m = prepare_shards([str(tmp_path / "a.jsonl")], small_tokenizer, tmp_path / "t", val_fraction=0, read=read,
                       max_tokens=first, progress=False)  # fmt: skip
    assert m["splits"]["train"]["tokens"] == first and m["splits"]["train"]["documents"] == 1

    chat = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    prepare_shards([str(tmp_path / "chat.jsonl")], small_tokenizer, tmp_path / "c", val_fraction=0, progress=False)
    rendered = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    assert small_tokenizer.decode(load_split(tmp_path / "c", "train").tolist()) == rendered + EOT


def test_bad_records_name_file_line_and_fix_or_are_skipped(tmp_path, small_tokenizer):
    good = "A good line of text.\nAnd another one.\n"
    lines = [json.dumps({"text": good}), '{"text": "broken', json.dumps({"title": "x"}), json.dumps({"text": 5}),
             "", json.dumps({"text": good})]  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: malformed JSON .*; fix the line.*--data.on_error skip"):
        prepare_shards([str(path)], small_tokenizer, tmp_path / "o", progress=False)
    notes = []
    m = prepare_shards([str(path)], small_tokenizer, tmp_path / "o", val_fraction=0, progress=False,
                       read=ReadOptions(on_error="skip"), log=notes.append)  # fmt: skip
    assert m["skipped_records"] == 3 and m["splits"]["train"]["documents"] == 2
    assert len(notes) == 1 and notes[0].startswith(f"skipped 3 bad record(s); the first: {path}:2: malformed JSON")
    assert load_split(tmp_path / "o", "train").tolist() == small_tokenizer.encode(good + EOT + good + EOT, allowed_special={EOT})

    table = tmp_path / "t.csv"
    table.write_text("id,body\n1,hello\n")
    with pytest.raises(ValueError, match=r"t.csv:1: no 'text' column \(its columns: \['id', 'body'\]\); pass --data.field"):
        prepare_shards([str(table)], small_tokenizer, tmp_path / "o2", progress=False)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t.parquet: no 'text' column \(its columns: \['body'\]\)"):
        prepare_shards([str(tmp_path / "t.parquet")], small_tokenizer, tmp_path / "o2", progress=False)
    pq.write_table(pa.table({"text": ["fine text here", None]}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match=r"n.parquet:row 2: the 'text' field is empty \(null\)"):
        prepare_shards([str(tmp_path / "n.parquet")], small_tokenizer, tmp_path / "o2", progress=False)
    (tmp_path / "l.json").write_text('[{"text": "a"},\n {"text": "b"}\n {"text": "c"}]')
    with pytest.raises(ValueError, match=r"l.json:3: malformed JSON \(expected ',' or ']'"):
        prepare_shards([str(tmp_path / "l.json")], small_tokenizer, tmp_path / "o2", progress=False)
    with pytest.raises(FileNotFoundError, match="matches no files"):
        prepare_shards([str(tmp_path / "*.nothing")], small_tokenizer, tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()


def test_a_json_list_is_parsed_in_pieces(tmp_path, monkeypatch):
    from buildlm.data import read_json

    items = [{"text": "x" * n, "n": [1.5, {"k": "v, ]"}]} for n in range(40)]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(items, indent=1))
    monkeypatch.setattr(read_json, "_CHUNK", 7)  # items straddle every refill of the buffer
    got = list(read_json.iter_json_list(path))
    assert [item for _, item in got] == items
    starts = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if line == " {"]
    assert [line for line, _ in got] == starts  # each item's line, for error messages
    (tmp_path / "nums.json").write_text("[1234567, 2.5e10, true, null]")
    assert [v for _, v in read_json.iter_json_list(tmp_path / "nums.json")] == [1234567, 2.5e10, True, None]
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 1, "data": items[:3]}))
    assert [v for _, v in read_json.iter_json_list(tmp_path / "wrapped.json")] == items[:3]


def test_manifest_counts_the_records_of_each_input(corpus, small_tokenizer, tmp_path):
    _, specs = corpus
    m = prepare_shards([specs["jsonl"], "the-verdict"], small_tokenizer, tmp_path / "o", progress=False)
    assert m["sources"][0]["name"] == specs["jsonl"] and m["sources"][0]["documents"] == len(documents())
    assert m["sources"][1]["name"] == "the-verdict/the-verdict"
    assert load_manifest(tmp_path / "o")["splits"]["train"]["documents"] == 7
    assert np.asarray(load_split(tmp_path / "o", "train")).size == m["splits"]["train"]["tokens"]


def run_cli(args, tmp_path, **env):
    import subprocess
    import sys

    environ = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **env}
    return subprocess.run([sys.executable, "-m", "buildlm", *args], capture_output=True, text=True,
                          env=environ, timeout=120)  # fmt: skip


def test_the_cli_names_the_bad_line_and_exits_non_zero(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine words here"}\n{"body": "no text"}\n')
    done = run_cli(["prepare", "--input", str(path), "--out", str(tmp_path / "o"), "--quiet"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"buildlm prepare: error: {path}:2: no 'text' field (its fields: ['body']); pass --field NAME "
        "to read another field (or skip bad records with --on-error skip)"
    )
    done = run_cli(["prepare", "--input", str(path), "--out", str(tmp_path / "o"), "--quiet", "--on-error", "skip",
                    "--val-fraction", "0"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"skipped 1 bad record(s); the first: {path}:2: no 'text' field" in done.stdout
    assert "1 document(s)" in done.stdout


def test_a_hub_name_without_network_fails_in_one_line(tmp_path):
    pytest.importorskip("datasets")
    done = run_cli(["prepare", "--input", "hf:nobody-here/no-such-dataset", "--out", str(tmp_path / "o"), "--quiet"],
                   tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("buildlm prepare: error: hf:nobody-here/no-such-dataset: cannot reach the Hugging Face Hub")
    assert last.endswith("or download the dataset where there is one and pass its local folder as hf:/path/to/folder")
