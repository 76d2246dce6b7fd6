"""`fit_conversation`: the oldest whole turns go, the system message and the question stay.

Every count here is taken on the real thing: the three chat formats render the conversation
and a BPE tokenizer trained on the bundled "the-verdict" text (with each format's special
tokens) encodes it. The expected choice is found by brute force: the fewest oldest turns whose
removal leaves the prompt room for the reply.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildlm.data.corpora import load_corpus
from buildlm.infer.chat_format import plain_prompt
from buildlm.infer.conversation import ConversationTooLong, fit_conversation
from buildlm.tokenizer import Tokenizer
from buildlm.tokenizer.chat_templates import chatml_prompt, llama3_prompt

FORMATS = {
    "plain": (plain_prompt, ("<|endoftext|>",)),
    "chatml": (chatml_prompt, ("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    "llama3": (
        llama3_prompt,
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
}
TEXT = load_corpus("the-verdict")
_TOKENIZERS: dict[str, Tokenizer] = {}


def tokenizer_for(name: str) -> Tokenizer:
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = Tokenizer.train(TEXT, 400, special_tokens=FORMATS[name][1],
                                            progress=False)  # fmt: skip
    return _TOKENIZERS[name]


def tokenize_with(name: str):
    render, tok = FORMATS[name][0], tokenizer_for(name)
    return lambda messages: tok.encode(
        render(messages, add_generation_prompt=True), allowed_special="all"
    )


def sentence(i: int, words: int = 12) -> str:
    """A different stretch of the corpus for each i: real words, real token counts."""
    chunks = TEXT.split()
    start = (i * 37) % (len(chunks) - words)
    return " ".join(chunks[start : start + words])


def chat(pairs: int, system: bool = True, words: int = 12) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You answer briefly."}] if system else []
    for i in range(pairs):
        msgs.append({"role": "user", "content": sentence(2 * i, words)})
        msgs.append({"role": "assistant", "content": sentence(2 * i + 1, words)})
    msgs.append({"role": "user", "content": "And then?"})
    return msgs


def brute_force_drop(messages, tokenize, context, reserve) -> int:
    """How many oldest user/assistant pairs must go (the conversations here are system, pairs,
    one question), by trying 0, 1, 2, ... in turn."""
    system = [m for m in messages if m["role"] == "system"]
    body = [m for m in messages if m["role"] != "system"]
    for drop in range(len(body) // 2 + 1):
        if len(tokenize(system + body[2 * drop :])) + reserve <= context:
            return drop
    raise AssertionError("not even the question fits")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_short_conversation_is_kept_whole_and_the_reply_gets_its_budget(fmt):
    tokenize = tokenize_with(fmt)
    msgs = chat(1, words=4)
    n = len(tokenize(msgs))
    fitted = fit_conversation(msgs, tokenize, context_length=n + 50, max_new_tokens=20)
    assert fitted.messages == msgs
    assert fitted.prompt_ids == tokenize(msgs)
    assert (fitted.max_new_tokens, fitted.dropped_messages, fitted.dropped_turns) == (20, 0, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_oldest_pairs_go_and_the_system_message_and_question_stay(fmt):
    tokenize = tokenize_with(fmt)
    msgs = chat(6, words=5)
    context, max_new = 128, 40
    assert len(tokenize(msgs)) > context  # the whole conversation cannot fit
    fitted = fit_conversation(msgs, tokenize, context, max_new)

    drop = brute_force_drop(msgs, tokenize, context, reserve=128 // 4)
    assert 0 < drop < 6
    assert fitted.messages == msgs[:1] + msgs[1 + 2 * drop :]
    assert fitted.messages[0]["role"] == "system" and fitted.messages[-1] == msgs[-1]
    assert fitted.messages[1]["role"] == "user"  # whole turns: no reply without its question
    assert (fitted.dropped_turns, fitted.dropped_messages) == (drop, 2 * drop)
    render = FORMATS[fmt][0]
    assert fitted.prompt_ids == tokenizer_for(fmt).encode(
        render(fitted.messages, add_generation_prompt=True), allowed_special="all"
    )
    # The reply gets what it asked for when there is room, else what the context leaves.
    assert fitted.max_new_tokens == min(max_new, context - len(fitted.prompt_ids))
    assert len(fitted.prompt_ids) + fitted.max_new_tokens <= context


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_reply_budget_larger_than_the_context_is_capped(fmt):
    tokenize = tokenize_with(fmt)
    msgs = chat(5)
    fitted = fit_conversation(msgs, tokenize, context_length=128, max_new_tokens=256)
    assert len(fitted.prompt_ids) + fitted.max_new_tokens == 128
    assert fitted.max_new_tokens >= 128 // 4  # history never squeezes the reply below a quarter
    assert fitted.dropped_messages > 0


def test_min_new_tokens_trades_history_for_room():
    tokenize = tokenize_with("chatml")
    msgs = chat(6)
    roomy = fit_conversation(msgs, tokenize, 128, 256, min_new_tokens=80)
    tight = fit_conversation(msgs, tokenize, 128, 256, min_new_tokens=5)
    assert roomy.dropped_turns > tight.dropped_turns
    assert len(roomy.prompt_ids) <= 128 - 80 and roomy.max_new_tokens >= 80
    assert tight.max_new_tokens >= 5


def test_a_small_max_new_tokens_keeps_more_history():
    tokenize = tokenize_with("plain")
    msgs = chat(6)
    short = fit_conversation(msgs, tokenize, 128, max_new_tokens=4)
    assert len(short.prompt_ids) + 4 <= 128 and short.max_new_tokens == 4
    assert short.dropped_turns == brute_force_drop(msgs, tokenize, 128, reserve=4)


def test_max_prompt_tokens_caps_the_prompt_too():
    tokenize = tokenize_with("plain")
    msgs = chat(6)
    fitted = fit_conversation(msgs, tokenize, 128, 16, max_prompt_tokens=60)
    assert len(fitted.prompt_ids) <= 60
    assert fitted.dropped_turns == brute_force_drop(msgs, tokenize, 60, reserve=0)


def test_a_question_too_long_for_the_context_is_a_one_line_error():
    tokenize = tokenize_with("plain")
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": sentence(3, 150)},
    ]
    with pytest.raises(ConversationTooLong, match="shorten the message") as info:
        fit_conversation(msgs, tokenize, 128, 64)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert str(len(tokenize(msgs))) in str(info.value)


def test_a_reply_before_any_question_is_a_turn_of_its_own():
    tokenize = tokenize_with("plain")
    greeting = {"role": "assistant", "content": sentence(40, 60)}
    msgs = [{"role": "system", "content": "Hi."}, greeting, *chat(1, system=False)]
    fitted = fit_conversation(msgs, tokenize, 128, 32)
    assert greeting not in fitted.messages
    assert fitted.messages[0]["role"] == "system" and fitted.messages[-1] == msgs[-1]
    assert fitted.dropped_turns >= 1 and fitted.dropped_messages == 1 + 2 * (
        fitted.dropped_turns - 1
    )


def test_without_a_user_message_nothing_is_dropped():
    tokenize = tokenize_with("plain")
    msgs = [{"role": "system", "content": "Be brief."}]
    fitted = fit_conversation(msgs, tokenize, 128, 500)
    assert fitted.messages == msgs and fitted.dropped_messages == 0
    assert fitted.max_new_tokens == 128 - len(tokenize(msgs))


@given(
    pairs=st.integers(0, 8),
    words=st.integers(1, 30),
    context=st.integers(40, 300),
    max_new=st.integers(0, 400),
    fmt=st.sampled_from(sorted(FORMATS)),
)
def test_fitting_matches_brute_force(pairs, words, context, max_new, fmt):
    tokenize = tokenize_with(fmt)
    msgs = chat(pairs, words=words)
    reserve = min(max_new, max(1, context // 4))
    try:
        want = brute_force_drop(msgs, tokenize, context, reserve)
    except AssertionError:
        with pytest.raises(ConversationTooLong):
            fit_conversation(msgs, tokenize, context, max_new)
        return
    fitted = fit_conversation(msgs, tokenize, context, max_new)
    assert fitted.dropped_turns == want and fitted.messages == msgs[:1] + msgs[1 + 2 * want :]
    assert len(fitted.prompt_ids) + fitted.max_new_tokens <= context
    assert fitted.max_new_tokens == min(max_new, context - len(fitted.prompt_ids))
