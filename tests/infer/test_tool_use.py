"""Tool calls in the decode loop: the row pauses, the calculator runs, its result is fed in.

The model is a real GPT whose output is written in advance (`scripted_model`: the token after
position ``p`` is ``script[p]``), so it writes ``<tool>calculator: 23*58</tool>`` on cue; the
`Engine` runs as it always does. What sits where the result goes in the script is ``x``s: with
tools the row never samples them (the result is fed instead), without tools they are the text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from buildlm.infer import Engine, SamplingParams  # noqa: E402
from buildlm.infer.tool_use import MAX_CALLS  # noqa: E402
from scripted_model import byte_tokenizer, script_after, scripted_model, text_ids  # noqa: E402

PROMPT = "Q: 23*58\nA: "
CALL = "<tool>calculator: 23*58</tool>"
RESULT = "<result>1334</result>"
EOT = 256


def engine_for(prompt: str, said: str, static_decode: bool = False) -> Engine:
    """An engine whose model answers ``prompt`` with ``said`` (then end of text)."""
    script = script_after(prompt, text_ids(said) + [EOT])
    context = 128 if len(script) < 128 else 512  # a window that slides would restart the script
    return Engine(scripted_model(script, context), byte_tokenizer(), static_decode=static_decode)


@pytest.mark.parametrize("static_decode", [False, True])
def test_a_call_is_run_and_its_result_fed(static_decode):
    said = CALL + "x" * len(RESULT) + " 1334"
    engine = engine_for(PROMPT, said, static_decode)
    with_tool = engine.generate([PROMPT], max_new_tokens=80, temperature=0, tools=("calculator",))[
        0
    ]
    assert with_tool.text == CALL + RESULT + " 1334"
    assert with_tool.finish_reason == "stop"
    assert with_tool.token_ids == text_ids(CALL + RESULT + " 1334")
    assert with_tool.inserted == list(range(len(CALL), len(CALL) + len(RESULT)))
    # Off by default: the model's own text, as before.
    without = engine.generate([PROMPT], max_new_tokens=80, temperature=0)[0]
    assert without.text == said and without.inserted == []


def test_sampling_rows_are_fed_too():
    engine = engine_for(PROMPT, CALL + "x" * len(RESULT) + " 1334")
    out = engine.generate(
        [PROMPT], max_new_tokens=80, temperature=1.0, seed=3, tools=["calculator"]
    )[0]
    assert out.text == CALL + RESULT + " 1334"


def test_other_rows_of_the_batch_are_unaffected():
    """A row with tools and rows without, prompts of different lengths: each row's completion
    equals the one it gets alone."""
    said = CALL + "x" * len(RESULT) + " 1334"
    engine = engine_for(PROMPT, said)
    short = "A: "  # shorter prompt: left-padded in the batch, reads another part of the script
    params = [
        SamplingParams(max_new_tokens=70, temperature=0, tools=("calculator",)),
        SamplingParams(max_new_tokens=70, temperature=0),
        SamplingParams(max_new_tokens=40, temperature=0),
    ]
    together = engine.generate([PROMPT, PROMPT, short], params)
    alone = [
        engine.generate([p], sp)[0] for p, sp in zip([PROMPT, PROMPT, short], params, strict=True)
    ]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert together[0].text == CALL + RESULT + " 1334"
    assert together[1].text == said


def test_stream_shows_the_call_then_the_result():
    engine = engine_for(PROMPT, CALL + "x" * len(RESULT) + " 1334")
    pieces = list(engine.stream(PROMPT, max_new_tokens=80, temperature=0, tools=("calculator",)))
    assert "".join(pieces) == CALL + RESULT + " 1334"
    assert len(pieces) > 3  # streamed piece by piece, not at the end


@pytest.mark.parametrize(
    "call, result",
    [
        ("<tool>calculator: 1/0</tool>", "<result>error: division by zero</result>"),
        (
            "<tool>calculator: 2^3</tool>",
            "<result>error: unexpected character '^' at position 1; use ** for powers</result>",
        ),
        (
            "<tool>search: cats</tool>",
            "<result>error: no tool named 'search'; the tools are: calculator</result>",
        ),
        (
            "<tool>1+1</tool>",
            "<result>error: name the tool before a colon, as in calculator: 2+2</result>",
        ),
        ("<tool>calculator: 0.1+0.2</tool>", "<result>0.3</result>"),
    ],
)
def test_bad_calls_get_an_error_result(call, result):
    engine = engine_for(PROMPT, call + "x" * len(result) + "!")
    out = engine.generate([PROMPT], max_new_tokens=200, temperature=0, tools=("calculator",))[0]
    assert out.text == call + result + "!"


def test_a_result_is_never_read_as_a_call():
    """Calls are looked for only after the result: a result that contains call-like text
    (an argument echoed back) is not run again."""
    call = "<tool>calculator: <tool>x</tool>"
    result = "<result>error: unexpected character '<' at position 0</result>"
    engine = engine_for(
        PROMPT,
        call
        + "x" * len(result)
        + "<tool>calculator: 2*3</tool>"
        + "x" * len("<result>6</result>")
        + "!",
    )
    out = engine.generate([PROMPT], max_new_tokens=300, temperature=0, tools=("calculator",))[0]
    assert out.text == call + result + "<tool>calculator: 2*3</tool><result>6</result>!"


def test_a_call_in_the_prompt_is_not_run():
    prompt = "<tool>calculator: 1+1</tool>"
    engine = engine_for(prompt, " two")
    out = engine.generate([prompt], max_new_tokens=20, temperature=0, tools=("calculator",))[0]
    assert out.text == " two" and out.inserted == []


def test_the_budget_can_cut_a_result():
    engine = engine_for(PROMPT, CALL + "x" * len(RESULT) + " 1334")
    out = engine.generate(
        [PROMPT], max_new_tokens=len(CALL) + 5, temperature=0, tools=("calculator",)
    )[0]
    assert out.text == CALL + RESULT[:5] and out.finish_reason == "length"


def test_a_stop_token_inside_a_result_does_not_stop_it():
    """The result's ids are the tool's, not the model's choice: a stop token id among them
    (here ``1``) does not end the row; the model's own ``1`` later does."""
    engine = engine_for(PROMPT, CALL + "x" * len(RESULT) + " 1334")
    out = engine.generate(
        [PROMPT], max_new_tokens=80, temperature=0, tools=("calculator",), stop_token_ids=[ord("1")]
    )[0]
    assert out.text == CALL + RESULT + " " and out.finish_reason == "stop"


