"""The model as a data-flow trace: every stage, its tensor shapes, parameters and FLOPs per token.

``trace_model(config)`` answers the questions a learner asks of an architecture: what happens to
the token ids, in which order, how big is each tensor on the way, where do the parameters sit and
where does the arithmetic go? It is what ``buildlm explain`` prints.

The trace cannot drift from the code, because it is not written from the config: it *runs* the
network. A twin of the model is built on PyTorch's **meta device** (every tensor has a shape and
a dtype but no memory, and operations only compute output shapes), forward hooks are put on
every module, and one sequence of ``seq_len`` tokens goes through ``GPT.get_attention_weights``
(the explicit attention path, so the score matrix exists) and then ``GPT.head``. Each stage
reads its shapes from what the hooks saw. Running GPT-2 XL on 1024 tokens this way takes a
fraction of a second and no memory.

Two checks keep the accounting honest, and raise if the model code ever changes under it:

- every parameter of the network is counted by exactly one stage, so the stage parameters add
  up to ``GPT.num_params()`` (a tied LM head reuses the token-embedding matrix and adds none);
- the stage FLOPs add up to ``GPT.flops_per_token(seq_len)``.

FLOPs follow the convention of ``GPT.flops_per_token`` (PaLM, nanoGPT): *training* FLOPs per
token, forward plus backward. A matmul with N weights costs 2N per token forward and 4N backward,
6N in all; the two attention matmuls (q k^T and weights @ v) cost 2 * T * d_attn each forward,
so 6 * T * d_attn each for training. Look-ups, norms, activations, softmax and residual adds
are cheap element-wise work and count as 0. The LM head is counted even when tied: the matrix
is shared, the matmul is not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from buildlm.model.config import ModelConfig
from buildlm.model.gpt import GPT
from buildlm.model.moe import MoE

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Stage:
    """One step of the data flow.

    ``depth`` nests the stages for printing (0: the model, 1: inside a block, 2: inside the
    attention or the MLP). ``group`` marks a heading (a block, the attention, the MLP) whose
    own ``params`` and ``flops`` are 0: its children carry them, so totals never count twice.
    ``shape_in``/``shape_out`` are None where the input is not a tensor (position tables take a
    length). ``flops`` are training FLOPs per token (forward + backward), as in
    ``GPT.flops_per_token``.
    """

    name: str
    depth: int
    shape_in: Shape | None
    shape_out: Shape | None
    params: int = 0
    flops: int = 0
    note: str = ""
    layer: int | None = None
    group: bool = False


@dataclass
class Trace:
    """The stages of one model at one sequence length, in the order the data flows."""

    config: ModelConfig
    seq_len: int
    stages: list[Stage] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        """Sum of the stage parameters: equals ``GPT(config).num_params()``."""
        return sum(s.params for s in self.stages)

    @property
    def total_flops(self) -> int:
        """Sum of the stage FLOPs: equals ``GPT(config).flops_per_token(seq_len)``."""
        return sum(s.flops for s in self.stages)

    def stage(self, name: str, layer: int | None = None) -> Stage:
        """The first stage called ``name`` (in ``layer``, when given)."""
        for s in self.stages:
            if s.name == name and (layer is None or s.layer == layer):
                return s
        raise KeyError(f"no stage {name!r}" + ("" if layer is None else f" in layer {layer}"))

    def format(self, brief: bool = False) -> str:
        """The trace as a table. ``brief=True`` prints block 0 in full and the others as one row
        each (all blocks have the same shapes; only their weights differ)."""
        rows: list[tuple[str, str, str, str, str]] = []
        for s in self.stages:
            if brief and s.layer not in (None, 0):
                if s.group and s.depth == 0:  # one summary row per later block
                    params = sum(x.params for x in self.stages if x.layer == s.layer)
                    flops = sum(x.flops for x in self.stages if x.layer == s.layer)
                    rows.append((s.name, _shapes(s), f"{params:,}", f"{flops:,}", "as block 0"))
                continue
            params = "" if s.group else f"{s.params:,}"
            flops = "" if s.group else f"{s.flops:,}"
            rows.append(("  " * s.depth + s.name, _shapes(s), params, flops, s.note))
        head = ("stage", "shape in -> out", "params", "FLOPs/token", "what happens")
        total = ("total", "", f"{self.total_params:,}", f"{self.total_flops:,}", "")
        widths = [max(len(r[i]) for r in [head, *rows, total]) for i in range(4)]

        def line(name: str, shapes: str, params: str, flops: str, note: str) -> str:
            return (
                f"{name:<{widths[0]}}  {shapes:<{widths[1]}}  {params:>{widths[2]}}  "
                f"{flops:>{widths[3]}}  {note}"
            ).rstrip()

        rule = "-" * (sum(widths) + 8 + len(head[4]))
        lines = [line(*head), rule, *(line(*r) for r in rows), rule, line(*total)]
        return "\n".join(lines)


def _shape(shape: Shape | None) -> str:
    return "" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def _shapes(s: Stage) -> str:
    if s.shape_in is None and s.shape_out is None:
        return ""
    if s.shape_in is None:
        return "-> " + _shape(s.shape_out)
    return f"{_shape(s.shape_in)} -> {_shape(s.shape_out)}"


# ---- running the network on the meta device ---------------------------------------------------


def _tensor_shapes(obj: object) -> list[Shape]:
    """Shapes of every tensor in a hook's arguments or output (tuples are walked)."""
    if isinstance(obj, torch.Tensor):
        return [tuple(obj.shape)]
    if isinstance(obj, (tuple, list)):
        return [s for item in obj for s in _tensor_shapes(item)]
    return []


