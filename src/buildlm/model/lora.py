"""LoRA: fine-tune a big model by training two thin matrices beside each frozen weight.

The idea (Hu et al., 2021)
--------------------------
Fine-tuning changes a pretrained weight W (out, in) by some update dW. LoRA bets that the update
a task needs has low rank, and writes it as the product of two thin matrices::

    W' = W + (alpha / r) * B @ A        A: (r, in), B: (out, r), r << min(in, out)

Only A and B are trained; W stays frozen. For a 768 x 2304 attention matrix and r = 8 that is
24,576 trainable numbers instead of 1.77M (1.4%). The optimizer keeps two moments per trainable
number, so its memory shrinks by the same factor, and the saved *adapter* is a few hundred KB
that can be swapped on and off one shared base model.

Two details make it work:

- **B starts at zero** (A is random), so at step 0 the model computes exactly what the
  pretrained one did: fine-tuning starts from the pretrained function, not from noise. (If both
  were zero, no gradient would ever reach either.)
- **The scale alpha / r** keeps the update's size roughly independent of the rank, so a learning
  rate tuned at one rank still works at another.

Dropout on the LoRA input (not on the frozen path) regularises the small update.

Merging
-------
After training, ``W + (alpha / r) * B @ A`` is one ordinary matrix: :func:`merge_lora` adds the
update into W, and the model runs at exactly its original speed with no extra layers.
:func:`unmerge_lora` subtracts it again (to keep training, or to swap adapters).

This file follows `buildlm.model.quantize`: a ``nn.Linear`` is swapped in place for another
module, chosen by module-name patterns.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.atomic import atomic_file

# Every linear layer inside the transformer blocks (GPT-2 and Llama-style MLPs alike). The LM
# head and the embeddings are left alone: they are big and rarely worth adapting.
DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj", "mlp.gate", "mlp.up", "mlp.down")


@dataclass
class LoRAConfig:
    """The settings of a LoRA adapter.

    Args:
        rank: r, the inner width of B @ A (0: no LoRA, train the weights themselves).
        alpha: the update is scaled by alpha / rank.
        dropout: dropout on the LoRA branch's input while training.
        targets: module-name patterns of the Linear layers to adapt: ``"attn.qkv"`` matches
            every ``blocks.N.attn.qkv``; globs work too (``"blocks.3.*"``).
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0 (0: no LoRA), got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must lie in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        self.targets = list(self.targets)

    def to_dict(self) -> dict:
        return asdict(self)


class LoRALinear(nn.Linear):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = x W^T + b + s * x A^T B^T.

    It *is* an ``nn.Linear`` and shares the original layer's ``weight`` and ``bias`` parameters
    (no copy), so its state dict holds the base names unchanged (``...qkv.weight``) plus
    ``...qkv.lora_A`` (r, in) and ``...qkv.lora_B`` (out, r).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        nn.Module.__init__(self)  # not nn.Linear.__init__: the weights are the base layer's
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        w = base.weight
        kind = dict(device=w.device, dtype=w.dtype if w.dtype.is_floating_point else torch.float32)
        if w.device.type == "meta":  # a meta base stays meta; the adapter needs real memory
            kind["device"] = torch.device("cpu")
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kind))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kind))  # (out, r)
        # A like a fresh nn.Linear (Kaiming-uniform), as in the LoRA reference implementation.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False

    def delta_weight(self) -> torch.Tensor:
        """The update s * B @ A, shaped like the weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        y = F.linear(x, self.weight, self.bias)
        if self.merged or self.disabled:
            return y
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        return y + F.linear(F.linear(self.lora_dropout(x), a), b) * self.scaling  # (..., r) -> (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the weight: afterwards the layer is a plain matmul."""
        if not self.merged:
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the weight again (exact up to float rounding)."""
        if self.merged:
            self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"
        )


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """A pattern matches the full module name, or its tail after a dot (``"attn.qkv"``)."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, "*." + p) for p in patterns)


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """The (name, layer) pairs of every LoRA layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def inject_lora(
    model: nn.Module,
    rank: int,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Iterable[str] = DEFAULT_TARGETS,
) -> list[str]:
    """Replace every ``nn.Linear`` whose name matches ``targets`` by a `LoRALinear`, in place.

    Returns the names replaced. Layers that are already LoRA layers are left as they are.
    Raises ``ValueError`` when no layer matches (listing the Linear layers there are), since a
    typo would otherwise train nothing at all.
    """
    if isinstance(targets, str):
        raise TypeError(f"targets must be a collection of patterns, got the string {targets!r}")
    patterns = tuple(targets)
    linears = [
        (name, m)
        for name, m in model.named_modules()
        if type(m) is nn.Linear  # exactly Linear: not a LoRA or quantized layer
    ]
    chosen = [(name, m) for name, m in linears if _matches(name, patterns)]
    if not chosen:
        examples = sorted({n.split(".", 2)[-1] for n, _ in linears})[:10]
        raise ValueError(
            f"no Linear layer matches the LoRA targets {list(patterns)}; layer names end in "
            f"{examples} (e.g. targets=['attn.qkv', 'attn.proj'])"
        )
    for name, linear in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = LoRALinear(linear, rank, alpha, dropout)
        layer.train(linear.training)  # an eval-mode model stays in eval mode (no dropout)
        setattr(parent, child, layer)
    return [name for name, _ in chosen]


def mark_only_lora_trainable(model: nn.Module, also: Iterable[str] = ()) -> int:
    """Freeze every parameter except the LoRA matrices (and those matching ``also``).

    ``also`` holds parameter-name patterns that train as well, e.g. a new classification head
    (``"score.*"``). Returns the number of trainable parameters.
    """
    patterns = tuple(also)
    n = 0
    for name, p in model.named_parameters():
        train = name.endswith((".lora_A", ".lora_B")) or _matches(name, patterns)
        p.requires_grad_(train)
        n += p.numel() if train else 0
    return n


def lora_state_dict(model: nn.Module, also: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The adapter: every ``lora_A``/``lora_B`` tensor (plus parameters matching ``also``)."""
    patterns = tuple(also)
    return {
        name: p.detach()
        for name, p in model.named_parameters()
        if name.endswith((".lora_A", ".lora_B")) or (patterns and _matches(name, patterns))
    }