def test_calls_per_row_are_capped():
    """A model stuck in a loop of calls gets an error result after `MAX_CALLS` of them."""
    from buildlm.infer.tool_use import ToolUse

    tools = ToolUse(("calculator",), lambda text: list(text.encode()))
    text = ""
    for _ in range(MAX_CALLS + 1):
        text += "<tool>calculator: 1+1</tool>"
        result = tools.scan(text)
        assert tools.scan(text) is None  # a call is run once
        fed = bytes(tools.next_token() for _ in range(len(tools.queue))).decode()
        assert fed == result
        text += fed
        tools.scan_from = len(text)
    assert result == f"<result>error: more than {MAX_CALLS} tool calls in one reply</result>"
    assert tools.calls == MAX_CALLS + 1


def test_tools_are_checked():
    with pytest.raises(
        ValueError, match=r"unknown tool\(s\) \['abacus'\]; the tools are: calculator"
    ):
        SamplingParams(tools=("abacus",))
    assert SamplingParams(tools="calculator").tools == ("calculator",)
    assert SamplingParams().tools == ()
    engine = Engine(scripted_model([EOT]), tokenizer=None)
    with pytest.raises(ValueError, match="tools need a tokenizer"):
        engine.generate([[1, 2]], tools=("calculator",))


def test_buildlm_chat_with_tools(tmp_path):
    """``buildlm chat --tools calculator`` (a real subprocess): the reply shows the call and the
    result, and the next turn's prompt holds them (the conversation keeps what was shown)."""
    import re
    import subprocess

    from buildlm.infer.chat_format import plain_prompt
    from scripted_model import save_scripted

    question = "What is 23*58?"
    first = [{"role": "user", "content": question}]
    said = text_ids(" " + CALL + "x" * len(RESULT) + " 1334") + [EOT]
    checkpoint = save_scripted(tmp_path, script_after(plain_prompt(first, True), said), 512)
    run = subprocess.run(
        [sys.executable, "-m", "buildlm", "chat", "--model", str(checkpoint), "--tools", "calculator",
         "--max-new-tokens", "100", "--temperature", "0", "--stats", "--device", "cpu"],
        input=question + "\nand?\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == " " + CALL + RESULT + " 1334"
    reply = (CALL + RESULT + " 1334").strip()
    history = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "and?"}]
    prefilled = [int(n) for n in re.findall(r"prefill (\d+) tokens", run.stderr)]
    assert prefilled == [len(plain_prompt(first, True)), len(plain_prompt(history, True))]
