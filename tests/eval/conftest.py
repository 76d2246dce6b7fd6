"""Small models for the evaluation tests, built offline.

- ``hf_ids_model``: a random GPT-2 saved by transformers (``save_pretrained``), vocabulary 100,
  no tokenizer: for tests on token ids.
- ``hf_text_model``: the same kind of model with a vocabulary of 300 and a BPE tokenizer (trained
  on the bundled "The Verdict") written beside it as ``tokenizer.json``: for tests on text.
- ``planted``: a tiny buildlm checkpoint trained until it has memorised the right ending of each
  of ``PLANTED_ITEMS``, so a correct multiple-choice scorer gives it 100 %.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from buildlm.eval.choice_items import ChoiceItem

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

PLANTED_ITEMS = [
    ChoiceItem("The cat sat on the", ["mat.", "moon.", "river bank.", "sword."], 0),
    ChoiceItem("I had always thought", ["of dogs.", "him a cheap genius.", "blue."], 1),
    ChoiceItem("Mrs. Gisburn said", ["nothing.", "yes.", "that the sky fell.", "no."], 2),
    ChoiceItem("He laughed and", ["cried.", "ran.", "slept.", "opened the window."], 3),
    ChoiceItem("Shall I compare thee", ["to a summer's day?", "to a fish?"], 0),
    ChoiceItem("The picture was", ["gone.", "never finished.", "red."], 1),
]


def _gpt2(vocab_size: int, seed: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move every weight off its initial value, and sharpen the outputs
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


@pytest.fixture(scope="session")
def tokenizer():
    from buildlm.data.corpora import load_corpus
    from buildlm.tokenizer import Tokenizer

    return Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)


@pytest.fixture(scope="session")
def hf_ids_model(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("hf_ids")
    model = _gpt2(100, seed=1)
    model.save_pretrained(folder)
    return SimpleNamespace(path=folder, hf=model)


@pytest.fixture(scope="session")
def hf_text_model(tmp_path_factory, tokenizer) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("hf_text")
    model = _gpt2(tokenizer.vocab_size, seed=2)
    model.save_pretrained(folder)
    tokenizer.save_hf(folder / "tokenizer.json")
    return SimpleNamespace(path=folder, hf=model, tokenizer=tokenizer)


def planted_texts(items: list[ChoiceItem]) -> list[str]:
    return [item.context + item.continuation(item.endings[item.label]) for item in items]


@pytest.fixture(scope="session")
def planted(tmp_path_factory, tokenizer) -> SimpleNamespace:
    """A checkpoint that has memorised each planted item's right ending."""
    from buildlm.model import GPT, ModelConfig
    from buildlm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tokenizer.vocab_size, context_length=64, d_model=48, n_layers=2
    )
    model = GPT(config)
    eot = tokenizer.eot_token
    rows = [[eot] + tokenizer.encode(t) for t in planted_texts(PLANTED_ITEMS)]
    width = max(map(len, rows))
    idx = torch.tensor([r + [eot] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    run = tmp_path_factory.mktemp("planted")
    ckpt = save_checkpoint(run, 60, model, {"model": config.to_dict()}, tokenizer=tokenizer)
    return SimpleNamespace(path=ckpt, items=PLANTED_ITEMS, final_loss=loss.item())