Calls = dict[str, list[tuple[list[Shape], list[Shape]]]]


def _run_with_hooks(model: GPT, seq_len: int) -> Calls:
    """Run one (1, seq_len) sequence through ``model``; record every module call's shapes.

    ``calls[name]`` lists (input shapes, output shapes) per call, in call order (the shared
    RoPE module is called twice per layer: queries, then keys).
    """
    calls: Calls = defaultdict(list)
    handles = []
    for name, module in model.named_modules():
        if name:

            def hook(_m: nn.Module, args: tuple, out: object, name: str = name) -> None:
                calls[name].append((_tensor_shapes(args), _tensor_shapes(out)))

            handles.append(module.register_forward_hook(hook))
    idx = torch.zeros(1, seq_len, dtype=torch.long, device=model.device)
    try:
        with torch.no_grad():
            model.get_attention_weights(idx)  # embeddings, blocks (with weights), final norm
            hidden = torch.zeros(calls["norm"][0][1][0], device=model.device)
            logits = model.head(hidden)  # (1, T, vocab_size)
    finally:
        for h in handles:
            h.remove()
    calls["<head>"].append(([tuple(hidden.shape)], [tuple(logits.shape)]))
    return calls


PLACEMENTS = {
    "pre": "pre-LN",
    "post": "post-LN",
    "branch_post": "norm on each sublayer's output",
    "sandwich": "norms before and after each sublayer",
}


class _Accounting:
    """Hands each parameter to one stage, and checks at the end that all were handed out."""

    def __init__(self, model: GPT) -> None:
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.counted: dict[int, int] = defaultdict(int)
        self.numel = {id(p): p.numel() for p in model.parameters()}

    def take(self, *tensors: torch.Tensor | None, part: int | None = None) -> int:
        """Count ``tensors`` (or ``part`` elements of the single tensor given) as one stage's."""
        total = 0
        for t in tensors:
            if t is None:
                continue
            n = t.numel() if part is None else part
            self.counted[id(t)] += n
            total += n
        return total

    def module(self, m: nn.Module) -> int:
        """Every parameter of ``m`` and its children."""
        return self.take(*m.parameters())

    def check(self) -> None:
        wrong = [
            f"{self.names[i]} (counted {self.counted.get(i, 0)} of {n})"
            for i, n in self.numel.items()
            if self.counted.get(i, 0) != n
        ]
        if wrong:
            raise RuntimeError(
                "buildlm.viz.explain does not account for these parameters: "
                f"{', '.join(wrong)}; the model code changed, update explain.py to match"
            )


