"""Checks for stage 13 (alignment and reasoning): your DPO recap, verifier, group advantages,
clipped policy loss, GRPO step, calculator and tool loop against buildlm's own.

Each check calls your code first (so an unfinished stub says ``NotImplementedError`` before
anything else), then compares it with the reference: ``buildlm.finetune.dpo.dpo_loss`` (and
autograd through it), ``buildlm.eval.verifiers`` (the ``numeric-strict`` verifier),
``buildlm.finetune.grpo_loss`` (``group_advantages``, ``clipped_policy_loss``, ``k3_kl``),
``buildlm.tools.calculator`` (``tokenize``, ``evaluate``) and ``buildlm.infer.Engine`` with
``tools=("calculator",)``. A failure raises ``AssertionError`` with what was expected, what came
out, and a hint.

`reference_grpo_step` is one GRPO step written with buildlm's pieces: the check compares yours
with it, and the notebook uses it to run the experiments that do not need your code.
"""

from __future__ import annotations

import copy
import random
import time
from fractions import Fraction

import torch
from torch import nn

from buildlm.eval.verifiers import verifier_for
from buildlm.finetune.dpo import dpo_loss
from buildlm.finetune.grpo_loss import clipped_policy_loss, group_advantages, k3_kl
from buildlm.tools.calculator import CalculatorError, evaluate, tokenize


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, atol=tol, rtol=tol)


# --- DPO ------------------------------------------------------------------------------------


def check_dpo_recap(implicit_reward, dpo_gradients) -> None:
    """Your implicit rewards are buildlm's; your hand-derived gradients are autograd's."""
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8, generator=g, dtype=torch.float64) * 5 - 20 for _ in range(4))
    beta = 0.1
    mine_c, mine_r = implicit_reward(pc, rc, beta), implicit_reward(pr, rr, beta)
    want = dpo_loss(pc, pr, rc, rr, beta)
    if not _close(mine_c, want.chosen_rewards) or not _close(mine_r, want.rejected_rewards):
        raise _fail("implicit rewards of the chosen answers", want.chosen_rewards[:3].tolist(),
                    mine_c[:3].tolist() if isinstance(mine_c, torch.Tensor) else mine_c,
                    "beta * (policy_logp - ref_logp), elementwise")  # fmt: skip
    # DPO is a logistic regression on the reward margin.
    margin = mine_c - mine_r
    assert torch.allclose(want.loss, -torch.nn.functional.logsigmoid(margin).mean())
    # The gradient of the summed loss (one pair's loss each) with respect to each log-probability.
    pc_, pr_ = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    (dpo_loss(pc_, pr_, rc, rr, beta).loss * len(pc)).backward()
    got_c, got_r = dpo_gradients(margin, beta)
    if not _close(got_c, pc_.grad) or not _close(got_r, pr_.grad):
        raise _fail("d loss_i / d log pi(chosen_i) for 3 pairs", pc_.grad[:3].tolist(),
                    got_c[:3].tolist() if isinstance(got_c, torch.Tensor) else got_c,
                    "loss = -log sigmoid(m), m = beta (Δchosen - Δrejected); "
                    "d(-log sigmoid(m))/dm = -sigmoid(-m); chain rule: dm/dlogπ(chosen) = +beta")  # fmt: skip
    assert (pc_.grad < 0).all() and (pr_.grad > 0).all()
    print("implicit_reward and dpo_gradients: buildlm's rewards, autograd's gradients. Correct!")
    print("  a gradient step raises log π(chosen) and lowers log π(rejected), every pair, "
          "each weighted by beta * sigmoid(-margin)")  # fmt: skip


# --- the verifier ---------------------------------------------------------------------------

COMPLETIONS = [
    ("6 * 7 = 42\n#### 42", "42"),
    ("#### 42", "42"),
    ("####42", "42"),
    ("#### 41", "42"),
    ("42", "42"),  # right, but not marked
    ("#### 42 apples", "42"),
    ("#### 40\nno, wait\n#### 42", "42"),  # the last mark counts
    ("#### 42\n#### 40", "42"),
    ("#### 42\n####", "42"),  # a mark with no number is skipped
    ("####\n42", "42"),  # the number is not on the marker's line
    ("#### 42.0", "42"),
    ("#### -42", "-42"),
    ("#### 42", "-42"),
    ("#### 0.5", "0.50"),
    ("#### 42<|endoftext|>#### 41", "42"),  # after the end of text: not the reply
    ("<|endoftext|>#### 42", "42"),
    ("", "42"),
    ("#### 4 2", "42"),
    ("The sum is 42. #### 43", "42"),
    ("#### 7", "7"),
    ("7#### ", "7"),
    ("#### #### 7", "7"),
]


