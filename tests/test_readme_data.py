"""The README's "Train on your own data" commands, every line of its block, run as written (with a
few flags appended to keep them short) on small files of each format made here."""

import csv
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from buildlm.data.corpora import corpus_documents
from buildlm.data.shards import load_manifest, load_split

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHORT_TRAIN = (
    "--train.max_steps 2 --train.time_budget_s null --train.eval_interval 1 --train.eval_batches 1 "
    "--train.sample_tokens 4 --train.progress false --train.batch_size 2 --train.context_length 32 "
    "--train.device cpu --train.tensorboard false --train.checkpoint_interval 0"
)
# (the start of a README line, flags appended here to keep it short)
EXTRA = {
    "buildlm prepare --input hf:HuggingFaceFW": "--quiet",  # run without a network: fails in one line
    "buildlm prepare": "--quiet --workers 1",
    "buildlm train --data.prepared_dir": f"{SHORT_TRAIN} --train.name mine",
    "buildlm train --data.inputs": f"{SHORT_TRAIN} --train.name posts --tokenizer.vocab_size 300",
    "buildlm finetune instruct": "--train.max_steps 2 --train.progress false --instruct.max_eval_examples 2 "
    "--instruct.max_new_tokens 2 --instruct.eval_before false --instruct.template 'Q: {instruction} A: ' --train.device cpu --train.tensorboard false",
}


def readme_block() -> list[str]:
    match = re.search(r"## Train on your own data\n\n```bash\n(.*?)```", README, flags=re.S)
    assert match, "the README lost its 'Train on your own data' block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def make_files(home: Path) -> list[str]:
    """Small inputs of every kind the block names; returns the documents of posts.jsonl."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    zstandard = pytest.importorskip("zstandard")
    works = corpus_documents("shakespeare")
    docs = [works[name][:4000] for name in ("sonnets", "macbeth", "hamlet", "othello", "tempest")]
    (home / "my_texts").mkdir()
    (home / "books").mkdir()
    for i, doc in enumerate(docs[:2]):
        (home / "my_texts" / f"{i}.txt").write_text(doc, encoding="utf-8")
        (home / "books" / f"{i}.txt.gz").write_bytes(gzip.compress(doc.encode()))
    (home / "posts.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    bodies = "".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs))
    (home / "posts.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(bodies.encode()))
    pq.write_table(pa.table({"text": docs[:3]}), home / "table.parquet")
    with open(home / "table.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text"], *([d] for d in docs[3:])])
    chat = {"messages": [{"role": "user", "content": "Who wrote Hamlet?\nTell me."},
                         {"role": "assistant", "content": "William Shakespeare wrote it, around 1600.\nIt "
                          "is his longest play.\nIt is set in Denmark, at the castle of Elsinore, and it tells of a "
                          "prince who avenges his father"}]}  # fmt: skip
    (home / "chats.jsonl").write_text(json.dumps(chat) + "\n")
    (home / "messy.jsonl").write_text(json.dumps({"text": docs[0]}) + "\n{oops\n" + json.dumps({"text": docs[1]}) + "\n")
    (home / "my_dataset").mkdir()
    pq.write_table(pa.table({"text": docs[:2]}), home / "my_dataset" / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": docs[2:]}), home / "my_dataset" / "train-00001-of-00002.parquet")
    qa = [{"question": f"What is {a} plus {b}?", "answer": str(a + b)} for a in range(5) for b in range(4)]
    pq.write_table(pa.Table.from_pylist(qa), home / "qa.parquet")
    return docs


@pytest.mark.slow
def test_every_command_of_the_section_runs(tmp_path, monkeypatch, capsys):
    """Each line runs in this process (``buildlm.cli.main``, as the ``buildlm`` script does: one
    interpreter start instead of twelve), the Hub one in a fresh process without a network."""
    from buildlm.cli import main

    home = tmp_path
    docs = make_files(home)
    monkeypatch.chdir(home)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for line in readme_block():
        extra = next((flags for start, flags in EXTRA.items() if line.startswith(start)), None)
        assert extra is not None, f"no test settings for the README line `{line}`; add them to EXTRA"
        argv = shlex.split(line.replace("runs/<date-time>", "runs/mine"), comments=True) + shlex.split(extra)
        assert argv[0] == "buildlm"
        if "hf:HuggingFaceFW" in line:
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HOME": str(home / "hf-home"),
                   "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
            done = subprocess.run([sys.executable, "-m", *argv], env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 1, done.stderr
            assert "cannot reach the Hugging Face Hub" in done.stderr.strip().splitlines()[-1]
            continue
        try:
            main(argv[1:])
        except SystemExit as stop:
            assert not stop.code, f"`{line}` failed:\n{capsys.readouterr().err[-3000:]}"
        capsys.readouterr()

    def shards(name: str) -> tuple[list[int], list[int]]:
        return load_split(home / "data" / name, "train").tolist(), load_split(home / "data" / name, "val").tolist()

    assert load_manifest(home / "data/mine")["splits"]["train"]["documents"] == 2
    assert shards("books") == shards("mine")  # the same two texts, compressed
    assert shards("bodies") == shards("posts") == shards("local") == shards("tables")
    assert load_manifest(home / "data/posts")["splits"]["train"]["documents"] == len(docs)
    messy = load_manifest(home / "data/messy")
    assert messy["skipped_records"] == 1 and messy["splits"]["train"]["documents"] == 2
    from buildlm.tokenizer import Tokenizer

    chats = Tokenizer.load(home / "data/chats/tokenizer.json").decode(np.asarray(load_split(home / "data/chats", "train")).tolist())
    assert chats.startswith("<|im_start|>user\nWho wrote Hamlet?")
    assert (home / "runs/mine").is_dir() and (home / "runs/posts").is_dir()
    assert any(p.name.startswith("instruct-") for p in (home / "runs").iterdir())
