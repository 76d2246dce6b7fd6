"""The pretrained model shipped inside the package: the very file that was trained, and trained.

``buildlm.load("shakespeare-small")`` must open the weights whose sha256 the folder's README
recorded when the model was trained, and the model must have learned something: its loss on
the held-out 10% of the bundled Shakespeare (cut exactly as ``buildlm train`` cuts it) is well
below the unigram baseline (token frequencies, no context) and below the bigram baseline
(counts of token pairs over the whole training split), the figures its README states.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import torch

import buildlm
from buildlm.data.shards import load_split, prepare_shards
from buildlm.eval.perplexity import perplexity_of_ids
from buildlm.loader import PRETRAINED, pretrained_names
from buildlm.train.baselines import bigram_loss, unigram_loss

NAME = "shakespeare-small"
FOLDER = PRETRAINED / NAME


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_shipped_files_are_the_recorded_ones():
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    for file in ("model.safetensors", "tokenizer.json", "config.json"):
        recorded = re.search(rf"`{re.escape(file)}`\s*sha256\s*`([0-9a-f]{{64}})`", readme)
        assert recorded, f"README.md records no sha256 for {file}"
        assert _sha256(FOLDER / file) == recorded[1], f"{file} differs from the recorded one"
    assert NAME in pretrained_names()


def test_load_by_name_gives_a_model_with_the_recorded_validation_loss(tmp_path):
    lm = buildlm.load(NAME)
    assert lm.path == FOLDER
    assert not lm.model.training
    # The split `buildlm train` made: the same tokenizer, the same cut of every play.
    manifest = prepare_shards(["shakespeare"], lm.tokenizer, tmp_path, val_fraction=0.1,
                              num_workers=1, progress=False)  # fmt: skip
    assert manifest["splits"]["val"]["tokens"] > 100_000
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    val = np.asarray(val[:16_385], dtype=np.int64)  # 16,384 predictions: a quick, stable estimate
    vocab = lm.model.config.vocab_size
    unigram, bigram = unigram_loss(train, val, vocab), bigram_loss(train, val, vocab)
    with torch.no_grad():
        ours = perplexity_of_ids(lm.model, torch.from_numpy(val), batch_size=16).loss
    assert math.isfinite(ours)
    assert bigram < unigram < math.log(vocab)
    assert ours < unigram - 1.0, f"val loss {ours:.3f}: not clearly below unigram {unigram:.3f}"
    assert ours < bigram, f"val loss {ours:.3f}: not below the bigram baseline {bigram:.3f}"
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    recorded = float(re.search(r"validation loss \*\*(\d+\.\d+)\*\*", readme)[1])
    assert abs(ours - recorded) < 0.15, f"val loss {ours:.3f}, README says {recorded}"


def test_it_writes_verse_like_text_and_loads_from_its_folder_too():
    lm = buildlm.load(str(FOLDER))
    text = lm.generate("To be, or not", max_new_tokens=40, temperature=0)
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 10, text
    common = {"the", "and", "i", "to", "of", "my", "you", "a", "that", "is", "in", "not", "me"}
    assert any(w.lower() in common for w in words), text
    pieces = list(lm.stream("To be, or not", max_new_tokens=40, temperature=0))
    assert "".join(pieces) == text  # streaming gives the same greedy text, in pieces
    reply = lm.chat([{"role": "user", "content": "Speak."}], max_new_tokens=8, temperature=0)
    assert isinstance(reply, str)


def test_an_unknown_name_is_one_clear_error():
    with pytest.raises(FileNotFoundError, match="shipped: .*shakespeare-small"):
        buildlm.load("shakespeare-huge")


def test_chat_drops_old_turns_of_a_long_conversation_and_keeps_typed_specials_as_text():
    lm = buildlm.load("shakespeare-small")
    turn = "Speak, and tell me of the king and of his sons and daughters in the court. " * 2
    messages = []
    for _ in range(6):  # six long turns: far past the 128-token context
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": turn}]
    messages.append({"role": "user", "content": "Speak."})
    reply = lm.chat(messages, max_new_tokens=200, temperature=0)  # no context error
    assert isinstance(reply, str)
    # The same greedy reply as for the newest turns alone: the old ones were dropped whole.
    assert reply == lm.chat(messages[-3:], max_new_tokens=200, temperature=0)
    # A typed special token is ordinary text, not the end of the document.
    from buildlm.infer.chat_format import chat_format_for

    fmt = chat_format_for(lm.tokenizer)
    typed = [{"role": "user", "content": "<|endoftext|>"}]
    ids = fmt.encode(lm.tokenizer, typed, add_generation_prompt=True)
    assert lm.tokenizer.eot_token not in ids


def test_load_takes_the_commands_device_and_dtype_names():
    from buildlm.device import resolve_device

    lm = buildlm.load("shakespeare-small", device="auto", dtype="bf16")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert next(lm.model.parameters()).device.type == resolve_device("auto").type
    assert isinstance(lm.generate("ROMEO:", max_new_tokens=3, temperature=0), str)
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        buildlm.load("shakespeare-small", dtype="float8")
    with pytest.raises(ValueError, match="device 'tpu' is not a device"):
        buildlm.load("shakespeare-small", device="tpu")
