"""Checks for stage 8 (fine-tuning): your pieces against buildlm's own.

Each check calls your code first (so an unfinished stub says ``NotImplementedError`` before
anything else), then compares it with buildlm's: ``pool_hidden`` and ``GPTClassifier``
(``buildlm.finetune.classify``), ``set_trainable``, ``collate_sft`` (``buildlm.data.instruct``),
``LoRALinear`` (``buildlm.model.lora``) and ``dpo_loss`` (``buildlm.finetune.dpo``). A failure
raises ``AssertionError`` with what was expected, what came out, and a hint.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from buildlm.data.instruct import collate_sft
from buildlm.finetune.classify import ClassifyConfig, GPTClassifier, pool_hidden, set_trainable
from buildlm.finetune.dpo import dpo_loss
from buildlm.model.lora import LoRAConfig, LoRALinear


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _hidden_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    return hidden, mask


def check_pool(pool) -> None:
    """Mean and last-token pooling over the real tokens only, equal to buildlm's pool_hidden."""
    hidden, mask = _hidden_and_mask()
    padded = hidden.clone()
    padded[~mask] = 1e3  # whatever sits at the pads must not matter
    for how in ("mean", "last"):
        mine = pool(padded, mask, how)
        want = pool_hidden(hidden, mask, how)
        if not isinstance(mine, torch.Tensor) or mine.shape != want.shape:
            raise _fail(f"shape of pool(hidden (3, 7, 5), mask, {how!r})", tuple(want.shape),
                        getattr(mine, "shape", type(mine).__name__), "one d-vector per row: (B, d)")  # fmt: skip
        if not torch.allclose(mine, want, atol=1e-5):
            hint = ("sum hidden * mask over T, divide by the number of real tokens" if how == "mean"
                    else "the last real token of row b is at mask[b].sum() - 1 (right padding)")  # fmt: skip
            raise _fail(f"pool(..., {how!r}) with garbage (1e3) at the pads", want[1].tolist(),
                        mine[1].tolist(), hint)  # fmt: skip
    print("pool: mean and last over the real tokens, pads ignored. Correct!")