def check_reward(my_reward) -> None:
    """Your reward is buildlm's ``numeric-strict`` verifier's on every completion above."""
    for weight in (0.0, 0.1):
        verifier = verifier_for("numeric-strict", format_weight=weight)
        for completion, answer in COMPLETIONS:
            mine = my_reward(completion, answer, weight)
            want = verifier.score("", completion, answer).reward
            if not isinstance(mine, (int, float)) or abs(mine - want) > 1e-9:
                raise _fail(f"my_reward({completion!r}, {answer!r}, format_weight={weight})", want, mine,
                            "the number that follows the last '####' on its line (marks without one "
                            "are skipped), text after '<|endoftext|>' ignored; 1 if it equals the "
                            "answer as a value, plus format_weight when there is such a number")  # fmt: skip
    print(f"my_reward: buildlm's numeric-strict verifier on {len(COMPLETIONS)} completions, "
          "two format weights. Correct!")  # fmt: skip


# --- GRPO's arithmetic ----------------------------------------------------------------------


def check_advantages(my_group_advantages) -> None:
    """Your group advantages are buildlm's, for both modes; all-equal groups give 0, never NaN."""
    g = torch.Generator().manual_seed(0)
    cases = {
        "random rewards (5, 8)": torch.rand(5, 8, generator=g),
        "0/1 rewards with all-right and all-wrong groups": torch.tensor(
            [[1.0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1.1]]
        ),
        "groups of two": torch.tensor([[0.0, 1.0], [0.5, 0.5]]),
        "groups of 7 (all equal but one)": torch.tensor([[0.1] * 7, [0.3] * 7, [0.1] * 6 + [1.1]]),
    }
    for name, rewards in cases.items():
        for mode in ("mean_std", "mean"):
            mine = my_group_advantages(rewards.clone(), mode)
            want = group_advantages(rewards, mode)
            if not isinstance(mine, torch.Tensor) or torch.isnan(mine).any() or not _close(mine, want, 1e-5):
                raise _fail(f"advantages of {name}, mode {mode!r}", want.tolist()[:2],
                            mine.tolist()[:2] if isinstance(mine, torch.Tensor) else mine,
                            "r - mean over the group (dim 1); 'mean_std' then divides by the group's "
                            "std (unbiased, torch's default) + eps; a group whose rewards are all "
                            "equal gets exactly 0 (torch.where), not 0/0")  # fmt: skip
            same = (rewards == rewards[:, :1]).all(dim=1)
            if (mine[same] != 0).any():
                raise _fail(f"advantages of the all-equal groups of {name}, mode {mode!r}", "exactly 0",
                            mine[same].tolist(), "the mean of equal floats is not always exactly "
                            "them (rounding): set those rows to 0 with torch.where")  # fmt: skip
    print("my_group_advantages: buildlm's, both modes; all-equal groups give 0. Correct!")


def _random_logps(seed: int, b: int = 6, t: int = 9):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 4  # log-probs, (B, T)
    logp = old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.3  # ratios far from 1
    ref = old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]  # (B, T), completions of different lengths
    return logp, old, ref, adv, mask


def check_policy_loss(my_k3, my_policy_loss) -> None:
    """Your k3 and clipped loss are buildlm's, values and gradients; at ratio 1 the gradient is
    the plain policy gradient."""
    logp, old, ref, adv, mask = _random_logps(0)
    mine = my_k3(logp, ref)
    if not _close(mine, k3_kl(logp, ref)) or (mine < 0).any():
        raise _fail("my_k3 on random log-probs", k3_kl(logp, ref)[0, :3].tolist(),
                    mine[0, :3].tolist() if isinstance(mine, torch.Tensor) else mine,
                    "u = ref_logp - logp; exp(u) - u - 1 (never negative)")  # fmt: skip
    settings = [dict(), dict(eps_low=0.1, eps_high=0.1), dict(ref_logp=ref, beta=0.04)]
    for kwargs in settings:
        shown = {k: v for k, v in kwargs.items() if k != "ref_logp"}
        a = logp.clone().requires_grad_()
        b = logp.clone().requires_grad_()
        got = my_policy_loss(a, old, adv, mask, **kwargs)
        want = clipped_policy_loss(b, old, adv, mask, **kwargs)
        if not _close(got.detach().reshape(()) if isinstance(got, torch.Tensor) else got, want.loss.detach()):
            raise _fail(f"my_policy_loss on random log-probs {shown}", float(want.loss.detach()),
                        float(got.detach()) if isinstance(got, torch.Tensor) else got,
                        "-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) per token "
                        "(+ beta * k3), summed over the masked tokens / their count")  # fmt: skip
        got.backward()
        want.loss.backward()
        if not _close(a.grad, b.grad):
            raise _fail(f"gradient of my_policy_loss {shown}", "buildlm's gradient", "a different one",
                        "use torch.minimum and torch.clamp (no .item(), no detach on logp)")  # fmt: skip
    print(f"my_k3, my_policy_loss: buildlm's values and gradients ({want.clip_fraction:.0%} of the "
          "tokens clipped here). Correct!")  # fmt: skip
    # The first pass over fresh samples: logp == old_logp, every ratio 1.
    a = old.clone().requires_grad_()
    my_policy_loss(a, old, adv, mask).backward()
    plain = old.clone().requires_grad_()
    (-(adv[:, None] * plain * mask).sum() / mask.sum()).backward()  # the REINFORCE loss
    assert torch.allclose(a.grad, plain.grad), "at ratio 1 the gradient should be -A/N per token"
    print("  at ratio 1 its gradient is the plain policy gradient -A * grad log π / N, token for token")


