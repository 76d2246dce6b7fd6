"""Chat templates against the published Jinja templates, rendered by transformers offline.

The Jinja strings below are the chat templates shipped in the ``tokenizer_config.json`` of
Meta-Llama-3-8B-Instruct, of Qwen2-7B-Instruct, of Gemma 3 (its text-only branch: the published
one also renders lists of image parts), and the plain ChatML one from transformers'
documentation. Each is written into a local tokenizer_config.json and rendered with
``apply_chat_template(..., tokenize=False)``.
"""

import json

import pytest
from transformers import AutoTokenizer

from buildlm.tokenizer import Tokenizer
from buildlm.tokenizer.chat_templates import (
    chatml_prompt,
    gemma_prompt,
    llama3_prompt,
    qwen2_prompt,
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA3 = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}"
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}"
    "{%- endif -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "  You answer in French.\n"},
        {"role": "user", "content": "What is 2 + 2?  "},
        {"role": "assistant", "content": "Quatre."},
        {"role": "user", "content": "\nAnd 3 + 3?"},
    ],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}],
]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """Render a Jinja chat template with transformers, from a local tokenizer folder."""
    folder = tmp_path_factory.mktemp("chat")
    Tokenizer.from_merges([], special_tokens=["<|begin_of_text|>", "<bos>"]).save_hf(
        folder / "tokenizer.json"
    )

    def run(template, messages, add_generation_prompt, bos="<|begin_of_text|>"):
        (folder / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": bos,
                    "chat_template": template,
                }
            )
        )
        tok = AutoTokenizer.from_pretrained(folder)
        return tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    return run


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize(
    ("template", "ours"),
    [(LLAMA3, llama3_prompt), (CHATML, chatml_prompt), (QWEN2, qwen2_prompt)],
    ids=["llama3", "chatml", "qwen2"],
)
def test_same_text_as_the_jinja_template(render, template, ours, messages, add_generation_prompt):
    expected = render(template, messages, add_generation_prompt)
    assert ours(messages, add_generation_prompt=add_generation_prompt) == expected


GEMMA_CONVERSATIONS = [
    *CONVERSATIONS[:2],  # the second one opens with a system message
    [
        {"role": "user", "content": " Hi "},
        {"role": "assistant", "content": "\nHello. "},
        {"role": "user", "content": "Bye"},
    ],
]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("messages", GEMMA_CONVERSATIONS)
def test_gemma_same_text_as_the_jinja_template(render, messages, add_generation_prompt):
    expected = render(GEMMA3, messages, add_generation_prompt, bos="<bos>")
    assert gemma_prompt(messages, add_generation_prompt=add_generation_prompt) == expected


def test_exact_gemma_format_and_its_alternation_rule():
    system = {"role": "system", "content": "Be brief."}
    text = gemma_prompt([system, {"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    with pytest.raises(ValueError, match="alternate user, assistant"):
        gemma_prompt(CONVERSATIONS[2])  # opens with an assistant turn


def test_exact_llama3_format():
    text = llama3_prompt([{"role": "user", "content": " Hi "}], add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_exact_chatml_format():
    text = chatml_prompt([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("Hello", "must be a list"),
        ([], "at least one message"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user"}], "string 'content'"),
    ],
)
def test_bad_messages(messages, message):
    with pytest.raises(ValueError, match=message):
        llama3_prompt(messages)