def trace_model(config: ModelConfig, seq_len: int | None = None) -> Trace:
    """The data-flow trace of ``GPT(config)`` on one sequence of ``seq_len`` tokens.

    ``seq_len`` defaults to the context length (what ``GPT.flops_per_token`` assumes); it sets
    T in every shape and in the attention FLOPs, which grow with T.
    """
    t = config.context_length if seq_len is None else seq_len
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= config.context_length:
        raise ValueError(
            f"seq_len must be an integer from 1 to the context length "
            f"{config.context_length}, got {seq_len!r}"
        )
    with torch.device("meta"):
        model = GPT(config).eval()
    trace = Trace(config, t)
    _Builder(model, trace, _run_with_hooks(model, t)).build()
    expected = model.flops_per_token(t)
    if trace.total_flops != expected:
        raise RuntimeError(
            f"buildlm.viz.explain counts {trace.total_flops:,} FLOPs per token, but "
            f"GPT.flops_per_token({t}) says {expected:,}; update explain.py to match the model"
        )
    return trace


class _Builder:
    """Writes the stages in the order the model's ``forward`` methods run them.

    Shapes come from the recorded calls; parameters are handed out through `_Accounting`.
    """

    def __init__(self, model: GPT, trace: Trace, calls: Calls) -> None:
        self.model, self.trace, self.calls = model, trace, calls
        self.cfg = trace.config
        self.acct = _Accounting(model)

    def shapes(self, name: str, call: int = 0) -> tuple[Shape | None, Shape | None]:
        """(first input shape, first output shape) of a module's ``call``-th call."""
        ins, outs = self.calls[name][call]
        return (ins[0] if ins else None), (outs[0] if outs else None)

    def add(
        self,
        name: str,
        depth: int,
        shapes: tuple[Shape | None, Shape | None],
        params: int = 0,
        flops: int = 0,
        note: str = "",
        layer: int | None = None,
        group: bool = False,
    ) -> None:
        self.trace.stages.append(Stage(name, depth, *shapes, params, flops, note, layer, group))

    def build(self) -> None:
        model, cfg, acct = self.model, self.cfg, self.acct
        table = f"row id of a ({cfg.vocab_size}, {cfg.d_model}) table"
        self.add("token embedding", 0, self.shapes("tok_emb"), acct.module(model.tok_emb), 0, table)
        if cfg.position == "learned":
            note = "learned row per position, added to each token"
            params = acct.module(model.pos_emb)
            self.add("position embedding", 0, self.shapes("pos_emb"), params, 0, note)
        elif cfg.position == "sinusoidal":
            note = "fixed sin/cos table (no parameters), added"
            self.add("position embedding", 0, self.shapes("pos_emb"), 0, 0, note)
        else:
            note = "nothing added: q and k are rotated in attention"
            self.add("position: RoPE", 0, (None, None), 0, 0, note)
        for i, block in enumerate(model.blocks):
            self.block(block, i)
        if cfg.norm_placement != "post":
            note = f"{cfg.norm} of the last block's output"
            self.add("final norm", 0, self.shapes("norm"), acct.module(model.norm), 0, note)
        else:
            note = "none: post-LN blocks already end with a norm"
            self.add("final norm", 0, self.shapes("norm"), 0, 0, note)
        head_flops = 6 * cfg.vocab_size * cfg.d_model  # counted even when the matrix is shared
        if model.lm_head is None:
            note = "scores vs every token embedding; shares its matrix"
            self.add("LM head (tied)", 0, self.shapes("<head>"), 0, head_flops, note)
        else:
            params = acct.module(model.lm_head)
            note = "one logit per vocabulary entry"
            self.add("LM head", 0, self.shapes("<head>"), params, head_flops, note)
        acct.check()

    def block(self, block: nn.Module, i: int) -> None:
        p, cfg = f"blocks.{i}", self.cfg
        x_shape = self.shapes(p)[1]  # (1, T, d_model) throughout the block
        placement = PLACEMENTS[cfg.norm_placement]
        self.add(f"block {i}", 0, self.shapes(p), note=placement, layer=i, group=True)

        def norm(which: str) -> None:
            params = self.acct.module(getattr(block, which))
            note = f"{cfg.norm}, each token on its own"
            self.add(which, 1, self.shapes(f"{p}.{which}"), params, 0, note, layer=i)

        def residual(note: str) -> None:
            self.add("residual add", 1, (x_shape, x_shape), 0, 0, note, layer=i)

        if not block.post_norm:  # pre-LN, OLMo 2's branch-post, Gemma's sandwich
            for sub, part, before, after in (
                ("attention", "attn", "norm1", "norm_attn_out"),
                ("mlp", "mlp", "norm2", "norm_mlp_out"),
            ):
                inner = "x"
                if getattr(block, before) is not None:
                    norm(before)
                    inner = f"{before}(x)"
                getattr(self, sub)(getattr(block, part), i)
                branch = f"{sub}({inner})"
                if getattr(block, after) is not None:
                    norm(after)
                    branch = f"{after}({branch})"
                residual(f"x = x + {branch}")
        else:
            self.attention(block.attn, i)
            residual("x + attention(x)")
            norm("norm1")
            self.mlp(block.mlp, i)
            residual("x + mlp(x)")
            norm("norm2")

    def attention(self, attn: nn.Module, i: int) -> None:
        p, cfg, acct = f"blocks.{i}.attn", self.cfg, self.acct
        h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        attn_in = self.calls[p][0][0][0]  # (1, T, d_model)
        weights = self.calls[p][0][1][1]  # (1, H, T, T): the output's second tensor
        b, t = attn_in[0], attn_in[1]
        qkv_in, qkv_out = self.shapes(f"{p}.qkv")
        if qkv_out[-1] != (h + 2 * kv) * d:
            raise RuntimeError(
                f"attn.qkv gives {qkv_out[-1]} features, not (n_heads + 2 n_kv_heads) * "
                f"head_dim = {(h + 2 * kv) * d}; update explain.py to match the model"
            )
        heads = f"{h} heads x {d} dims, {kv} key/value heads"
        if attn.sliding_window is not None:  # a local layer (buildlm.model.sliding_window)
            heads += f", local: sees the last {attn.sliding_window} positions"
        self.add("attention", 1, self.shapes(p), note=heads, layer=i, group=True)
        shared = f"; shared by {h // kv} query heads" if kv < h else ""
        weight, bias = attn.qkv.weight, attn.qkv.bias
        for name, n_heads, first, what in (
            ("q projection", h, 0, "what each token looks for"),
            ("k projection", kv, h * d, "what each token offers" + shared),
            ("v projection", kv, (h + kv) * d, "what each token passes on" + shared),
        ):
            n = cfg.d_model * n_heads * d  # this projection's rows of the fused weight
            params = acct.take(weight, part=n)
            if bias is not None:
                params += acct.take(bias, part=n_heads * d)
            note = f"rows {first}..{first + n_heads * d - 1} of the fused qkv Linear: {what}"
            self.add(name, 2, (qkv_in, (b, n_heads, t, d)), params, 6 * n, note, layer=i)
        if attn.q_norm is not None:
            params = acct.module(attn.q_norm) + acct.module(attn.k_norm)
            scope = "the whole q and k projections" if attn.qk_norm_all else "each head's q and k"
            note = f"{cfg.norm} of {scope}"
            self.add("q/k norm", 2, self.shapes(f"{p}.q_norm"), params, 0, note, layer=i)
        if cfg.position == "rope":  # the shared module runs twice per layer: q, then k
            note = "rotate dim pairs by position-dependent angles"
            self.add("RoPE on q and k", 2, self.shapes("rope", 2 * i), 0, 0, note, layer=i)
        span = min(t, attn.sliding_window or t)  # the keys a query can see
        matmul_flops = 6 * span * h * d  # 2 * span * d_attn forward, x 3 with backward
        note = "causal mask: future keys -> -inf"
        if span < t:
            note += f", and keys over {span} back"
        self.add(
            "scores q k^T / sqrt(d)", 2, ((b, h, t, d), weights), 0, matmul_flops, note, layer=i
        )
        self.add("softmax", 2, (weights, weights), 0, 0, "each row sums to 1", layer=i)
        proj_in = self.shapes(f"{p}.proj")[0]  # (1, T, H * d): the heads side by side
        note = f"then heads side by side: {_shape(proj_in)}"
        self.add("context weights @ v", 2, (weights, (b, h, t, d)), 0, matmul_flops, note, layer=i)
        params, flops = acct.module(attn.proj), 6 * attn.proj.weight.numel()
        note = "mixes the heads back into d_model"
        self.add("out projection", 2, self.shapes(f"{p}.proj"), params, flops, note, layer=i)

    def moe(self, moe: MoE, i: int) -> None:
        p, cfg, acct = f"blocks.{i}.mlp", self.cfg, self.acct
        note = f"{cfg.n_active_experts} of {cfg.n_experts} experts per token, {cfg.router_score} router"
        self.add("mixture of experts", 1, self.shapes(p), note=note, layer=i, group=True)
        params, flops = acct.module(moe.router), 6 * moe.router.weight.numel()
        self.add("router", 2, self.shapes(f"{p}.router"), params, flops, "a score per expert", layer=i)
        per_expert = moe.experts.params_per_expert()
        note = f"{cfg.mlp} width {cfg.moe_d_ff}; active {cfg.n_active_experts * per_expert:,} parameters"
        flops = 6 * cfg.n_active_experts * per_expert  # each token runs k experts only
        self.add("experts", 2, self.shapes(f"{p}.experts"), acct.module(moe.experts), flops, note, layer=i)
        for name, attr in (("shared experts", "shared"), ("shared gate", "shared_gate")):
            part = getattr(moe, attr)
            if part is not None:
                flops = 6 * sum(m.weight.numel() for m in part.modules() if isinstance(m, nn.Linear))
                note = "every token, beside the routed experts"
                self.add(name, 2, self.shapes(f"{p}.{attr}"), acct.module(part), flops, note, layer=i)

    def mlp(self, mlp: nn.Module, i: int) -> None:
        if isinstance(mlp, MoE):
            return self.moe(mlp, i)
        p, cfg = f"blocks.{i}.mlp", self.cfg
        note = f"{cfg.mlp}, hidden width {cfg.d_ff}"
        self.add("MLP", 1, self.shapes(p), note=note, layer=i, group=True)

        def linear(name: str, attr: str, note: str) -> None:
            layer = getattr(mlp, attr)
            params, flops = self.acct.module(layer), 6 * layer.weight.numel()
            self.add(name, 2, self.shapes(f"{p}.{attr}"), params, flops, note, layer=i)

        if cfg.mlp == "gelu":
            linear("up projection (fc)", "fc", "d_model -> hidden")
            hidden = self.shapes(f"{p}.fc")[1]
            self.add("GELU (tanh)", 2, (hidden, hidden), 0, 0, "element-wise", layer=i)
            linear("down projection", "proj", "hidden -> d_model")
        elif cfg.mlp == "relu2":
            linear("up projection", "up", "d_model -> hidden")
            hidden = self.shapes(f"{p}.up")[1]
            self.add("relu(x)^2", 2, (hidden, hidden), 0, 0, "element-wise, 0 for x < 0", layer=i)
            linear("down projection", "down", "hidden -> d_model")
        else:
            linear("gate projection", "gate", "d_model -> hidden")
            linear("up projection", "up", "d_model -> hidden")
            hidden = self.shapes(f"{p}.up")[1]
            note = "the gate scales each hidden unit"
            act = "gelu" if cfg.mlp == "geglu" else "silu"
            self.add(f"{act}(gate) * up", 2, (hidden, hidden), 0, 0, note, layer=i)
            linear("down projection", "down", "hidden -> d_model")


# ---- what the model predicts -----------------------------------------------------------------


@torch.no_grad()
def next_token_probabilities(model: GPT, ids: list[int], k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` likeliest next tokens after ``ids``, as (id, probability), likeliest first.

    The probabilities are softmax of the model's logits at the last position (temperature 1).
    """
    if not ids:
        raise ValueError("the text is empty; give at least one token to predict from")
    if k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    idx = torch.tensor([ids], device=model.device)  # (1, T)
    logits = model(idx)[0, -1].float()  # (vocab_size,)
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