# --- the GRPO step ----------------------------------------------------------------------------


def reference_grpo_step(policy: nn.Module, optimizer, answers, group_size: int, generator,
                        decode, format_weight: float = 0.1, mode: str = "mean_std") -> torch.Tensor:  # fmt: skip
    """One GRPO step with buildlm's pieces (the contract of the notebook's ``grpo_step``)."""
    verifier = verifier_for("numeric-strict", format_weight=format_weight)
    P, G = len(answers), group_size
    rows = torch.arange(P).repeat_interleave(G)  # (P*G,)
    logits = policy(rows)  # (P*G, T, V)
    n, T, V = logits.shape
    with torch.no_grad():
        ids = torch.multinomial(logits.softmax(-1).reshape(n * T, V), 1, generator=generator).view(n, T)
    rewards = torch.tensor([verifier.score("", decode(c), answers[i // G]).reward
                            for i, c in enumerate(ids.tolist())]).view(P, G)  # fmt: skip
    advantages = group_advantages(rewards, mode).reshape(-1)
    logp = logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]  # (P*G, T)
    loss = clipped_policy_loss(logp, logp.detach(), advantages, torch.ones_like(ids, dtype=torch.bool))
    optimizer.zero_grad()
    loss.loss.backward()
    optimizer.step()
    return rewards


def check_grpo_step(grpo_step, make_policy, answers, decode, steps: int = 5) -> None:
    """Your step samples, scores and updates as `reference_grpo_step` does, for a few steps."""
    mine, ref = make_policy(), make_policy()
    ref.load_state_dict(copy.deepcopy(mine.state_dict()))
    opt_m, opt_r = (torch.optim.Adam(p.parameters(), lr=0.1) for p in (mine, ref))
    g_m, g_r = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for step in range(steps):
        got = grpo_step(mine, opt_m, answers, 8, g_m)
        want = reference_grpo_step(ref, opt_r, answers, 8, g_r, decode)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or not torch.allclose(got, want):
            raise _fail(f"rewards (P, G) at step {step}", f"shape {tuple(want.shape)}, mean {want.mean():.4f}",
                        getattr(got, "shape", got),
                        "sample all P*G*T tokens with one torch.multinomial call as the docstring says "
                        "(so the draws match), score with my_reward, return the (P, G) rewards")  # fmt: skip
        for (name, p), q in zip(mine.named_parameters(), ref.parameters(), strict=True):
            if not torch.allclose(p, q, atol=1e-6):
                raise _fail(f"{name} after step {step}", "the reference step's update", "another one",
                            "advantages from my_group_advantages (mean_std), old_logp = logp.detach(), "
                            "mask all True, my_policy_loss; zero_grad, backward, step")  # fmt: skip
    print(f"grpo_step: the same samples, rewards and updates as buildlm's pieces for {steps} steps. Correct!")


# --- the calculator ---------------------------------------------------------------------------

GOOD = [
    "1+2*3", "(1+2)*3", "10-3-2", "2*3/4", "7/2/2", "-2**2", "(-2)**2", "2**3**2", "2**-1",
    "0.1+0.2", "1/3*3", "  12 *  (3 + 4) ", "--1", "-(-(3))", "+5", "3.25*4", "1/7",
    "2**664", "(1+(2*(3+(4*(5+6)))))", "100/7*7", "0**0", "5-+3", "2 ** 10 / 2 ** 3",
]  # fmt: skip
BAD = [
    "", "2+", "(1+2", "1+2)", "1/0", "2^3", "x", "__import__('os').system('ls')", "(1).real",
    "9**9**9", "10**1001", "2**0.5", "0**-1", "3.", ".5", "1 2", "2**700", "10**150*10**60",
    "1" * 31, "1+" * 200 + "1", "(" * 40 + "1" + ")" * 40, "abs(-1)", "1e5", "1_000",
]  # fmt: skip


def _random_expression(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([str(rng.randint(0, 99)), f"{rng.randint(0, 9)}.{rng.randint(0, 99)}"])
    if r < 0.4:
        return f"-{_random_expression(rng, depth + 1)}"
    if r < 0.5:
        return f"({_random_expression(rng, depth + 1)})"
    if r < 0.55:
        return f"({_random_expression(rng, depth + 1)})**{rng.randint(0, 3)}"
    op = rng.choice(["+", "-", "*", "/"])
    return f"{_random_expression(rng, depth + 1)} {op} {_random_expression(rng, depth + 1)}"


def _buildlm_value(expression: str) -> Fraction | None:
    try:
        return evaluate(expression)
    except CalculatorError:
        return None


def check_calculator(my_tokenize, my_evaluate, n_random: int = 300) -> None:
    """Your tokens and values are buildlm's; what buildlm refuses, you refuse (quickly)."""
    rng = random.Random(0)
    randoms = [_random_expression(rng) for _ in range(n_random)]
    for expression in GOOD + randoms:
        want = _buildlm_value(expression)
        if want is None:  # a random division by zero
            continue
        tokens = my_tokenize(expression)
        if tokens != tokenize(expression):
            raise _fail(f"my_tokenize({expression!r})", tokenize(expression), tokens,
                        "numbers as written ('3.25'), '**' as one token, + - * / ( ) alone; skip spaces")  # fmt: skip
        try:
            got = my_evaluate(expression)
        except ValueError as err:
            raise _fail(f"my_evaluate({expression!r})", want, f"ValueError: {err}",
                        "this expression is fine; check the grammar in the docstring") from None  # fmt: skip
        if got != want:
            raise _fail(f"my_evaluate({expression!r})", want, got,
                        "lowest precedence first: expr -> term -> unary -> power -> atom; "
                        "'**' is right-associative and binds tighter than a sign on its left; "
                        "Fraction(token) keeps decimals exact")  # fmt: skip
    for expression in BAD:
        assert _buildlm_value(expression) is None
        start = time.perf_counter()
        try:
            got = my_evaluate(expression)
        except ValueError:
            got = None
        took = time.perf_counter() - start
        if got is not None:
            raise _fail(f"my_evaluate({expression[:50]!r})", "ValueError (buildlm refuses it)", got,
                        "refuse anything but numbers, operators and parentheses, exponents above "
                        "1000 or not whole, results over 200 digits, 32+ nested parentheses, "
                        "texts over 256 characters")  # fmt: skip
        if took > 0.5:
            raise _fail(f"time to refuse {expression[:50]!r}", "well under 0.5 s", f"{took:.2f} s",
                        "check the exponent's size *before* computing the power")  # fmt: skip
    print(f"my_tokenize, my_evaluate: buildlm's tokens and values on {len(GOOD) + n_random} expressions; "
          f"the {len(BAD)} bad ones refused. Correct!")  # fmt: skip


# --- the tool loop ----------------------------------------------------------------------------


def check_tool_loop(generate_with_tools, engine, prompt: str, budgets, calculator) -> None:
    """Your loop writes what buildlm's Engine writes with tools=("calculator",) for each budget
    of new tokens (some cut a result short), and marks the same positions as fed by the tool."""
    tokenizer = engine.tokenizer
    for max_new_tokens in budgets:
        want = engine.generate([prompt], max_new_tokens=max_new_tokens, temperature=0,
                               tools=("calculator",))[0]  # fmt: skip
        got = generate_with_tools(engine.model, tokenizer, prompt, max_new_tokens, calculator)
        if not isinstance(got, tuple) or len(got) != 2:
            raise _fail("generate_with_tools(...)", "(new ids, inserted positions)", type(got).__name__,
                        "return two lists")  # fmt: skip
        ids, inserted = got
        if list(ids) != want.token_ids:
            raise _fail(f"text with max_new_tokens={max_new_tokens}", repr(want.text),
                        repr(tokenizer.decode(list(ids))),
                        "after each token the model chose, look for a complete call from where the "
                        "last result ended; queue the ids of format_result(calculator(argument)) and "
                        "feed them one per step instead of asking the model")  # fmt: skip
        if list(inserted) != want.inserted:
            raise _fail(f"inserted positions with max_new_tokens={max_new_tokens}", want.inserted,
                        list(inserted), "the index in the new ids of each token the tool fed")  # fmt: skip
    print(f"generate_with_tools: the Engine's tokens and inserted positions with {len(budgets)} "
          "budgets. Correct!")  # fmt: skip