def check_classifier(cls, gpt: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Your classifier, given buildlm's classifier's weights, gives its class logits."""
    for pooling in ("mean", "last"):
        mine = cls(copy.deepcopy(gpt), 3, pooling)
        torch.manual_seed(1)
        ref = GPTClassifier(copy.deepcopy(gpt), 3, pooling)
        nn.init.normal_(ref.score.bias)  # a bias that is not zero, so a missing one shows
        if not isinstance(getattr(mine, "score", None), nn.Linear):
            raise _fail("the new head", "self.score = nn.Linear(d_model, n_classes)",
                        type(getattr(mine, "score", None)).__name__, "buildlm's name for the head")  # fmt: skip
        missing, unexpected = mine.load_state_dict(ref.state_dict(), strict=False)
        if missing or unexpected:
            raise _fail("state dict names against buildlm's GPTClassifier", "gpt.* and score.*",
                        f"missing {missing[:3]}, unexpected {unexpected[:3]}",
                        "keep the GPT as self.gpt and the head as self.score")  # fmt: skip
        with torch.no_grad():
            got, want = mine.eval()(ids, mask), ref.eval()(ids, mask)
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-5):
            raise _fail(f"class logits with pooling={pooling!r}", want[:2].tolist(),
                        got[:2].tolist() if got.shape == want.shape else tuple(got.shape),
                        "gpt.hidden_states(ids) (B, T, d) -> pool(..., mask, pooling) -> score")  # fmt: skip
    print("Classifier: buildlm's class logits, mean and last pooling. Correct!")


def check_freeze(freeze, classifier_cls, gpt: nn.Module) -> None:
    """Which parameters train after your freeze: exactly those buildlm's set_trainable picks."""
    for n in (0, 1, 2):
        mine = classifier_cls(copy.deepcopy(gpt), 2, "mean")
        count = freeze(mine, n)
        ref = GPTClassifier(copy.deepcopy(gpt), 2, "mean")
        set_trainable(ref, ClassifyConfig(trainable="last", last_n_blocks=n), LoRAConfig())
        want = sorted(k for k, p in ref.named_parameters() if p.requires_grad)
        got = sorted(k for k, p in mine.named_parameters() if p.requires_grad)
        if got != want:
            raise _fail(f"trainable parameters with last_n_blocks={n}", want[:6] + ["..."],
                        sorted(set(got) ^ set(want))[:6],
                        "freeze everything, then unfreeze the last n blocks, the final norm "
                        "(gpt.norm) and the head (score)")  # fmt: skip
        n_want = sum(p.numel() for p in ref.parameters() if p.requires_grad)
        if count != n_want:
            raise _fail(f"the count freeze returns for last_n_blocks={n}", n_want, count,
                        "the number of numbers that will train: sum of p.numel() with requires_grad")  # fmt: skip
    print("freeze: the same trainable parameters as buildlm's set_trainable. Correct!")


def check_collate(collate, examples: list, pad_id: int) -> None:
    """Your (x, y) equal collate_sft's: shifted by one, right-padded, -100 where no loss."""
    got = collate(examples, pad_id)
    want = collate_sft(examples, pad_id)
    if not isinstance(got, tuple) or len(got) != 2:
        raise _fail("what collate_instruct returns", "(x, y)", type(got).__name__, "return x, y")
    x, y = got
    for name, mine, ref in (("x", x, want.x), ("y", y, want.y)):
        if not isinstance(mine, torch.Tensor) or mine.shape != ref.shape or not torch.equal(mine, ref):
            raise _fail(f"{name} of {len(examples)} examples", ref.tolist()[0],
                        mine.tolist()[0] if isinstance(mine, torch.Tensor) else mine,
                        "x = ids[:-1] padded with pad_id; y = labels[1:] padded with -100; width "
                        "= longest ids - 1; dtype torch.long")  # fmt: skip
    print("collate_instruct: the same x and y as collate_sft. Correct!")


def check_lora(cls) -> None:
    """Your LoRA layer: frozen base, buildlm's output for the same A and B, and an exact merge."""
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    mine = cls(copy.deepcopy(base), 2, 4.0)
    ref = LoRALinear(copy.deepcopy(base), 2, 4.0)
    x = torch.randn(3, 4, 6)
    with torch.no_grad():
        if not torch.allclose(mine(x), base(x), atol=1e-6):
            raise _fail("output of a fresh LoRA layer", "the base layer's (B starts at zero)",
                        "something else", "lora_B = zeros (out, r); lora_A random (r, in)")  # fmt: skip
        nn.init.normal_(ref.lora_B)  # a trained-looking update
    frozen = [k for k in ("weight", "bias") if getattr(mine, k).requires_grad]
    if frozen or not (mine.lora_A.requires_grad and mine.lora_B.requires_grad):
        raise _fail("requires_grad", "weight, bias frozen; lora_A, lora_B trainable",
                    f"trainable base: {frozen}", "base.weight.requires_grad_(False)")  # fmt: skip
    missing, unexpected = mine.load_state_dict(ref.state_dict(), strict=False)
    if missing or unexpected:
        raise _fail("state dict names against buildlm's LoRALinear", sorted(ref.state_dict()),
                    f"missing {missing}, unexpected {unexpected}",
                    "name them weight, bias, lora_A (r, in), lora_B (out, r)")  # fmt: skip
    with torch.no_grad():
        want = ref(x)
        got = mine(x)
        if not torch.allclose(got, want, atol=1e-5):
            raise _fail("output with the same weights as buildlm's LoRALinear", want[0, 0].tolist(),
                        got[0, 0].tolist(), "y = x W^T + b + (alpha / r) * x A^T B^T")  # fmt: skip
        merged = mine.merge()
        if not isinstance(merged, nn.Linear) or isinstance(merged, cls):
            raise _fail("what merge() returns", "a plain nn.Linear", type(merged).__name__,
                        "nn.Linear(in, out), weight W + (alpha / r) B @ A, the same bias")  # fmt: skip
        ref.merge()
        if not torch.allclose(merged.weight, ref.weight, atol=1e-6) or not torch.allclose(merged(x), want, atol=1e-5):
            raise _fail("the merged layer's weight", ref.weight[0].tolist(), merged.weight[0].tolist(),
                        "W + (alpha / r) * lora_B @ lora_A, shape (out, in)")  # fmt: skip
    print("LoRALinear: buildlm's output, frozen base, exact merge. Correct!")


def check_dpo(my_dpo_loss) -> None:
    """Your DPO loss equals buildlm's, and its gradient raises the chosen answer's log-prob."""
    gen = torch.Generator().manual_seed(0)
    logps = [torch.randn(8, generator=gen) * 5 - 20 for _ in range(4)]
    for beta in (0.1, 0.5):
        got = my_dpo_loss(*logps, beta)
        want = dpo_loss(*logps, beta).loss
        if not isinstance(got, torch.Tensor) or got.dim() != 0 or not torch.allclose(got, want, atol=1e-6):
            raise _fail(f"DPO loss with beta={beta}", float(want),
                        got.tolist() if isinstance(got, torch.Tensor) else got,
                        "-logsigmoid(beta * ((pc - rc) - (pr - rr))).mean(), a scalar")  # fmt: skip
    chosen = logps[0].clone().requires_grad_(True)
    my_dpo_loss(chosen, *logps[1:], 0.1).backward()
    if not bool((chosen.grad < 0).all()):
        raise _fail("sign of d loss / d log p(chosen)", "negative (more likely chosen = lower loss)",
                    chosen.grad.tolist(), "the chosen log-prob enters with a plus sign")  # fmt: skip
    print("dpo_loss: buildlm's loss, and it pushes the chosen answers up. Correct!")
