"""Checks for stage 7 (pretrained weights): your converter against transformers and buildlm.

Each check calls your function first (so an unfinished stub says ``NotImplementedError`` before
anything else), then compares what it built with a reference that computes the same thing:
``transformers``' own GPT-2 and ``buildlm.hub.load_hf``. A failure raises ``AssertionError``
with what was expected, what came out, and a hint.
"""

from __future__ import annotations

import torch
from torch import nn

from buildlm.infer import generate


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_split_qkv(split_qkv, hf_model: nn.Module) -> None:
    """``split_qkv(W, b)`` of block 0's ``c_attn`` gives three nn.Linear-shaped (W, b) pairs."""
    c_attn = hf_model.transformer.h[0].attn.c_attn
    parts = split_qkv(c_attn.weight.detach(), c_attn.bias.detach())
    d = c_attn.weight.shape[0]
    if not isinstance(parts, (tuple, list)) or len(parts) != 3:
        raise _fail("what split_qkv returns", "3 pairs (weight, bias): query, key, value",
                    type(parts).__name__, "return ((Wq, bq), (Wk, bk), (Wv, bv))")  # fmt: skip
    x = torch.randn(2, 5, d, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = c_attn(x)  # (2, 5, 3d): q, k, v side by side
    for i, (name, (w, b)) in enumerate(zip("qkv", parts, strict=True)):
        if _shape(w) != (d, d) or _shape(b) != (d,):
            raise _fail(f"shapes of the {name} weight and bias", ((d, d), (d,)), (_shape(w), _shape(b)),
                        "nn.Linear keeps its weight as (out, in): transpose the Conv1D slice")  # fmt: skip
        mine = torch.nn.functional.linear(x, w, b)
        want = fused[..., i * d : (i + 1) * d]
        if not torch.allclose(mine, want, atol=1e-5):
            raise _fail(f"F.linear(x, W{name}, b{name}) against c_attn(x)[..., {i * d}:{(i + 1) * d}]",
                        want[0, 0, :4].tolist(), mine[0, 0, :4].tolist(),
                        "c_attn's columns are [q | k | v]: slice the *columns* of the (in, 3d) "
                        "weight, then transpose each (in, d) slice")  # fmt: skip
    print("split_qkv: query, key and value computed exactly as c_attn does. Correct!")


def check_convert_gpt2(convert_gpt2, model_cls: type, cfg: dict, hf_model: nn.Module,
                       ids: torch.Tensor) -> nn.Module:  # fmt: skip
    """Your converted state dict loads strictly into your GPTModel and gives transformers' logits."""
    state = convert_gpt2(hf_model.state_dict(), cfg["n_layers"])
    mine = model_cls(cfg).eval()
    expected_names = sorted(mine.state_dict())
    if not isinstance(state, dict) or sorted(state) != expected_names:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        missing = sorted(set(expected_names) - set(got)) if isinstance(state, dict) else expected_names
        raise _fail("the names of the converted state dict", f"GPTModel's {len(expected_names)} names",
                    f"{len(got)} names; missing e.g. {missing[:3]}",
                    "one entry per name in GPTModel(cfg).state_dict(); remember out_head.weight "
                    "(the tied head: the same matrix as tok_emb.weight)")  # fmt: skip
    mine.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = mine(ids)
        theirs = hf_model(input_ids=ids).logits
    if ours.shape != theirs.shape:
        raise _fail("logits shape", _shape(theirs), _shape(ours), "GPTModel returns (B, T, vocab)")
    diff = float((ours - theirs).abs().max())
    if diff > 1e-4:
        raise _fail("max |logit difference| against transformers", "< 1e-4", f"{diff:.4g}",
                    "transpose every Conv1D weight (c_attn, c_proj, c_fc) but not the embeddings "
                    "or the LayerNorms; attn.c_proj is square, so a missing transpose still loads")  # fmt: skip
    print(f"convert_gpt2: same logits as transformers (max difference {diff:.1e}). Correct!")
    return mine


def check_load_gpt2_folder(load_gpt2_folder, folder, hf_model: nn.Module, ids: torch.Tensor) -> None:
    """A whole folder (config.json + model.safetensors) into your GPTModel: transformers' logits."""
    mine = load_gpt2_folder(folder)
    if not isinstance(mine, nn.Module):
        raise _fail("what load_gpt2_folder returns", "a GPTModel", type(mine).__name__,
                    "build GPTModel(cfg), load the converted weights, return it")  # fmt: skip
    if mine.training:
        raise _fail("mode of the loaded model", "eval()", "train()",
                    "call .eval(): dropout must be off for inference")  # fmt: skip
    with torch.no_grad():
        diff = float((mine(ids) - hf_model(input_ids=ids).logits).abs().max())
    if diff > 1e-4:
        raise _fail("max |logit difference| against transformers", "< 1e-4", f"{diff:.4g}",
                    "read n_embd, n_layer, n_head, n_positions and vocab_size from config.json")  # fmt: skip
    print(f"load_gpt2_folder: the folder's logits, to {diff:.1e}. Correct!")


def check_writes_verse(load_gpt2_folder, folder, reference: nn.Module, tokenizer, prompt: str,
                       n_tokens: int = 40) -> str:  # fmt: skip
    """Your GPTModel, loaded from the exported shakespeare-small folder, writes buildlm's text."""
    mine = load_gpt2_folder(folder)
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        diff = float((mine(ids) - reference(ids)).abs().max())
        out = ids
        for _ in range(n_tokens):  # greedy, the plainest loop there is
            nxt = mine(out)[:, -1].argmax(dim=-1, keepdim=True)
            out = torch.cat([out, nxt], dim=1)
    want = generate(reference, ids, max_new_tokens=n_tokens, temperature=0)
    if diff > 1e-4 or out.tolist() != want.tolist():
        raise _fail("greedy tokens of your model against buildlm's shakespeare-small",
                    want[0, -n_tokens:].tolist(), out[0, -n_tokens:].tolist(),
                    f"logits differ by {diff:.2g}; does load_gpt2_folder read layer_norm_epsilon "
                    "and the context length from the folder?")  # fmt: skip
    text = tokenizer.decode(out[0].tolist())
    print("your GPTModel, Shakespeare's weights, greedy:\n" + text)
    return text