def _config_of(model: nn.Module) -> LoRAConfig:
    layers = list(lora_modules(model))
    if not layers:
        raise ValueError("the model has no LoRA layers; call inject_lora first")
    _, first = layers[0]
    dropout = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
    return LoRAConfig(rank=first.rank, alpha=first.alpha, dropout=dropout, targets=[n for n, _ in layers])


def save_lora(model: nn.Module, path: str | os.PathLike, also: Iterable[str] = ()) -> Path:
    """Write the adapter to a safetensors file, its `LoRAConfig` in the metadata; atomic.

    The targets stored are the exact layer names, so :func:`load_lora` rebuilds the same layers.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.to("cpu").contiguous() for k, v in lora_state_dict(model, also).items()}
    if any(m.merged for _, m in lora_modules(model)):
        raise ValueError("the adapter is merged into the weights; call unmerge_lora before save_lora")
    metadata = {"format": "pt", "lora": json.dumps(_config_of(model).to_dict())}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_lora_config(path: str | os.PathLike) -> LoRAConfig:
    """The `LoRAConfig` stored in an adapter file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA adapter {str(path)!r} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{str(path)!r} is not a safetensors file ({err})") from None
    if "lora" not in metadata:
        raise ValueError(f"{str(path)!r} holds no LoRA config in its metadata; not a save_lora file")
    return LoRAConfig(**json.loads(metadata["lora"]))


def load_lora(model: nn.Module, path: str | os.PathLike) -> LoRAConfig:
    """Put a :func:`save_lora` adapter onto ``model`` (a fresh base model, or one with LoRA layers).

    LoRA layers are injected where the file says when the model has none yet. Every tensor must
    find its place with the right shape: an adapter trained on another base model is refused.
    """
    from safetensors.torch import load_file

    config = read_lora_config(path)
    if not any(True for _ in lora_modules(model)):
        inject_lora(model, config.rank, config.alpha, config.dropout, config.targets)
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [f"{n}.{k}" for n, _ in lora_modules(model) for k in ("lora_A", "lora_B") if f"{n}.{k}" not in tensors]
    unknown = [k for k in tensors if k not in params]
    if missing or unknown:
        raise ValueError(
            f"{str(path)!r} does not fit this model: missing {missing[:4]}, unknown {unknown[:4]}; "
            "was the adapter trained on another base model?"
        )
    with torch.no_grad():
        for name, t in tensors.items():
            if params[name].shape != t.shape:
                raise ValueError(
                    f"{str(path)!r}: {name} has shape {tuple(t.shape)}, the model expects "
                    f"{tuple(params[name].shape)}; was the adapter trained on another base model?"
                )
            params[name].copy_(t)
    return config


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (in place); the model then runs at base-model speed."""
    for _, m in lora_modules(model):
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora` (in place)."""
    for _, m in lora_modules(model):
        m.unmerge()
    return model


def remove_lora(model: nn.Module) -> nn.Module:
    """Merge, then put plain ``nn.Linear`` layers back: a model with the base's exact structure."""
    for name, m in list(lora_modules(model)):
        m.merge()
        plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        plain.weight, plain.bias = m.weight, m.bias
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, plain)
    return model


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model without its (unmerged) adapters: the frozen reference DPO needs."""
    layers = [m for _, m in lora_modules(model)]
    if any(m.merged for m in layers):
        raise ValueError("cannot disable merged LoRA layers; unmerge_lora first")
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m in layers:
            m.disabled = False


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
