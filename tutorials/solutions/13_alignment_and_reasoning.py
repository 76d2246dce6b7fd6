# Worked solutions for tutorials/13_alignment_and_reasoning.ipynb, one section per exercise.
# Load one into its cell with `%load -s NAME solutions/13_alignment_and_reasoning.py`.

# %% exercise: dpo_recap
import torch


def implicit_reward(policy_logp, ref_logp, beta):
    """DPO's implicit reward of each answer: beta * (log pi - log pi_ref), (N,)."""
    return beta * (policy_logp - ref_logp)


def dpo_gradients(margin, beta):
    """d loss_i / d log pi(chosen_i) and d loss_i / d log pi(rejected_i) for loss_i = -log sigmoid(margin_i)."""
    weight = beta * torch.sigmoid(-margin)  # (N,): how wrong the pair still is
    return -weight, weight


# %% exercise: reward
import re
from fractions import Fraction


def my_reward(completion, answer, format_weight=0.0):
    """1 for the right number after the last '####' (+ format_weight for any marked number)."""
    number = re.compile(r"[-+]?\d+(?:\.\d+)?")
    reply = completion.split("<|endoftext|>")[0]
    parsed = None
    for piece in reply.split("####")[1:]:  # the text after each marker
        found = number.search(piece.split("\n")[0])  # the first number on the marker's line
        if found:
            parsed = Fraction(found.group())
    if parsed is None:
        return 0.0
    correct = parsed == Fraction(answer)
    return float(correct) + format_weight


# %% exercise: advantages
import torch


def my_group_advantages(rewards, mode="mean_std", eps=1e-4):
    """Each reward against its group's mean (and std); all-equal groups get exactly 0."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if mode == "mean_std":
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    same = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    return torch.where(same, torch.zeros_like(centred), centred)


# %% exercise: policy_loss
import torch


def my_k3(logp, ref_logp):
    """The k3 estimate of KL(pi || pi_ref) at each sampled token: e^u - u - 1, u = ref - logp."""
    u = ref_logp - logp
    return torch.exp(u) - u - 1


def my_policy_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.28, ref_logp=None, beta=0.0):
    """The clipped objective, token-averaged (DAPO), negated, plus beta * mean k3."""
    mask = mask.to(logp.dtype)  # (B, T)
    adv = advantages.to(logp.dtype)[:, None]  # (B, 1): every token of a completion shares it
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # (B, T)
    if ref_logp is not None and beta:
        per_token = per_token + beta * my_k3(logp, ref_logp)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


# %% exercise: grpo_step
import torch


def grpo_step(policy, optimizer, answers, group_size, generator, format_weight=0.1):
    """One GRPO step on the table policy; returns the rewards (P, G)."""
    P, G = len(answers), group_size
    rows = torch.arange(P).repeat_interleave(G)  # (P*G,): prompt of each completion
    logits = policy(rows)  # (P*G, T, V)
    n, T, V = logits.shape
    with torch.no_grad():  # 1. sample
        probs = logits.softmax(dim=-1).reshape(n * T, V)
        ids = torch.multinomial(probs, 1, generator=generator).view(n, T)
    rewards = torch.tensor(  # 2. score with the verifier
        [my_reward(decode(c), answers[i // G], format_weight) for i, c in enumerate(ids.tolist())]
    ).view(P, G)
    advantages = my_group_advantages(rewards).reshape(-1)  # 3. (P*G,)
    logp = logits.log_softmax(dim=-1).gather(-1, ids[..., None])[..., 0]  # 4. (P*G, T)
    loss = my_policy_loss(logp, logp.detach(), advantages, torch.ones_like(ids, dtype=torch.bool))
    optimizer.zero_grad()  # 5. one step
    loss.backward()
    optimizer.step()
    return rewards


# %% exercise: calculator
import re
from fractions import Fraction


def my_tokenize(expression):
    """Numbers, '**', + - * / ( ) as strings; ValueError for anything else."""
    token = re.compile(r"\s*(?:([0-9]+(?:\.[0-9]+)?)|(\*\*|[-+*/()])|(\S))")
    tokens = []
    for number, operator, other in token.findall(expression):
        if other:
            raise ValueError(f"unexpected character {other!r}")
        if number and len(number.replace(".", "")) > 30:
            raise ValueError("a number has more than 30 digits")
        tokens.append(number or operator)
    return tokens


def my_evaluate(expression):
    """The exact value of an arithmetic expression, by recursive descent; ValueError if bad."""
    if len(expression) > 256:
        raise ValueError("the expression is longer than 256 characters")
    tokens = my_tokenize(expression)
    pos, depth = 0, 0
    bound = 10**200

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("the expression ends too early")
        pos += 1
        return tokens[pos - 1]

    def checked(value):
        if abs(value.numerator) >= bound or value.denominator >= bound:
            raise ValueError("a result has more than 200 digits")
        return value

    def expr():  # term (("+" | "-") term)*
        value = term()
        while peek() in ("+", "-"):
            value = checked(value + term() if take() == "+" else value - term())
        return value

    def term():  # unary (("*" | "/") unary)*
        value = unary()
        while peek() in ("*", "/"):
            if take() == "*":
                value = checked(value * unary())
            else:
                divisor = unary()
                if divisor == 0:
                    raise ValueError("division by zero")
                value = checked(value / divisor)
        return value

    def unary():  # ("-" | "+") unary | power
        if peek() in ("-", "+"):
            sign = take()
            value = unary()
            return -value if sign == "-" else value
        return power()

    def power():  # atom ("**" unary)?
        base = atom()
        if peek() != "**":
            return base
        take()
        exponent = unary()
        if exponent.denominator != 1 or abs(exponent) > 1000:
            raise ValueError("an exponent must be a whole number of at most 1000")
        if base == 0 and exponent < 0:
            raise ValueError("division by zero")
        return checked(base ** int(exponent))

    def atom():  # NUMBER | "(" expr ")"
        nonlocal depth
        token = take()
        if token == "(":
            depth += 1
            if depth > 32:
                raise ValueError("more than 32 nested parentheses")
            value = expr()
            if take() != ")":
                raise ValueError("a ')' is missing")
            depth -= 1
            return value
        if token[0].isdigit():
            return Fraction(token)
        raise ValueError(f"expected a number or '(', found {token!r}")

    if not tokens:
        raise ValueError("the expression is empty")
    value = expr()
    if peek() is not None:
        raise ValueError(f"unexpected {peek()!r} after a complete expression")
    return value


# %% exercise: tool_loop
import torch

from buildlm.tools.calls import find_call, format_result


def generate_with_tools(model, tokenizer, prompt, max_new_tokens, calculator):
    """Greedy decoding that runs calculator calls and feeds their results; (new ids, inserted)."""
    ids = tokenizer.encode(prompt)
    new, inserted, queue, scan_from = [], [], [], 0
    eot = tokenizer.eot_token
    while len(new) < max_new_tokens:
        if queue:  # feeding a result: the model's choice is not asked for
            inserted.append(len(new))
            new.append(queue.pop(0))
            if not queue:  # the result is all in: a new call may start after it
                scan_from = len(tokenizer.decode(new))
            continue
        with torch.no_grad():
            logits = model(torch.tensor([ids + new]))[0, -1]
        token = int(logits.argmax())
        if token == eot:
            break
        new.append(token)
        call = find_call(tokenizer.decode(new), scan_from)
        if call is not None:  # pause: run the tool, queue its result
            scan_from = call.end
            queue = tokenizer.encode(format_result(calculator(call.argument)))
    return new, inserted
