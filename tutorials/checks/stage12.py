"""Checks for stage 12 (fast and big): your scaler, accumulation loop, attention, int8 layer,
KV-cache arithmetic and gradient all-reduce against buildlm's and PyTorch's own.

Each check calls your code first (so an unfinished stub says ``NotImplementedError`` before
anything else), then compares it with the reference: ``torch.amp.GradScaler`` (what buildlm's
``Trainer`` uses for fp16), the ``Trainer``'s own gradient accumulation, PyTorch's
``scaled_dot_product_attention`` and buildlm's ``causal_attention``, ``buildlm.model.quantize``,
``StaticKVCache.nbytes``, and a real two-process run under ``torchrun``.

Two tools for measuring live here too: `PeakMemory`, which counts the bytes of the tensors
PyTorch allocates (on any device, the CPU included) and their peak, and `best_time`.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import buildlm
from buildlm.infer.kvcache import StaticKVCache
from buildlm.model import GPT, ModelConfig
from buildlm.model.attention import causal_attention
from buildlm.model.quantize import QuantizedLinear, quantize_rows
from buildlm.train import TrainConfig, TrainData, Trainer


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


# --- measuring ---------------------------------------------------------------------------------


class PeakMemory(TorchDispatchMode):
    """Bytes of tensor storage allocated inside ``with PeakMemory() as m:``, live and at peak.

    Every operator PyTorch runs passes through ``__torch_dispatch__``; each new storage among
    its outputs is counted when it appears and uncounted when it is freed (a finalizer on the
    storage). ``m.peak`` is the most bytes alive at once, ``m.current`` what is still alive at
    the end (e.g. the gradients). Tensors made before the block (weights, inputs) are not
    counted, and neither is scratch memory a kernel allocates for itself and frees inside.
    The count is exact and the same on every run: no allocator, page or timing noise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        if key in self._live:
            self._live.discard(key)
            self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key, nbytes = id(storage), storage.nbytes()
                if key not in self._live and nbytes > 0:
                    self._live.add(key)
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key, nbytes)
        return out


