"""`buildlm train --data.inputs '[folder]'` trains its tokenizer on the files' text, not on
their names, and says so when the vocabulary falls short of the size asked."""

import pytest

from buildlm.data.corpora import corpus_documents
from buildlm.train.config import TokenizerConfig
from buildlm.train.run import make_tokenizer


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    """A real folder of text files (two plays, about 20 KB each), and one text file."""
    folder = tmp_path_factory.mktemp("my_folder")
    docs = corpus_documents("shakespeare")
    for name in ("hamlet", "macbeth"):
        (folder / f"corpus_{name}.txt").write_text(docs[name][:20_000], encoding="utf-8")
    return folder


def _bytes_per_token(tokenizer, text: str) -> float:
    return len(text.encode("utf-8")) / len(tokenizer.encode_ordinary(text))


@pytest.mark.parametrize("which", ["folder", "file"])
def test_the_tokenizer_learns_from_the_contents(plays, which):
    inputs = [str(plays)] if which == "folder" else [str(plays / "corpus_hamlet.txt")]
    notes = []
    tokenizer = make_tokenizer(TokenizerConfig(vocab_size=512), inputs, log=notes.append)
    assert tokenizer.vocab_size == 512
    text = (plays / "corpus_macbeth.txt").read_text(encoding="utf-8")
    assert _bytes_per_token(tokenizer, text) > 1.6  # merges of English words (file names: ~1.0)
    learned = {tokenizer.decode([256 + i]) for i in range(len(tokenizer.merges))}
    assert {" the", " and", " you"} <= learned
    assert not any("stopped at" in note for note in notes)


def test_a_vocabulary_the_text_cannot_fill_is_reported(tmp_path):
    (tmp_path / "tiny.txt").write_text("to be or not to be\n", encoding="utf-8")
    notes = []
    tokenizer = make_tokenizer(TokenizerConfig(vocab_size=512), [str(tmp_path / "tiny.txt")], log=notes.append)
    assert tokenizer.vocab_size < 300
    assert any(f"stopped at {tokenizer.vocab_size} tokens of the 512 asked" in note for note in notes)


def test_a_half_written_cache_of_an_older_version_is_replaced(tmp_path):
    """An older buildlm, killed while filling the data cache, left shards but no manifest and
    no list of its files: the folder is buildlm's by its place, so it is prepared again."""
    from buildlm.atomic import OUTPUTS
    from buildlm.train.config import DataConfig
    from buildlm.train.run import data_cache_key, prepare_data

    data, tok = DataConfig(inputs=["the-verdict"], num_workers=1), TokenizerConfig(vocab_size=300)
    folder = tmp_path / "data-cache" / data_cache_key(data, tok)
    folder.mkdir(parents=True)
    (folder / "train.bin").write_bytes(b"\0" * 6)
    assert prepare_data(data, tok, tmp_path, log=lambda msg: None) == folder
    assert (folder / "manifest.json").is_file() and (folder / OUTPUTS).is_file()
    assert (folder / "train.bin").stat().st_size > 1000


def test_records_train_the_tokenizer_and_their_settings_key_the_cache(tmp_path, plays):
    """`--data.inputs '[posts.jsonl]' --data.field body`: the BPE learns from the records' text,
    and the reading settings are part of the cache key (another field is other data)."""
    import json

    from buildlm.data.shards import load_manifest
    from buildlm.train.config import DataConfig
    from buildlm.train.run import data_cache_key, prepare_data

    path = tmp_path / "posts.jsonl"
    texts = [(plays / f"corpus_{name}.txt").read_text(encoding="utf-8") for name in ("hamlet", "macbeth")]
    path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    data, tok = DataConfig(inputs=[str(path)], field="body", num_workers=1), TokenizerConfig(vocab_size=400)
    assert data_cache_key(data, tok) != data_cache_key(DataConfig(inputs=[str(path)], num_workers=1), tok)
    folder = prepare_data(data, tok, tmp_path / "runs", log=lambda msg: None)
    manifest = load_manifest(folder)
    assert manifest["splits"]["train"]["documents"] == 2 and manifest["sources"][0]["documents"] == 2
    tokenizer = make_tokenizer(tok, [str(path)], log=lambda msg: None, data=data)
    assert _bytes_per_token(tokenizer, texts[1]) > 1.6
    learned = [tokenizer.decode([256 + i]) for i in range(len(tokenizer.merges))]
    assert not any("\\" in t or '"' in t for t in learned)  # from the bodies, not the JSON lines
    with pytest.raises(ValueError, match=r"posts.jsonl:1: no 'text' field .*--data.field NAME"):
        prepare_data(DataConfig(inputs=[str(path)], num_workers=1), TokenizerConfig(name="gpt2"), tmp_path / "r2")
