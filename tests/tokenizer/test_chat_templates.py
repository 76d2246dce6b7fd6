"""Chat templates against the published Jinja templates, rendered by transformers offline.

The Jinja strings below are the chat templates shipped in the ``tokenizer_config.json`` of
Meta-Llama-3-8B-Instruct, of Qwen2-7B-Instruct, of Gemma 3 (its text-only branch: the published
one also renders lists of image parts), of Mistral-7B-Instruct-v0.3 (whole, tool calls
included), of OLMo-2-1124-Instruct, and the plain ChatML one from transformers' documentation. Each is written into a local tokenizer_config.json and rendered with
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
    mistral_prompt,
    olmo2_prompt,
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
    '{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = "" -%}'
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    '{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}'
    "{%- endif -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)
MISTRAL_V3 = (
    '{%- if messages[0]["role"] == "system" %}\n    {%- set system_message = messages[0]["content"] %}'
    "\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}"
    "\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n"
    '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}\n\n'
    "{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}"
    "\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n"
    '    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls '
    'is defined and message.tool_calls is not none)) %}\n        {%- if (message["role"] == "user") != '
    '(ns.index % 2 == 0) %}\n            {{- raise_exception("After the optional system message, '
    'conversation roles must alternate user/assistant/user/assistant/...") }}\n        {%- endif %}\n'
    "        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n"
    '{%- for message in loop_messages %}\n    {%- if message["role"] == "user" %}\n        {%- if tools '
    'is not none and (message == user_messages[-1]) %}\n            {{- "[AVAILABLE_TOOLS] [" }}\n'
    "            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n"
    '                {{- \'{"type": "function", "function": {\' }}\n                {%- for key, val in '
    'tool.items() if key != "return" %}\n                    {%- if val is string %}\n'
    "                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n"
    "                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n"
    '                    {%- if not loop.last %}\n                        {{- ", " }}\n'
    '                    {%- endif %}\n                {%- endfor %}\n                {{- "}}" }}\n'
    '                {%- if not loop.last %}\n                    {{- ", " }}\n                {%- else %}'
    '\n                    {{- "]" }}\n                {%- endif %}\n            {%- endfor %}\n'
    '            {{- "[/AVAILABLE_TOOLS]" }}\n            {%- endif %}\n        {%- if loop.last and '
    'system_message is defined %}\n            {{- "[INST] " + system_message + "\\n\\n" + '
    'message["content"] + "[/INST]" }}\n        {%- else %}\n            {{- "[INST] " + '
    'message["content"] + "[/INST]" }}\n        {%- endif %}\n    {%- elif message.tool_calls is '
    'defined and message.tool_calls is not none %}\n        {{- "[TOOL_CALLS] [" }}\n        {%- for '
    "tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n"
    "            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length "
    '!= 9 %}\n                {{- raise_exception("Tool call IDs should be alphanumeric strings with '
    'length 9!") }}\n            {%- endif %}\n            {{- \', "id": "\' + tool_call.id + \'"}\' }}\n'
    '            {%- if not loop.last %}\n                {{- ", " }}\n            {%- else %}\n'
    '                {{- "]" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n'
    '    {%- elif message["role"] == "assistant" %}\n        {{- " " + message["content"]|trim + '
    'eos_token}}\n    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}\n'
    "        {%- if message.content is defined and message.content.content is defined %}\n"
    "            {%- set content = message.content.content %}\n        {%- else %}\n"
    "            {%- set content = message.content %}\n        {%- endif %}\n"
    '        {{- \'[TOOL_RESULTS] {"content": \' + content|string + ", " }}\n        {%- if not '
    "message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n"
    '            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") '
    '}}\n        {%- endif %}\n        {{- \'"call_id": "\' + message.tool_call_id + '
    "'\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant "
    'roles are supported, with the exception of an initial optional system message!") }}\n'
    "    {%- endif %}\n{%- endfor %}\n"
)
OLMO2 = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"
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
    specials = ["<|begin_of_text|>", "<bos>", "<s>", "</s>", "<|endoftext|>"]
    Tokenizer.from_merges([], special_tokens=specials).save_hf(folder / "tokenizer.json")

    def run(template, messages, add_generation_prompt, bos="<|begin_of_text|>", eos=None):
        (folder / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": bos,
                    "eos_token": eos,
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


MISTRAL_CONVERSATIONS = [
    *GEMMA_CONVERSATIONS,
    [  # the system message goes to the last user message only if it is the last message
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": " Hello. "},
    ],
    [{"role": "system", "content": "Alone."}],
]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("messages", MISTRAL_CONVERSATIONS)
def test_mistral_same_text_as_the_jinja_template(render, messages, add_generation_prompt):
    expected = render(MISTRAL_V3, messages, add_generation_prompt, bos="<s>", eos="</s>")
    assert mistral_prompt(messages, add_generation_prompt=add_generation_prompt) == expected


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("messages", [*CONVERSATIONS, *MISTRAL_CONVERSATIONS])
def test_olmo2_same_text_as_the_jinja_template(render, messages, add_generation_prompt):
    eot = "<|endoftext|>"
    expected = render(OLMO2, messages, add_generation_prompt, bos=eot, eos=eot)
    assert olmo2_prompt(messages, add_generation_prompt=add_generation_prompt) == expected


def test_exact_mistral_and_olmo2_formats():
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ]
    assert mistral_prompt(chat) == (
        "<s>[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nAnd now?[/INST]"
    )
    assert olmo2_prompt(chat[:2], add_generation_prompt=True) == (
        "<|endoftext|><|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
    )
    for bad in (CONVERSATIONS[2], [chat[1], chat[0]], [chat[1], chat[1]]):
        with pytest.raises(ValueError, match="Mistral's chat format needs turns that alternate"):
            mistral_prompt(bad)


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