def best_time(fn, *args, repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs of ``fn(*args)``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


# --- 1. the loss scaler -------------------------------------------------------------------------

# The size of the "true" gradient at each step: big ones overflow fp16 once scaled, tiny ones
# would underflow without the scale. Chosen so that the scale falls, grows back, and falls again.
GRADIENT_SIZES = [4.0, 4.0, 4.0] + [1e-3] * 6 + [1e-7] * 3 + [30.0, 1e-2, 1e-2]


def fp16_step(w: torch.Tensor, size: float, step: int) -> torch.Tensor:
    """A loss computed in fp16 from fp32 master weights ``w`` (what autocast does with fp16).

    Its gradient is about ``size`` per weight; the backward pass runs in fp16 too, so a scaled
    gradient over 65,504 becomes inf and one under 2^-24 becomes 0.
    """
    x = torch.randn(16, w.shape[0], generator=torch.Generator().manual_seed(step)) * size
    y = x.half() @ w.half()  # (16,): the forward pass in fp16
    return (y.float() - 1.0).square().mean()  # the loss in fp32


def check_loss_scaler(scaler_cls) -> list[float]:
    """Your scaler and ``torch.amp.GradScaler`` on the same fp16 gradients: the same scales,
    the same skipped steps, the same weights after every step. Returns the scales."""
    settings = dict(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    mine = scaler_cls(**settings)
    theirs = torch.amp.GradScaler("cpu", **settings)
    w_mine = torch.nn.Parameter(torch.full((8,), 0.1))
    w_theirs = torch.nn.Parameter(torch.full((8,), 0.1))
    opt_mine = torch.optim.SGD([w_mine], lr=1e-3)
    opt_theirs = torch.optim.SGD([w_theirs], lr=1e-3)
    scales = []
    for step, size in enumerate(GRADIENT_SIZES):
        mine.scale_loss(fp16_step(w_mine, size, step)).backward()
        stepped = mine.step(opt_mine)
        mine.update()
        opt_mine.zero_grad(set_to_none=True)

        scale_before = theirs.get_scale()
        theirs.scale(fp16_step(w_theirs, size, step)).backward()
        theirs.step(opt_theirs)
        theirs.update()
        opt_theirs.zero_grad(set_to_none=True)
        took = theirs.get_scale() >= scale_before  # GradScaler halves the scale iff it skipped

        if stepped is not took:
            raise _fail(f"step {step} (gradient ~{size:g}, scale {scales[-1] if scales else 2**16:g}): "
                        "did the optimizer step?", took, stepped,
                        "unscale (divide every .grad by the scale), then step only if every "
                        "gradient is finite (torch.isfinite(g).all()); return whether it stepped")  # fmt: skip
        if float(mine.scale) != theirs.get_scale():
            raise _fail(f"the scale after step {step} (gradient ~{size:g})", theirs.get_scale(),
                        float(mine.scale), "update(): an inf/nan step multiplies the scale by "
                        "backoff_factor and restarts the count of good steps; otherwise count "
                        "one more good step, and after growth_interval of them in a row multiply "
                        "by growth_factor and restart the count")  # fmt: skip
        if not torch.equal(w_mine.detach(), w_theirs.detach()):
            raise _fail(f"the weights after step {step}", w_theirs.detach().tolist(),
                        w_mine.detach().tolist(), "step with the *unscaled* gradients "
                        "(p.grad divided by the scale), and never with a non-finite one")  # fmt: skip
        scales.append(theirs.get_scale())
    print(f"LossScaler: GradScaler's scales, skipped steps and weights over {len(scales)} steps. Correct!")
    return scales


# --- 2. gradient accumulation -------------------------------------------------------------------

VOCAB = 64


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """A seeded GPT small enough for exact comparisons in a blink (about 27k parameters)."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=VOCAB, context_length=32, d_model=32, n_layers=2, n_heads=2, dropout=0.0)
    return GPT(ModelConfig.preset("tiny", **{**settings, **overrides}))


def pattern_tokens(n: int, seed: int) -> np.ndarray:
    """Mostly ``next = 5 * previous + 3 (mod 64)``, 10% random: something worth learning."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(n, dtype=np.int64)
    tokens[0] = 0
    for i in range(1, n):
        tokens[i] = rng.integers(VOCAB) if rng.random() < 0.1 else (5 * tokens[i - 1] + 3) % VOCAB
    return tokens


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    if set(a) != set(b):
        return float("inf"), f"gradients for {sorted(set(a) ^ set(b))} missing on one side"
    name = max(a, key=lambda n: float((a[n] - b[n]).abs().max()))
    return float((a[name] - b[name]).abs().max()), name


def check_accumulate(accumulate, micro_batch: int = 2, n_micro: int = 4) -> float:
    """Your loop over ``n_micro`` micro-batches: the big batch's loss and gradients, and those of
    buildlm's Trainer with ``grad_accum_steps=n_micro``. Returns the largest gradient difference."""
    data = TrainData(pattern_tokens(3000, seed=0))
    config = TrainConfig(batch_size=micro_batch, grad_accum_steps=n_micro, context_length=32,
                         device="cpu", seed=3, progress=False, tensorboard=False, max_steps=1,
                         time_budget_s=None, sample_interval=0, checkpoint_interval=0)  # fmt: skip
    trainer = Trainer(tiny_gpt(), config, data, log=lambda *a: None)
    batches = [trainer.train_batches.batch_at(k) for k in range(n_micro)]  # what it will draw

    model = tiny_gpt()
    loss = accumulate(model, batches)
    mine = _grads(model)
    if not mine:
        raise _fail("gradients in model's .grad after accumulate", "one per parameter", "none",
                    "call loss.backward() for every micro-batch; do not zero the gradients "
                    "in between")  # fmt: skip

    big = tiny_gpt()  # one batch of micro_batch * n_micro windows
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    big_loss = F.cross_entropy(big(x).flatten(0, 1), y.flatten())
    big_loss.backward()
    diff, name = _max_diff(mine, _grads(big))
    if diff > 1e-6:
        raise _fail(f"max |gradient difference| against one batch of {len(x)} ({name})", "< 1e-6",
                    f"{diff:.3g}", "divide each micro-batch's mean loss by the number of "
                    "micro-batches before backward: the sum of the gradients is then the "
                    "gradient of the mean over all of them")  # fmt: skip
    if not isinstance(loss, float) or abs(loss - big_loss.item()) > 1e-6:
        raise _fail("the returned loss", f"{big_loss.item():.6f} (a float)", loss,
                    "return the mean of the micro-batch losses as a Python float")  # fmt: skip

    trainer.accumulate_gradients()  # buildlm: grad_accum_steps backward passes into .grad
    diff_trainer, name = _max_diff(mine, _grads(trainer.model))
    if diff_trainer > 1e-6:
        raise _fail(f"max |gradient difference| against Trainer.accumulate_gradients ({name})",
                    "< 1e-6", f"{diff_trainer:.3g}", "the same as against the big batch")  # fmt: skip
    print(f"accumulate: {n_micro} micro-batches of {micro_batch} give the gradients of one batch of "
          f"{len(x)} (max difference {diff:.1e}) and the Trainer's (max {diff_trainer:.1e}). Correct!")  # fmt: skip
    return max(diff, diff_trainer)


# --- 4. attention -------------------------------------------------------------------------------


def check_explicit_attention(explicit_attention) -> None:
    """Your explicit causal attention against SDPA and buildlm's ``causal_attention``."""
    gen = torch.Generator().manual_seed(0)
    for b, h, t, d in [(2, 3, 5, 8), (1, 4, 64, 16), (2, 2, 1, 8)]:
        q, k, v = (torch.randn(b, h, t, d, generator=gen) for _ in range(3))
        mine = explicit_attention(q, k, v)
        sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        ours, _ = causal_attention(q, k, v)
        if not isinstance(mine, torch.Tensor) or mine.shape != sdpa.shape:
            raise _fail(f"shape for q, k, v of {(b, h, t, d)}", tuple(sdpa.shape),
                        getattr(mine, "shape", type(mine).__name__), "return (B, H, T, d)")  # fmt: skip
        diff = float((mine - sdpa).abs().max())
        if diff > 1e-5:
            raise _fail(f"max |difference| from F.scaled_dot_product_attention(is_causal=True), "
                        f"shape {(b, h, t, d)}", "< 1e-5", f"{diff:.3g}",
                        "scores = q @ k^T / sqrt(d); -inf where key j > query i "
                        "(torch.triu(..., diagonal=1)); softmax over the keys; @ v")  # fmt: skip
        if float((ours - mine).abs().max()) > 1e-5:
            raise _fail("difference from buildlm's causal_attention", "< 1e-5",
                        f"{float((ours - mine).abs().max()):.3g}", "as above")  # fmt: skip
    print("explicit_attention: the same output as SDPA and buildlm's causal_attention. Correct!")


# --- 6. int8 weight-only quantization -----------------------------------------------------------


def check_quantize(quantize, int8_linear) -> dict[str, float]:
    """Your int8 scheme against buildlm's, and its error bounds. Returns the worst ratios of
    error to bound (each at most 1)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 40, generator=gen) * torch.logspace(-3, 0, 48)[:, None]  # rows of all sizes
    w[5] = 0.0  # an all-zero row: any scale represents it; buildlm uses 1
    x = torch.randn(7, 40, generator=gen)
    bias = torch.randn(48, generator=gen)
    q, scale = quantize(w)
    want_q, want_scale = quantize_rows(w)
    if not (isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.shape == w.shape):
        raise _fail("q's dtype and shape", f"torch.int8 {tuple(w.shape)}",
                    f"{getattr(q, 'dtype', type(q).__name__)} {tuple(getattr(q, 'shape', ()))}",
                    ".round().clamp(-127, 127).to(torch.int8)")  # fmt: skip
    if not torch.equal(scale, want_scale):
        diff = float((scale - want_scale).abs().max()) if scale.shape == want_scale.shape else "shape"
        raise _fail("scales (one per output row, float32)", "buildlm's quantize_rows scales",
                    f"max difference {diff}", "scale = |w|.amax(dim=1) / 127; a row of zeros "
                    "gets scale 1 (torch.where(scale == 0, 1, scale))")  # fmt: skip
    if not torch.equal(q, want_q):
        raise _fail("int8 values", "buildlm's", f"{int((q != want_q).sum())} of {q.numel()} differ",
                    "q = round(w / scale[:, None]) (round half to even, torch.round), clamped")  # fmt: skip

    deq = q.float() * scale[:, None]
    ratio_w = float(((w - deq).abs() / (scale[:, None] / 2)).max())
    if ratio_w > 1 + 1e-5:
        raise _fail("max |W - deq(q(W))| / (scale/2)", "<= 1", ratio_w, "round to the nearest step")

    layer = torch.nn.Linear(40, 48)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(bias)
    with torch.no_grad():
        want = QuantizedLinear.from_linear(layer)(x)
        got = int8_linear(x, q, scale, bias)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise _fail("int8_linear(x (7, 40), ...) shape", tuple(want.shape),
                    getattr(got, "shape", type(got).__name__), "x @ q.T: (..., in) -> (..., out)")  # fmt: skip
    diff = float((got - want).abs().max())
    if diff > 1e-5:
        raise _fail("max |difference| from buildlm's QuantizedLinear", "< 1e-5", f"{diff:.3g}",
                    "F.linear(x, q.to(x.dtype)) * scale + bias: scale multiplies output "
                    "column i, the bias is added unscaled")  # fmt: skip
    exact = F.linear(x, w, bias)
    bound = (scale / 2)[None, :] * x.abs().sum(dim=-1, keepdim=True)  # (7, 48)
    ratio_y = float(((got - exact).abs() / bound).max())
    if ratio_y > 1 + 1e-4:
        raise _fail("output error / (scale_i / 2 * sum_j |x_j|)", "<= 1", ratio_y,
                    "the output error is the sum of x_j times each weight's error")  # fmt: skip
    print(f"quantize and int8_linear: buildlm's int8 values, scales and outputs; weight error at most "
          f"{ratio_w:.3f} x scale/2, output error at most {ratio_y:.3f} x its bound. Correct!")  # fmt: skip
    return {"weight": ratio_w, "output": ratio_y}


# --- 7. KV-cache arithmetic ---------------------------------------------------------------------


def check_kv_bytes(kv_cache_bytes) -> None:
    """Your formula against the bytes buildlm's ``StaticKVCache`` really allocates."""
    cases = [  # layers, batch, kv heads, head dim, tokens, dtype
        (2, 1, 4, 16, 10, torch.float32),  # multi-head: as many key/value heads as query heads
        (3, 2, 1, 8, 7, torch.float32),  # multi-query: one
        (4, 3, 2, 32, 5, torch.bfloat16),  # grouped-query
        (1, 1, 8, 64, 33, torch.float16),
    ]
    for layers, batch, kv, hd, tokens, dtype in cases:
        want = StaticKVCache(layers, batch, kv, hd, tokens, dtype=dtype).nbytes
        size = torch.tensor([], dtype=dtype).element_size()
        got = kv_cache_bytes(layers, kv, hd, tokens, size, batch_size=batch)
        if got != want:
            raise _fail(f"kv_cache_bytes({layers}, {kv}, {hd}, {tokens}, {size}, batch_size={batch})",
                        f"{want:,} (StaticKVCache.nbytes)", got,
                        "2 (keys and values) x layers x batch x kv heads x head_dim x tokens x "
                        "bytes per value")  # fmt: skip
    print(f"kv_cache_bytes: StaticKVCache's bytes in all {len(cases)} shapes (MHA, MQA, GQA). Correct!")


# --- 8. data parallelism ------------------------------------------------------------------------


def check_all_reduce(all_reduce_gradients) -> None:
    """Your function in a one-process gloo group: it must run, and leave the gradients as they
    are (the mean over one rank is itself). The real test is the two-process run that follows."""
    import torch.distributed as dist

    model = tiny_gpt()
    x = torch.randint(0, VOCAB, (2, 8))
    model(x).square().mean().backward()
    before = _grads(model)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        all_reduce_gradients(model, 1)
    finally:
        dist.destroy_process_group()
    diff, name = _max_diff(_grads(model), before)
    if diff > 0:
        raise _fail(f"gradients after the all-reduce in a group of one ({name})", "unchanged",
                    f"changed by up to {diff:.3g}", "sum with dist.all_reduce(p.grad), then "
                    "divide by world_size")  # fmt: skip
    print("all_reduce_gradients runs in a group of one; now two processes.")


def torchrun_script(*functions, main: str) -> str:
    """A Python script holding ``functions``' source code and ``main`` (a code string)."""
    head = "import json, os, sys\n\nimport torch\nimport torch.distributed as dist\n"
    head += "import torch.nn.functional as F\n\nfrom buildlm.model import GPT, ModelConfig\n"
    bodies = [textwrap.dedent(inspect.getsource(f)) for f in functions]
    return "\n\n".join([head, *bodies, textwrap.dedent(main)]) + "\n"


def run_torchrun(script: str, n_proc: int = 2, timeout: float = 120) -> dict:
    """Write ``script`` to a temporary file, start it in ``n_proc`` processes with torchrun, and
    return the JSON that rank 0 writes to the file named by its first argument.

    The processes import the same buildlm as this notebook (its folder goes first on
    PYTHONPATH), and each uses one thread.
    """
    src = str(Path(buildlm.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "ddp_run.py", Path(tmp) / "result.json"
        path.write_text(script)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={n_proc}", str(path), str(out)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        if done.returncode != 0 or not out.exists():
            raise AssertionError(f"torchrun failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def check_ddp(result: dict, reference: list[float], tolerance: float = 1e-5) -> None:
    """The two-process losses (by hand and with DDP) against the one-process run."""
    want = np.array(reference)
    for name in ("by_hand", "ddp"):
        got = np.array(result[name])
        worst = float(np.max(np.abs(got - want) / np.abs(want)))
        if got.shape != want.shape or worst > tolerance:
            raise _fail(f"{name}: losses of 2 processes against 1 process with the global batch",
                        np.round(want, 6).tolist(), np.round(got, 6).tolist(),
                        "all-reduce (sum) every parameter's .grad after backward, divide by the "
                        "number of processes, then step: every rank takes the same step")  # fmt: skip
    print(f"2 processes = 1 process with the global batch: final loss {result['by_hand'][-1]:.6f} "
          f"(by hand), {result['ddp'][-1]:.6f} (DDP), {reference[-1]:.6f} (one process). Correct!")


def copy_model(model):
    """An independent copy (same weights, its own gradients)."""
    return copy.deepcopy(model)
